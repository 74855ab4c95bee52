"""The CUDA backend of Sequential: GPU-resident training agrees with the CPU.

On a machine without a GPU these run under numba's CUDA simulator (set up in
conftest.py), where every GPU thread is a Python thread: the networks and
data are tiny and each fit is one or two steps.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from backends import BACKENDS, CUDA_SIMULATOR

pytestmark = pytest.mark.skipif("cuda" not in BACKENDS, reason="numba-cuda is not installed")

# float32 products summed in another order (tiles on the GPU, BLAS or loop
# nests on the CPU) agree to a few ulps per step.
RTOL32 = 2e-5


def _blobs(n=24):
    X, y = fastbp.datasets.make_blobs(n_samples=n, n_features=5, centers=3, cluster_std=0.6, seed=3)
    return X, y


def _model(device, dtype="float32"):
    layers = [fastbp.Dense(5, 6, activation="tanh"), fastbp.Dropout(0.25), fastbp.Dense(6, 4, activation="gelu"),
              fastbp.ReLU(), fastbp.Dense(4, 3)]
    return fastbp.Sequential(layers, seed=7, dtype=dtype, device=device)


def test_training_on_cuda_matches_cpu(tmp_path):
    # Adam here; SGD (momentum, weight decay) runs in the regression test below.
    X, y = _blobs()
    models = {}
    for device in ("cpu", "cuda"):
        model = _model(device)
        history = model.fit(X, y, epochs=1, batch_size=16, loss="softmax_cross_entropy",
                            optimizer=fastbp.Adam(0.05, weight_decay=1e-3, decoupled=True),
                            seed=11, verbose=0)
        models[device] = (model, history)
    cpu, cuda = models["cpu"][0], models["cuda"][0]
    assert cuda.optimizer.steps == cpu.optimizer.steps == 2  # a full batch and a partial one
    # Dropout masks come from the same counter-based hash on both devices, so
    # the two runs take the same steps: parameters agree to float32 rounding.
    np.testing.assert_allclose(cuda.theta, cpu.theta, rtol=RTOL32, atol=1e-6)
    assert not np.array_equal(cuda.theta, _model("cpu").theta)  # training moved them
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(models["cuda"][1].history[key], models["cpu"][1].history[key], rtol=1e-5)
    proba = cuda.predict_proba(X)  # computed on the device
    np.testing.assert_allclose(proba, cpu.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert cuda.evaluate(X, y)["accuracy"] == pytest.approx(cpu.evaluate(X, y)["accuracy"])
    # Trained on the GPU, saved, loaded on the CPU: the same parameters, the same predictions.
    cuda.save(tmp_path / "gpu.npz")
    loaded = fastbp.load(tmp_path / "gpu.npz")
    assert loaded.device == "cpu"
    np.testing.assert_array_equal(loaded.theta, cuda.theta)
    np.testing.assert_allclose(loaded.predict_proba(X), proba, rtol=1e-5, atol=1e-6)


def test_regression_with_sample_weights_on_cuda_matches_cpu():
    X, y = fastbp.datasets.make_regression(n_samples=10, n_features=3, n_targets=2, seed=0)
    w = np.linspace(0.5, 2.0, 10)
    thetas = {}
    for device in ("cpu", "cuda"):
        model = fastbp.Sequential([fastbp.Dense(3, 4, activation="elu"), fastbp.Dense(4, 2)], seed=1,
                                  dtype="float64", device=device)
        history = model.fit(X, y, epochs=1, batch_size=10, loss="mse", seed=2,
                            optimizer=fastbp.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                            verbose=0, sample_weight=w)
        thetas[device] = (model.theta.copy(), history.history)
    np.testing.assert_allclose(thetas["cuda"][0], thetas["cpu"][0], rtol=1e-12, atol=1e-14)
    for key in ("loss", "mse", "mae"):
        np.testing.assert_allclose(thetas["cuda"][1][key], thetas["cpu"][1][key], rtol=1e-12)


def test_divergence_on_cuda_restores_the_step_before():
    X, y = fastbp.datasets.make_regression(n_samples=4, n_features=3, seed=0)
    y = y * 1e3
    layers = [fastbp.Dense(3, 4), fastbp.Dense(4, 1)]
    model = fastbp.Sequential(layers, seed=0, device="cuda")
    with pytest.raises(fastbp.DivergenceError, match=r"epoch 1, batch 2 of 2"):
        model.fit(X, y, epochs=1, batch_size=2, loss="mse", optimizer=fastbp.SGD(1e10), verbose=0, shuffle=False)
    assert np.all(np.isfinite(model.theta))
    # The CPU stops at the same batch, after the same first step.
    cpu = fastbp.Sequential(layers, seed=0)
    with pytest.raises(fastbp.DivergenceError, match=r"epoch 1, batch 2 of 2"):
        cpu.fit(X, y, epochs=1, batch_size=2, loss="mse", optimizer=fastbp.SGD(1e10), verbose=0, shuffle=False)
    np.testing.assert_allclose(model.theta, cpu.theta, rtol=1e-4)
    assert not np.array_equal(model.theta, fastbp.Sequential(layers, seed=0).theta)  # the first step was kept


@pytest.mark.skipif(not CUDA_SIMULATOR, reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = ("import fastbp\n"
            "try:\n"
            "    fastbp.Sequential([fastbp.Dense(2, 2)], device='cuda')\n"
            "except RuntimeError as e:\n"
            "    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERR device='cuda' needs" in out.stdout, out.stdout + out.stderr


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        fastbp.Sequential([fastbp.Dense(2, 2)], device="tpu")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_gradient_that_overflows_under_a_finite_loss_stops_both_backends(device):
    # Hidden units of 1e20 feed an output layer of zero weights: the prediction is 0 and
    # the squared error against 1e19 is 1e38, finite in float32, but the output layer's
    # weight gradient 2 * 1e20 * 1e19 is not. Both backends must stop at that first step.
    model = fastbp.Sequential([fastbp.Dense(1, 3), fastbp.Dense(3, 1)], seed=0, device=device)
    model.set_weights([np.full((1, 3), 1e20), np.zeros(3), np.zeros((3, 1)), np.zeros(1)])
    before = model.get_flat_weights()
    X = np.ones((2, 1), dtype=np.float32)
    y = np.full((2, 1), 1e19, dtype=np.float32)
    assert np.isfinite(model.compile("mse", fastbp.SGD(1e-3)).evaluate(X, y)["loss"])
    with pytest.raises(fastbp.DivergenceError, match="non-finite gradient at epoch 1, batch 1 of 1") as info:
        model.fit(X, y, epochs=1, batch_size=2, verbose=0)
    assert (info.value.epoch, info.value.batch) == (0, 0)
    np.testing.assert_array_equal(model.get_flat_weights(), before)
    assert model.optimizer.steps == 0


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy"])
def test_weighted_metrics_on_cuda_match_cpu(loss):
    X, y = _blobs(12)
    w = np.linspace(0.2, 3.0, len(y))
    t = y if loss == "softmax_cross_entropy" else np.stack([y == 0, y == 1, y != 2], axis=1).astype(float)
    runs = {}
    for device in ("cpu", "cuda"):
        model = fastbp.Sequential([fastbp.Dense(5, 3)], seed=1, dtype="float64", device=device)
        history = model.fit(X, t, epochs=2, batch_size=5, loss=loss, seed=2, optimizer=fastbp.SGD(0.5),
                            verbose=0, sample_weight=w, validation_data=(X, t, w))
        runs[device] = history.history
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(runs["cuda"][key], runs["cpu"][key], rtol=1e-12)
    # Weighted: not the plain fraction of right answers (a multiple of 1/12 or 1/36).
    n = len(y) * (1 if loss == "softmax_cross_entropy" else 3)
    assert any(abs(a * n - round(a * n)) > 1e-6 for a in runs["cpu"]["accuracy"])


def test_poisson_on_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((10, 3))
    y = rng.poisson(2.0, (10, 2)).astype(np.float64)
    w = np.linspace(0.5, 2.0, 10)
    runs = {}
    for device in ("cpu", "cuda"):
        model = fastbp.Sequential([fastbp.Dense(3, 4, activation="tanh"), fastbp.Dense(4, 2)], seed=1,
                                  dtype="float64", device=device)
        history = model.fit(X, y, epochs=1, batch_size=4, loss="poisson", seed=2, optimizer=fastbp.SGD(0.1),
                            verbose=0, sample_weight=w)
        runs[device] = (model.theta.copy(), history.history, model.predict(X))
    np.testing.assert_allclose(runs["cuda"][0], runs["cpu"][0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(runs["cuda"][2], runs["cpu"][2], rtol=1e-12)
    for key in ("loss", "mae"):
        np.testing.assert_allclose(runs["cuda"][1][key], runs["cpu"][1][key], rtol=1e-12)


@pytest.mark.parametrize("loss, optimizer", [
    (fastbp.losses.Huber(delta=0.5), lambda: fastbp.RMSprop(0.01, momentum=0.5, centered=True, weight_decay=1e-3)),
    ("mae", lambda: fastbp.Adagrad(0.05, lr_decay=0.1, initial_accumulator_value=0.1)),
], ids=["huber-rmsprop", "mae-adagrad"])
def test_huber_mae_rmsprop_adagrad_on_cuda_match_cpu(loss, optimizer):
    # The loss parameter (Huber's delta) and the optimizers' state travel to the device and back.
    rng = np.random.default_rng(5)
    # Two steps: the optimizers' state carries from the first to the second.
    X = rng.standard_normal((8, 3))
    y = 2 * rng.standard_normal((8, 2))
    w = np.linspace(0.5, 2.0, 8)
    runs = {}
    for device in ("cpu", "cuda"):
        model = fastbp.Sequential([fastbp.Dense(3, 4, activation="selu"), fastbp.Dense(4, 2, activation="silu")],
                                  seed=1, dtype="float64", device=device)
        history = model.fit(X, y, epochs=1, batch_size=4, loss=loss, seed=2, optimizer=optimizer(),
                            verbose=0, sample_weight=w)
        runs[device] = (model.theta.copy(), history.history, [s.copy() for s in model.optimizer.state])
    np.testing.assert_allclose(runs["cuda"][0], runs["cpu"][0], rtol=1e-12, atol=1e-14)
    for a, b in zip(runs["cuda"][2], runs["cpu"][2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for key in ("loss", "mse", "mae"):
        np.testing.assert_allclose(runs["cuda"][1][key], runs["cpu"][1][key], rtol=1e-12)


def test_norm_layers_on_cuda_match_cpu():
    # BatchNorm (one without affine parameters, first in the network) and LayerNorm: the same
    # parameters, running statistics and batch count after training; inference with the running
    # statistics on the device.
    # Two steps (batches of 5 and 3) keep the CUDA simulator's share of the suite small.
    X, y = _blobs(8)
    results = {}
    for device in ("cpu", "cuda"):
        layers = [fastbp.BatchNorm(5, affine=False), fastbp.Dense(5, 4), fastbp.BatchNorm(4, momentum=0.3),
                  fastbp.ReLU(), fastbp.Dense(4, 6), fastbp.LayerNorm(6), fastbp.Tanh(), fastbp.Dense(6, 3)]
        model = fastbp.Sequential(layers, seed=2, dtype="float64", device=device)
        model.fit(X, y, epochs=1, batch_size=5, loss="softmax_cross_entropy", optimizer=fastbp.SGD(0.1),
                  seed=4, verbose=0)
        results[device] = model
    cpu, cuda = results["cpu"], results["cuda"]
    assert cuda.batches_tracked == cpu.batches_tracked == 2
    np.testing.assert_allclose(cuda.theta, cpu.theta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(cuda.buffers, cpu.buffers, rtol=1e-12, atol=1e-14)
    assert not np.allclose(cpu.buffers[:5], 0.0)
    np.testing.assert_allclose(cuda.decision_function(X), cpu.decision_function(X), rtol=1e-12, atol=1e-13)
