"""Model files, state dicts and scikit-learn estimators are not trusted.

Every array that reaches compiled code from a file, ``load_state_dict`` or
``from_sklearn`` is checked for its count, shape, dtype and finiteness, and a
file's declared sizes are checked against its arrays' headers before anything
the size of the network is allocated. A wrong-sized optimizer state used to
reach the update kernel and write past its end, so those cases run in a
subprocess: a crash there fails one test instead of ending the test run.
"""
import json
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import Dense, Sequential

ROOT = Path(fastbp.__file__).resolve().parent.parent


def named(path):
    return re.escape(repr(str(path)))


def blobs():
    return fastbp.datasets.make_blobs(60, 4, centers=3, cluster_std=2.0, seed=0)


@pytest.fixture
def saved(tmp_path):
    X, y = blobs()
    model = Sequential([Dense(4, 8, activation="relu"), fastbp.BatchNorm(8), Dense(8, 3)], seed=0)
    model.fit(X, y, epochs=1, batch_size=16, loss="softmax_cross_entropy", optimizer=fastbp.Adam(0.01),
              verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    return path


def rewrite(saved, tmp_path, name, config=None, **changes):
    with np.load(saved) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update({k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    if config is not None:
        arrays["architecture"] = np.array(config if isinstance(config, str) else json.dumps(config))
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def architecture(saved):
    with np.load(saved) as data:
        return json.loads(str(data["architecture"]))


# ----- the optimizer state: what the update kernel is promised -------------------------------

# Each case rewrites the file, loads it and fits; before the checks, the first two wrote past
# the end of an array in the update kernel (a crash, or silently corrupted memory).
STATE_CASES = {
    "short": "dict(optimizer_state_1=np.zeros(1, np.float32))",
    "extra": "dict(optimizer_state_2=np.zeros(n, np.float32))",
    "float64": "dict(optimizer_state_1=np.zeros(n, np.float64))",
    "two-d": "dict(optimizer_state_1=np.zeros((n, 1), np.float32))",
    "missing-one": "dict(optimizer_state_1=None)",
}

SCRIPT = """
import sys
import numpy as np
import fastbp
path, out = sys.argv[1], sys.argv[2]
X, y = fastbp.datasets.make_blobs(60, 4, centers=3, cluster_std=2.0, seed=0)
with np.load(path) as data:
    arrays = {k: data[k] for k in data.files}
n = arrays["theta"].size
changes = CHANGES
for key, value in changes.items():
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
np.savez(out, **arrays)
try:
    model = fastbp.load(out)
except ValueError as err:
    print("REFUSED", err)
    sys.exit(0)
model.fit(X, y, epochs=3, batch_size=16, verbose=0)
print("TRAINED", np.isfinite(model.theta).all())
"""


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_an_optimizer_state_that_does_not_fit_is_refused_by_load(saved, tmp_path, case):
    out = tmp_path / f"{case}.npz"
    script = SCRIPT.replace("CHANGES", STATE_CASES[case])
    run = subprocess.run([sys.executable, "-c", script, str(saved), str(out)], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert run.returncode == 0, f"the process ended with status {run.returncode}: {run.stderr[-2000:]}"
    assert run.stdout.startswith("REFUSED "), run.stdout + run.stderr[-2000:]
    message = run.stdout
    assert repr(str(out)) in message
    assert "optimizer_state_" in message
    if case == "short":
        assert "its optimizer state have shape (1,)" in message
        assert "(array 'optimizer_state_1')" in message
    if case == "extra":
        assert "['optimizer_state_0', 'optimizer_state_1', 'optimizer_state_2']" in message
        assert "Adam keeps ['optimizer_state_0', 'optimizer_state_1']" in message
    if case == "float64":
        assert "dtype float64; the architecture needs" in message


def test_an_optimizer_state_set_by_hand_that_does_not_fit_is_refused_by_fit():
    # In a subprocess too: without the check, the update writes past the end of state[1].
    script = textwrap.dedent("""
        import numpy as np
        import fastbp
        X, y = fastbp.datasets.make_blobs(60, 4, centers=3, cluster_std=2.0, seed=0)
        model = fastbp.Sequential([fastbp.Dense(4, 3)], seed=0)
        opt = fastbp.Adam(0.01)
        model.fit(X, y, epochs=1, loss="softmax_cross_entropy", optimizer=opt, verbose=0)
        opt.state[1] = np.zeros(1, np.float32)
        try:
            model.fit(X, y, epochs=3, verbose=0)
        except ValueError as err:
            print("REFUSED", err)
        else:
            print("TRAINED")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, f"the process ended with status {run.returncode}: {run.stderr[-2000:]}"
    assert run.stdout.strip() == ("REFUSED the optimizer's state does not fit the model's 15 parameters: "
                                  "state[1] must be a writeable C-contiguous float32 array of shape (15,); "
                                  "got shape (1,), dtype float32"), run.stdout


def test_optimizer_state_in_a_file_without_an_optimizer_is_refused(saved, tmp_path):
    config = architecture(saved)
    config["optimizer"] = config["schedule"] = None
    path = rewrite(saved, tmp_path, "no-opt.npz", config)
    with pytest.raises(ValueError, match=rf"{named(path)} is corrupt: it holds the optimizer state arrays "
                                         r"\['optimizer_state_0', 'optimizer_state_1'\]; it declares no optimizer"):
        fastbp.load(path)


def test_a_negative_second_moment_or_running_variance_is_refused(saved, tmp_path):
    with np.load(saved) as data:
        v, buffers = data["optimizer_state_1"].copy(), data["buffers"].copy()
    v[3] = -1.0
    path = rewrite(saved, tmp_path, "v.npz", optimizer_state_1=v)
    with pytest.raises(ValueError, match=rf"{named(path)} is corrupt: optimizer_state_1 holds -1.0 at index 3"):
        fastbp.load(path)
    buffers[8 + 2] = -0.5  # the running variance follows the running mean
    path = rewrite(saved, tmp_path, "var.npz", buffers=buffers)
    with pytest.raises(ValueError, match=rf"{named(path)} is corrupt: layers\[1\].running_var holds -0.5 at index 2"):
        fastbp.load(path)


@pytest.mark.parametrize("key, index, name", [("theta", 0, r"layers\[0\].weight holds nan at index \(0, 0\)"),
                                              ("theta", 4 * 8 + 8 * 3 + 1, r"layers\[0\].bias holds inf at index 1"),
                                              ("buffers", 0, r"layers\[1\].running_mean holds nan at index 0"),
                                              ("optimizer_state_0", 5, r"optimizer_state_0 holds nan at index 5")])
def test_non_finite_values_in_a_file_are_refused_naming_the_array(saved, tmp_path, key, index, name):
    with np.load(saved) as data:
        array = data[key].copy()
    array[index] = np.inf if "inf" in name else np.nan
    path = rewrite(saved, tmp_path, "nan.npz", **{key: array})
    with pytest.raises(ValueError, match=rf"{named(path)} is corrupt: {name}"):
        fastbp.load(path)


# ----- sizes declared by the architecture, checked before anything is allocated ---------------


def test_a_huge_declared_layer_is_refused_from_the_headers(saved, tmp_path, monkeypatch):
    config = architecture(saved)
    config["layers"][0]["config"].update(in_features=20000, out_features=20000)
    config["layers"][1]["config"]["num_features"] = 20000
    config["layers"][2]["config"]["in_features"] = 20000
    path = rewrite(saved, tmp_path, "huge.npz", config)
    assert path.stat().st_size < 20_000
    # The model (400 million parameters) must never be built, nor theta read.
    monkeypatch.setattr(fastbp.Sequential, "__init__", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(ValueError, match=rf"{named(path)} is corrupt: its parameters have shape \(\d+,\) and "
                                         r"dtype float32; the architecture needs \(400120003,\) float32 "
                                         r"\(array 'theta'\)"):
        fastbp.load(path)


def test_a_header_that_promises_more_data_than_the_member_holds_is_refused(saved, tmp_path):
    # Rewrite theta's .npy header to declare ten times its length; the data stays as it was.
    with zipfile.ZipFile(saved) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    raw = members["theta.npy"]
    n = np.load(saved)["theta"].size
    header = raw[:128].decode("latin1").replace(f"({n},)", f"({n * 10},)")
    members["theta.npy"] = header[:127].ljust(127).encode("latin1") + b"\n" + raw[128:]
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    with pytest.raises(ValueError, match=rf"{named(path)} is corrupt: its array 'theta' declares shape "
                                         rf"\({n * 10},\) of float32, {n * 40} bytes, but the member holds {n * 4}"):
        fastbp.load(path)


def test_an_object_array_is_refused_without_unpickling(saved, tmp_path):
    path = tmp_path / "objects.npz"
    with np.load(saved) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["theta"] = np.array([{"a": 1}], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=rf"{named(path)} is corrupt: its array 'theta' holds Python objects"):
        fastbp.load(path)


# ----- fields of the records: errors that name the file and the field -------------------------


@pytest.mark.parametrize("value", [np.array("one"), np.array([1, 2]), np.array(1.5)])
def test_a_malformed_format_version_names_the_file(saved, tmp_path, value):
    path = rewrite(saved, tmp_path, "version.npz", format_version=value)
    with pytest.raises(ValueError, match=rf"{named(path)} is corrupt: its 'format_version' must be one integer"):
        fastbp.load(path)


def test_deeply_nested_json_names_the_file(saved, tmp_path):
    path = rewrite(saved, tmp_path, "deep.npz", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=rf"{named(path)} has a corrupt architecture record: RecursionError"):
        fastbp.load(path)
    path = rewrite(saved, tmp_path, "deep-rng.npz", rng_state=np.array("{\"a\":" * 100_000 + "1" + "}" * 100_000))
    with pytest.raises(ValueError, match=rf"{named(path)} has a corrupt random-state record: RecursionError"):
        fastbp.load(path)


@pytest.mark.parametrize("field, value", [("epochs_trained", "3"), ("epochs_trained", -1),
                                          ("optimizer_steps", 2.5), ("batches_tracked", 2**70),
                                          ("epochs_trained", True)])
def test_a_counter_that_is_not_a_count_names_the_file_and_the_field(saved, tmp_path, field, value):
    config = architecture(saved)
    config[field] = value
    path = rewrite(saved, tmp_path, "count.npz", config)
    with pytest.raises(ValueError, match=rf"{named(path)} has a corrupt architecture record: '{field}' must be "
                                         rf"an integer >= 0; got {re.escape(repr(value))}"):
        fastbp.load(path)


def test_a_record_that_is_not_one_string_is_refused(saved, tmp_path):
    path = rewrite(saved, tmp_path, "arch.npz", architecture=np.array(["{}", "{}"]))
    with pytest.raises(ValueError, match=rf"{named(path)} is corrupt: its 'architecture' must be one string"):
        fastbp.load(path)


def test_a_saved_plateau_schedule_with_a_bad_rate_is_refused(saved, tmp_path):
    config = architecture(saved)
    config["schedule"] = dict(type="ReduceLROnPlateau", lr=0.01, monitor="loss", factor=0.5, patience=1,
                              min_delta=0.0, min_lr=0.0, mode="min", current=float("nan"), best=None, wait=0)
    path = rewrite(saved, tmp_path, "plateau.npz", config)
    with pytest.raises(ValueError, match=rf"{named(path)} has a corrupt architecture record: .*current must be "
                                         r"in \[0, 0.01\], finite; got nan"):
        fastbp.load(path)


def test_a_valid_file_still_loads_and_trains_on(saved):
    X, y = blobs()
    model = fastbp.load(saved)
    assert model.optimizer.state[1].shape == model.theta.shape
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert model.epochs_trained == 3 and np.isfinite(model.theta).all()


# ----- load_state_dict and from_sklearn -------------------------------------------------------


def batchnorm_model():
    return Sequential([Dense(4, 6, activation="relu"), fastbp.BatchNorm(6), Dense(6, 2)], seed=0)


@pytest.mark.parametrize("key, index", [("0.weight", (1, 2)), ("0.bias", 0), ("1.running_mean", 3),
                                        ("1.weight", 5), ("2.bias", 1)])
def test_load_state_dict_refuses_non_finite_values(key, index):
    model = batchnorm_model()
    before = model.theta.copy()
    state = model.state_dict()
    state[key][index] = np.nan
    with pytest.raises(ValueError, match=rf"state_dict\['{re.escape(key)}'\] holds nan at index "
                                         rf"{re.escape(str(index))}"):
        model.load_state_dict(state)
    assert np.array_equal(model.theta, before)


def test_load_state_dict_refuses_a_negative_variance_and_non_numbers():
    model = batchnorm_model()
    state = model.state_dict()
    state["1.running_var"][2] = -1.0
    with pytest.raises(ValueError, match=r"state_dict\['1.running_var'\] holds -1.0 at index 2; it must be >= 0"):
        model.load_state_dict(state)
    state = model.state_dict()
    state["0.bias"] = np.array(["a"] * 6)
    with pytest.raises(TypeError, match=r"state_dict\['0.bias'\] must hold real numbers; got dtype <U1"):
        model.load_state_dict(state)


def test_set_weights_refuses_non_finite_values():
    model = batchnorm_model()
    weights = model.get_weights()
    weights[1][0] = np.inf
    with pytest.raises(ValueError, match=r"weights\[1\] holds inf at index 0"):
        model.set_weights(weights)


def test_from_sklearn_refuses_non_finite_weights():
    sklearn = pytest.importorskip("sklearn.neural_network")
    X, y = blobs()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = sklearn.MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0).fit(X, y)
    estimator.intercepts_[0][2] = np.nan
    with pytest.raises(ValueError, match=r"the estimator's intercepts_\[0\] holds nan at index 2"):
        fastbp.from_sklearn(estimator)


def test_a_model_loads_no_pickle_and_a_script_cannot_run(saved, tmp_path):
    # The file format holds numbers and strings only: np.load is called with allow_pickle=False.
    code = textwrap.dedent("""
        import numpy as np
        class Boom:
            def __reduce__(self):
                return (print, ("UNPICKLED",))
        np.savez(PATH, format=np.array("fastbp-model"), format_version=np.array(1),
                 architecture=np.array("{}"), theta=np.array([Boom()], dtype=object))
    """).replace("PATH", repr(str(tmp_path / "pickle.npz")))
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(ValueError, match="holds Python objects"):
        fastbp.load(tmp_path / "pickle.npz")
