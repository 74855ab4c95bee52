"""Training results held against stored ones: a change that reshapes the model layer or the loop
must leave what a fit computes as it was.

``tests/data/golden_fits.npz`` holds, for each fit of ``FITS``, the parameters, the running
statistics and the predictions after training, written by this file run as a script
(``python tests/test_golden_fits.py --write``) on the code of 2026-12-07, commit fce077f, whose
results were checked bit for bit against the commits before it. Every op kind, activation,
loss and optimizer is in some fit, on the CPU and on the CUDA backend (under numba's simulator
where there is no GPU).

Bit for bit is a property of one machine and one set of libraries: the CPU's results depend on
its vector width, LLVM's code for it and the BLAS, the simulator's on libm. Where the stored
``environment`` is this one, the results must be equal to the bit; anywhere else they must agree
to float64 rounding (``RTOL``, ``ATOL``), which any change of a formula, an op's
order or a step's data would exceed by orders of magnitude, as ``test_golden_fits_notice_a_change``
shows.
"""
import json
import os
import platform
import sys
from pathlib import Path

if __name__ == "__main__" and not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")  # as conftest.py does, before numba is imported

import numpy as np
import pytest

import fastbp
from backends import BACKENDS

DATA = Path(__file__).parent / "data" / "golden_fits.npz"

# name: (layers, loss, optimizer, whether the fit takes sample weights). Each trains float64
# for one epoch of three batches (48 samples of 16 features, batches of 16).
FITS = {
    "relu-sgd-momentum": (lambda: [fastbp.Dense(16, 12, activation="relu"), fastbp.Dense(12, 10)],
                          "softmax_cross_entropy", lambda: fastbp.SGD(0.1, momentum=0.9, weight_decay=1e-3), False),
    "gelu-dropout-adam": (lambda: [fastbp.Dense(16, 12, activation="gelu"), fastbp.Dropout(0.2),
                                   fastbp.Dense(12, 10)],
                          "softmax_cross_entropy", lambda: fastbp.Adam(0.01), True),
    "tanh-elu-adamw": (lambda: [fastbp.Dense(16, 9, activation="tanh"), fastbp.Dense(9, 7, activation="elu"),
                                fastbp.Dense(7, 10)],
                       "softmax_cross_entropy", lambda: fastbp.Adam(0.01, weight_decay=1e-2, decoupled=True), False),
    "batchnorm-relu": (lambda: [fastbp.Dense(16, 12), fastbp.BatchNorm(12), fastbp.ReLU(), fastbp.Dense(12, 10)],
                       "softmax_cross_entropy", lambda: fastbp.Adam(0.01), False),
    "batchnorm-first-no-affine": (lambda: [fastbp.BatchNorm(16, affine=False), fastbp.Dense(16, 10)],
                                  "softmax_cross_entropy", lambda: fastbp.SGD(0.05, nesterov=True, momentum=0.5),
                                  False),
    "layernorm-silu-rmsprop": (lambda: [fastbp.Dense(16, 12), fastbp.LayerNorm(12), fastbp.Activation("silu"),
                                        fastbp.Dense(12, 10)],
                               "softmax_cross_entropy", lambda: fastbp.RMSprop(0.005), False),
    "layernorm-first-adagrad": (lambda: [fastbp.LayerNorm(16), fastbp.Dense(16, 10, activation="log_softmax")],
                                "mse", lambda: fastbp.Adagrad(0.05), True),
    "leaky-softplus-bce": (lambda: [fastbp.Dense(16, 8, activation="leaky_relu"), fastbp.Activation("softplus"),
                                    fastbp.Dense(8, 1)],
                           "binary_cross_entropy", lambda: fastbp.SGD(0.1), False),
    "selu-sigmoid-huber": (lambda: [fastbp.Dense(16, 8, activation="selu"), fastbp.Dense(8, 3, activation="sigmoid")],
                           "huber", lambda: fastbp.RMSprop(0.01, momentum=0.5), False),
    "softmax-layer-poisson": (lambda: [fastbp.Dense(16, 6, activation="softplus"), fastbp.Dense(6, 3),
                                       fastbp.Activation("softmax")],
                              "poisson", lambda: fastbp.Adam(0.01), False),
    "dropout-first-mae": (lambda: [fastbp.Dropout(0.1), fastbp.Dense(16, 5, activation="relu"), fastbp.Dense(5, 2)],
                          "mae", lambda: fastbp.SGD(0.05, momentum=0.9), True),
}
# The CUDA simulator runs each GPU thread as a Python thread (about 10 s a fit): a subset with
# every op kind. tests/test_cuda_training.py holds the backends to each other on the others.
CUDA_FITS = ("gelu-dropout-adam", "batchnorm-relu", "layernorm-silu-rmsprop")
# A parameter whose gradient is zero in exact arithmetic (the bias of a Dense layer before
# BatchNorm) takes steps of pure rounding noise under Adam, up to a few 1e-9: hence ATOL.
RTOL, ATOL = 1e-7, 1e-8


def _data():
    X, labels = fastbp.datasets.load_digits()
    X, labels = (X[:48, ::4] / 16.0).astype(np.float64), labels[:48]
    weights = np.linspace(0.5, 1.5, 48)
    return X, labels, weights


def _targets(loss, labels, n_outputs):
    if loss == "softmax_cross_entropy":
        return labels
    if loss == "binary_cross_entropy":
        return (labels % 2).astype(np.float64)
    # Regression targets in [0, 1] for each output: the label's bits, then its scaled value.
    bits = (labels[:, None] >> np.arange(n_outputs)) & 1
    return np.where(np.arange(n_outputs) == n_outputs - 1, labels[:, None] / 9.0, bits).astype(np.float64)


def run_fit(name, device):
    """The parameters, buffers and predictions of fit ``name`` trained on ``device``."""
    make_layers, loss, make_optimizer, weighted = FITS[name]
    X, labels, weights = _data()
    model = fastbp.Sequential(make_layers(), seed=1, dtype="float64", device=device)
    y = _targets(loss, labels, model.n_outputs)
    model.fit(X, y, epochs=1, batch_size=16, loss=loss, optimizer=make_optimizer(), seed=5, verbose=0,
              sample_weight=weights if weighted else None)
    return {"theta": np.array(model.theta), "buffers": np.array(model.buffers),
            "predictions": np.asarray(model.predict(X[:8]), dtype=np.float64)}


def environment(device):
    """What a fit's bits depend on besides fastbp, as one string."""
    import llvmlite.binding
    import numba
    import scipy
    # The BLAS is the one bundled with SciPy's wheel (and NumPy's own with NumPy's): their versions
    # name it, whatever this process has loaded so far.
    facts = {"device": device, "machine": platform.machine(), "cpu": llvmlite.binding.get_host_cpu_name(),
             "numpy": np.__version__, "scipy": scipy.__version__, "numba": numba.__version__,
             "python": sys.version.split()[0]}
    if device == "cuda":
        # The simulator computes with NumPy and libm, a GPU with libdevice: their bits differ.
        facts["gpu"] = "simulator" if numba.config.ENABLE_CUDASIM else _gpu_name()
    return json.dumps(facts, sort_keys=True)


def _gpu_name():
    from numba import cuda

    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    return f"{name}, compute capability {device.compute_capability}, CUDA runtime {cuda.runtime.get_version()}"


def _cases():
    return [(name, device) for device in BACKENDS for name in FITS if device == "cpu" or name in CUDA_FITS]


def _stored():
    with np.load(DATA, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


@pytest.mark.parametrize("name,device", _cases())
def test_golden_fits(name, device):
    stored = _stored()
    result = run_fit(name, device)
    same_environment = str(stored[f"{device}/environment"]) == environment(device)
    for part, value in result.items():
        expected = stored[f"{device}:{name}/{part}"]
        assert value.shape == expected.shape, part
        if same_environment:
            np.testing.assert_array_equal(value, expected, err_msg=f"{name} on {device}: {part}")
        else:
            np.testing.assert_allclose(value, expected, rtol=RTOL, atol=ATOL, err_msg=f"{name} on {device}: {part}")


def test_golden_fits_notice_a_change():
    # The tolerance is far below what a real change moves: the learning rate changed in its sixth
    # digit moves the parameters beyond it.
    make_layers, loss, _, _ = FITS["relu-sgd-momentum"]
    X, labels, _ = _data()
    model = fastbp.Sequential(make_layers(), seed=1, dtype="float64")
    model.fit(X, labels, epochs=1, batch_size=16, loss=loss, seed=5, verbose=0,
              optimizer=fastbp.SGD(0.1 * (1 + 1e-5), momentum=0.9, weight_decay=1e-3))
    expected = _stored()["cpu:relu-sgd-momentum/theta"]
    assert not np.allclose(model.theta, expected, rtol=RTOL, atol=ATOL)


def write():
    """Train every fit on every backend here and store the results, each backend's after checking
    that they agree with the CPU's."""
    arrays = {}
    for name, device in _cases():
        arrays[f"{device}/environment"] = np.array(environment(device))
        for part, value in run_fit(name, device).items():
            if device != "cpu":
                np.testing.assert_allclose(value, arrays[f"cpu:{name}/{part}"], rtol=RTOL, atol=ATOL)
            arrays[f"{device}:{name}/{part}"] = value
    DATA.parent.mkdir(exist_ok=True)
    np.savez_compressed(DATA, **arrays)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_golden_fits.py --write")
    write()
