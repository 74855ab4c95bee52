"""scikit-learn's own MLP tests, run against fastbp: the test of "drop-in".

The module is the installed scikit-learn's
``sklearn/neural_network/tests/test_mlp.py``, read at collection time with
only its import of ``MLPClassifier, MLPRegressor`` changed to fastbp's. Each of
its tests becomes a test of this module under its own name (with its own
parametrization), so a scikit-learn release that adds, changes or removes a
test changes what runs here. Tests that cannot pass for a reason stated below
are marked xfail; one that passes unexpectedly fails the run (strict), so the
mark is removed when it no longer applies.
"""
import importlib.util
import os
import pathlib
import re
import sys
import types

import pytest

pytest.importorskip("sklearn")

# The one statement of scikit-learn's module that changes (on one line, or wrapped in parentheses).
SKLEARN_IMPORT = re.compile(r"^from sklearn\.neural_network import "
                            r"\(?\s*MLPClassifier,\s*MLPRegressor,?\s*\)?$", flags=re.M)


def _fastbp_import(match):
    # As many lines as the statement replaced: tracebacks keep scikit-learn's line numbers.
    return "from fastbp.estimators import MLPClassifier, MLPRegressor" + "\n" * match.group(0).count("\n")


# Any other import of scikit-learn's MLP code (in a test's body, a private module) is refused.
OTHER_SKLEARN_MLP = re.compile(r"(from\s+sklearn\.neural_network\S*\s+import\s+\S+|"
                               r"import\s+sklearn\.neural_network\S*)")

# Why a test of scikit-learn's is expected to fail here, by test name (all its
# parametrizations) or by item name (one of them).
PRIVATE_API = "reads scikit-learn's private solver internals ({}), which fastbp does not have"
XFAIL = {
    "test_fit": dict(reason=PRIVATE_API.format("_coef_grads, _intercept_grads"), strict=True),
    "test_gradient": dict(reason=PRIVATE_API.format("_loss_grad_lbfgs"), strict=True),
    "test_learning_rate_warmstart": dict(reason=PRIVATE_API.format("_optimizer"), strict=True),
    "test_adaptive_learning_rate": dict(reason=PRIVATE_API.format("_optimizer"), strict=True),
}


@pytest.fixture(autouse=True)
def _expected_failure(request):
    """Mark a test of scikit-learn's listed in XFAIL (by item name, else by test name) xfail."""
    node = request.node
    why = XFAIL.get(node.name, XFAIL.get(getattr(node, "originalname", node.name)))
    if why is not None:
        node.add_marker(pytest.mark.xfail(**why))


def _sklearn_module_path():
    spec = importlib.util.find_spec("sklearn.neural_network.tests.test_mlp")
    if spec is None or spec.origin is None:
        pytest.skip("this scikit-learn is installed without its tests", allow_module_level=True)
    return pathlib.Path(spec.origin)


def _load_sklearn_module():
    """scikit-learn's test_mlp.py as a module, its MLPs fastbp's; line numbers as in the original."""
    path = _sklearn_module_path()
    source, n = SKLEARN_IMPORT.subn(_fastbp_import, path.read_text())
    if n != 1:
        # Running scikit-learn's own MLPs here would pass and prove nothing: stop instead.
        raise RuntimeError(f"{path}: expected one line 'from sklearn.neural_network import "
                           f"MLPClassifier, MLPRegressor' to replace, found {n}")
    other = OTHER_SKLEARN_MLP.search(source)
    if other:
        raise RuntimeError(f"{path}: {other.group(0)!r} would test scikit-learn's code, not fastbp's")
    module = types.ModuleType("sklearn_test_mlp_on_fastbp")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # pickling in its tests looks functions up by module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


SKLEARN_TESTS = _load_sklearn_module()

from fastbp.estimators import MLPClassifier, MLPRegressor  # noqa: E402

assert SKLEARN_TESTS.MLPClassifier is MLPClassifier and SKLEARN_TESTS.MLPRegressor is MLPRegressor

# pytest collects every test_* function in this module's namespace: put scikit-learn's there.
for _name, _test in vars(SKLEARN_TESTS).items():
    if _name.startswith("test_") and callable(_test):
        globals()[_name] = _test
del _name, _test


def pytest_generate_tests(metafunc):
    """scikit-learn's ``global_random_seed`` fixture: 42, or SKLEARN_TESTS_GLOBAL_RANDOM_SEED as there.

    (Its conftest.py, which defines it, is not loaded with the module.)
    """
    if "global_random_seed" not in metafunc.fixturenames:
        return
    value = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED")
    if value is None:
        seeds = [42]
    elif value == "all":
        seeds = list(range(100))
    elif "-" in value:
        start, stop = value.split("-")
        seeds = list(range(int(start), int(stop) + 1))
    else:
        seeds = [int(value)]
    metafunc.parametrize("global_random_seed", seeds)


def test_xfail_marks_name_sklearn_tests():
    """Every entry of XFAIL names a test scikit-learn still has: a stale entry is removed."""
    names = {name.split("[")[0] for name in XFAIL}
    assert sorted(names - set(vars(SKLEARN_TESTS))) == []
