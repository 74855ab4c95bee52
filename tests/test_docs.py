"""The documentation: every public name in the API reference, numpydoc docstrings that match
their signatures, and the code on the guide pages runs as written.

The site itself is built by .ci/run (``python -m sphinx -W -n --keep-going``); these tests
need numpydoc (the ``docs`` extra) only for the docstring checks, and skip those without it.
"""
import pathlib
import re
import warnings

import numpy as np
import pytest

import fastbp
import fastbp.kernels

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"


def _documented(rst):
    """The names an API page lists: autosummary entries and explicit directives."""
    text = (API / rst).read_text()
    names = set(re.findall(r"^   (\w+)$", text, flags=re.M))
    return names | set(re.findall(r"^\.\. (?:py:\w+|data):: (\w+)", text, flags=re.M))


def _cuda():
    return pytest.importorskip("fastbp.kernels.cuda", reason="numba-cuda is not installed")


def test_every_public_name_of_fastbp_is_in_the_api_reference():
    missing = set(fastbp.__all__) - _documented("fastbp.rst")
    assert not missing, f"docs/api/fastbp.rst lacks {sorted(missing)}"
    assert set(fastbp.datasets.__all__) <= _documented("fastbp.rst")


def test_every_public_kernel_is_in_the_api_reference():
    missing = set(fastbp.kernels.__all__) - _documented("kernels.rst")
    assert not missing, f"docs/api/kernels.rst lacks {sorted(missing)}"


def test_every_public_cuda_name_is_in_the_api_reference():
    missing = set(_cuda().__all__) - _documented("cuda.rst")
    assert not missing, f"docs/api/cuda.rst lacks {sorted(missing)}"


def test_the_reference_lists_no_name_that_does_not_exist():
    for rst, module in (("fastbp.rst", fastbp), ("kernels.rst", fastbp.kernels)):
        listed = _documented(rst) - set(fastbp.datasets.__all__) - {
            "SoftmaxCrossEntropy", "BinaryCrossEntropy", "MeanSquaredError", "MeanAbsoluteError", "Huber",
            "Poisson"}
        assert listed <= set(module.__all__), sorted(listed - set(module.__all__))


def _public_objects():
    """(name, object) of every public callable that numpydoc validates, with their methods."""
    objects = [(f"fastbp.{n}", getattr(fastbp, n)) for n in fastbp.__all__]
    objects += [(f"fastbp.datasets.{n}", getattr(fastbp.datasets, n)) for n in fastbp.datasets.__all__]
    objects += [(f"fastbp.losses.{n}", getattr(fastbp.losses, n)) for n in ("Huber",)]
    objects += [(f"fastbp.kernels.{n}", getattr(fastbp.kernels, n)) for n in fastbp.kernels.__all__
                if callable(getattr(fastbp.kernels, n)) and n != "cpu"]
    for cls_name in ("Sequential", "History", "Callback", "MLPClassifier", "MLPRegressor"):
        cls = getattr(fastbp, cls_name)
        for attr, value in vars(cls).items():
            if not attr.startswith("_") and callable(value) and getattr(value, "__doc__", None):
                objects.append((f"fastbp.{cls_name}.{attr}", getattr(cls, attr)))
    return objects


# What conf.py's numpydoc_validation_checks hold the site to, checked here without building it.
CHECKS = {"GL08", "SS01", "PR01", "PR02", "PR10", "RT01"}


@pytest.mark.parametrize("name, obj", _public_objects(), ids=lambda v: v if isinstance(v, str) else "")
def test_public_docstrings_pass_numpydoc_validation(name, obj):
    validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is in the docs extra")
    doc = validate.get_doc_object(obj)
    errors = [(code, message) for code, message in validate.validate(doc)["errors"] if code in CHECKS]
    assert not errors, f"{name}: {errors}"


def test_numpydoc_validation_finds_an_undocumented_parameter():
    validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is in the docs extra")

    def f(a, b):
        """Add.

        Parameters
        ----------
        a : int
            One.

        Returns
        -------
        int
            The sum.
        """
        return a + b

    codes = [code for code, _ in validate.validate(validate.get_doc_object(f))["errors"]]
    assert "PR01" in codes


def test_the_site_includes_the_security_page_under_the_user_guide():
    assert (DOCS / "security.md").exists()
    assert "/security" in (DOCS / "guide" / "index.md").read_text()


def _blocks(page):
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


# The pages whose Python blocks run, in order, in one namespace per page. gpu.md and mpi.md
# need a GPU and an MPI launch; their code is exercised by tests/test_cuda_*.py and tests/test_mpi.py.
PAGES = ["getting-started.md", "guide/models.md", "guide/losses.md", "guide/optimizers.md",
         "guide/callbacks.md", "guide/saving.md", "guide/threads.md", "kernels.md", "estimators.md",
         "interop.md"]
NEEDS = {"estimators.md": ("sklearn",), "interop.md": ("sklearn", "onnxruntime", "onnx"),
         "guide/callbacks.md": ("matplotlib",)}


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_the_code_on_each_guide_page_runs(page, tmp_path, monkeypatch):
    for module in NEEDS.get(page, ()):
        pytest.importorskip(module)
    blocks = _blocks(page)
    assert blocks, f"{page} has no Python blocks"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    before = fastbp.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning after a few epochs
            for i, block in enumerate(blocks):
                exec(compile(block, f"{page}[{i}]", "exec"), namespace)
    finally:
        fastbp.set_num_threads(before)
    if page == "guide/callbacks.md":
        assert (tmp_path / "curves.png").exists()
    if page == "kernels.md":
        assert abs(namespace["losses"][0] - np.log(3)) < 1e-6


def test_the_benchmarks_chart_reads_the_current_figures():
    from benchmarks.plot_figures import read_table

    table = read_table((ROOT / "BENCHMARKS.md").read_text())
    assert list(table) == ["small", "mnist", "wide"]
    assert table["small"]["fastbp"] == 1_979_953
    assert table["wide"]["PyTorch (CPU)"] == 3_270
