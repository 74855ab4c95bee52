"""ONNX export, checked by two runtimes that are not fastbp: onnxruntime and onnx's reference evaluator.

Every graph also passes ``onnx.checker.check_model`` with shape inference. A
runtime's output must match what fastbp computes to 1e-5 (float32) or 1e-12
(float64), relative to the largest magnitude in the expected array: the
matrix products of two libraries round differently, so an output near zero
can differ from fastbp's by a few units in the last place of the largest
term, not of itself.
"""
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'fastbp[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the exported graphs are checked with onnxruntime")
from onnx.reference import ReferenceEvaluator  # noqa: E402

import fastbp  # noqa: E402
from fastbp import export  # noqa: E402
from fastbp.cli import main as cli_main  # noqa: E402
from fastbp.kernels import registry as R  # noqa: E402

DTYPES = ("float32", "float64")
RTOL = {"float32": 1e-5, "float64": 1e-12}


def run(proto, X):
    """The graph's outputs by name, from onnxruntime and from the reference evaluator."""
    onnx.checker.check_model(proto, full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in proto.graph.output]
    results = {"onnxruntime": dict(zip(names, session.run(None, {"X": X}))),
               "reference": dict(zip(names, ReferenceEvaluator(proto).run(None, {"X": X})))}
    return names, results


def assert_close(got, want, rtol):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(np.abs(want).max(), 1e-30))


def data(n_features, dtype, n=40, scale=3.0, seed=0):
    # Wide enough that every activation sees both signs and its tails (GELU's erf past 2.5).
    return (scale * np.random.default_rng(seed).standard_normal((n, n_features))).astype(dtype)


# ----- every activation of the registry -----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", R.ACTIVATION_TABLE, ids=lambda a: a.name)
def test_every_registered_activation_exports_and_matches(activation, dtype):
    # Iterates over the registry: an activation added there without an ONNX mapping fails here.
    name = activation.name
    model = fastbp.Sequential([fastbp.Dense(5, 7, activation=name), fastbp.Dropout(0.3),
                               fastbp.Activation(name), fastbp.Dense(7, 4, activation=name)],
                              dtype=dtype, seed=activation.code)
    model.compile("mse")  # no link: the final activation stays in the output
    X = data(5, dtype)
    names, results = run(model.to_onnx(), X)
    assert names == ["output"]
    for runtime, out in results.items():
        assert out["output"].dtype == np.dtype(dtype), runtime
        assert_close(out["output"], model.decision_function(X), RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation,alpha", [("leaky_relu", 0.3), ("leaky_relu", 0.5), ("elu", 0.3),
                                              ("elu", 2.0)])
def test_activation_parameters(activation, alpha, dtype):
    # 0.3 has no exact float32: a float64 graph must not round it through a float attribute.
    model = fastbp.Sequential([fastbp.Dense(5, 6, activation=activation, alpha=alpha),
                               fastbp.Activation(activation, alpha=alpha), fastbp.Dense(6, 2)],
                              dtype=dtype, seed=1)
    X = data(5, dtype)
    _, results = run(model.to_onnx(), X)
    for out in results.values():
        assert_close(out["output"], model.decision_function(X), RTOL[dtype])


@pytest.mark.parametrize("activation", ["elu", "softplus", "leaky_relu", "selu", "silu"])
def test_float64_formulas_match_elementwise(activation):
    # The formulas that stand in for onnxruntime's missing float64 kernels are accurate
    # value by value, tiny values included (expm1, log1p), not just next to the largest.
    alpha = 0.3 if R.ACTIVATION_BY_NAME[activation].alpha is not None else None
    model = fastbp.Sequential([fastbp.Dense(1, 1, activation=activation, alpha=alpha)], dtype="float64")
    model.set_weights([np.ones((1, 1)), np.zeros(1)])
    x = np.concatenate([np.linspace(-50.0, 50.0, 2001), -np.geomspace(1e-300, 1.0, 301),
                        np.geomspace(1e-300, 1.0, 301), [0.0, -800.0, 800.0]])[:, None]
    _, results = run(model.to_onnx(), x)
    for out in results.values():
        np.testing.assert_allclose(out["output"], model.decision_function(x), rtol=1e-14, atol=0)


def test_an_activation_without_onnx_mapping_is_named(monkeypatch):
    model = fastbp.Sequential([fastbp.Dense(3, 4, activation="tanh"), fastbp.Dense(4, 2)])
    monkeypatch.delitem(export._ACTIVATIONS, "tanh")
    with pytest.raises(NotImplementedError, match="'tanh'"):
        model.to_onnx()


@pytest.mark.parametrize("dtype", DTYPES)
def test_selu_and_silu_operators(dtype):
    # float32: the Selu operator and x * Sigmoid(x); float64 spells both out (onnxruntime's
    # Selu is float32 only, and its float64 Sigmoid loses the tail).
    model = fastbp.Sequential([fastbp.Dense(4, 6, activation="selu"), fastbp.Dense(6, 2, activation="silu")],
                              dtype=dtype, seed=3)
    model.compile("mse")
    ops = [node.op_type for node in model.to_onnx().graph.node]
    assert ("Selu" in ops) == (dtype == "float32")
    assert ("Sigmoid" in ops) == (dtype == "float32") and "Mul" in ops


def test_the_mapping_covers_exactly_the_registry():
    assert set(export._ACTIVATIONS) == {a.name for a in R.ACTIVATION_TABLE}


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_operator_from_opset_20(dtype):
    model = fastbp.Sequential([fastbp.Dense(4, 6, activation="gelu"), fastbp.Dense(6, 2)], dtype=dtype, seed=3)
    X = data(4, dtype)
    proto = model.to_onnx(opset=20)
    ops = {node.op_type for node in proto.graph.node}
    ops_17 = {node.op_type for node in model.to_onnx(opset=17).graph.node}
    # onnxruntime runs Gelu and Erf in float32 only: float64 spells erf out in elementary operators.
    if dtype == "float32":
        assert "Gelu" in ops and "Erf" not in ops and "Erf" in ops_17 and "Gelu" not in ops_17
    else:
        assert not (ops | ops_17) & {"Gelu", "Erf"}
    _, results = run(proto, X)
    for out in results.values():
        assert_close(out["output"], model.decision_function(X), RTOL[dtype])


def test_float64_erf_against_math_erf():
    import math

    g = export._Graph(onnx, np.float64, 17)
    g.node("Identity", [export._erf_float64(g, "X")], out="Y")
    proto = g.model([g.tensor("X", ["N"])], [g.tensor("Y", ["N"])], "erf")
    t = np.concatenate([np.linspace(-7.0, 7.0, 28001), [0.0, 2.5, -2.5, 1e-300, 40.0, -1e300]])
    want = np.array([math.erf(v) for v in t])
    _, results = run(proto, t)
    for out in results.values():
        np.testing.assert_allclose(out["Y"], want, rtol=0, atol=1e-15)


# ----- Sequential: output, probabilities, predict -------------------------------------------


def _classifier(final, dtype):
    layers = [fastbp.Dense(6, 10, activation="relu"), fastbp.Dropout(0.2)]
    if final == "dense":
        layers.append(fastbp.Dense(10, 3))
    elif final == "softmax layer":  # fused into the loss: output stays the logits
        layers += [fastbp.Dense(10, 3), fastbp.Softmax()]
    else:  # "fused softmax": Dense(activation='softmax'), likewise stripped
        layers.append(fastbp.Dense(10, 3, activation="softmax"))
    return fastbp.Sequential(layers, dtype=dtype, seed=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("final", ["dense", "softmax layer", "fused softmax"])
def test_sequential_multiclass(final, dtype):
    model = _classifier(final, dtype)
    X = data(6, dtype, n=60)
    y = np.random.default_rng(1).integers(0, 3, 60)
    model.fit(X, y, epochs=2, batch_size=16, loss="softmax_cross_entropy", verbose=0)
    names, results = run(model.to_onnx(), X)
    assert names == ["output", "probabilities"]
    for out in results.values():
        assert_close(out["output"], model.decision_function(X), RTOL[dtype])
        assert_close(out["probabilities"], model.predict_proba(X), RTOL[dtype])
        np.testing.assert_array_equal(np.argmax(out["output"], axis=1), model.predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_sequential_binary_cross_entropy(n_outputs, dtype):
    model = fastbp.Sequential([fastbp.Dense(6, 8, activation="tanh"), fastbp.Dense(8, n_outputs),
                               fastbp.Sigmoid()], dtype=dtype, seed=2).compile("binary_cross_entropy")
    X = data(6, dtype)
    names, results = run(model.to_onnx(), X)
    assert names == ["output", "probabilities"]
    for out in results.values():
        assert_close(out["output"], model.decision_function(X), RTOL[dtype])
        assert_close(out["probabilities"], model.predict_proba(X), RTOL[dtype])
        np.testing.assert_array_equal((out["output"] > 0).astype(np.int64), model.predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_layers_export_with_running_statistics(dtype):
    # BatchNorm (one without affine parameters, first) and LayerNorm, after training moved
    # the running statistics and gamma and beta away from their initial values.
    layers = [fastbp.BatchNorm(6, affine=False), fastbp.Dense(6, 8), fastbp.BatchNorm(8, momentum=0.3),
              fastbp.ReLU(), fastbp.Dense(8, 5), fastbp.LayerNorm(5, eps=1e-3), fastbp.Tanh(),
              fastbp.Dense(5, 3)]
    model = fastbp.Sequential(layers, dtype=dtype, seed=0)
    X = data(6, dtype, n=60)
    y = np.random.default_rng(2).integers(0, 3, 60)
    model.fit(X, y, epochs=2, batch_size=16, loss="softmax_cross_entropy", verbose=0)
    assert not np.allclose(model.buffers[:6], 0.0)
    proto = model.to_onnx()
    ops = [node.op_type for node in proto.graph.node]
    # ONNX's epsilon is a float32 attribute: float64 spells out a LayerNorm whose eps it would round.
    assert ops.count("BatchNormalization") == 2
    assert ops.count("LayerNormalization") == (1 if dtype == "float32" else 0)
    _, results = run(proto, X)
    for out in results.values():
        assert_close(out["output"], model.decision_function(X), RTOL[dtype])
        assert_close(out["probabilities"], model.predict_proba(X), RTOL[dtype])
    for opset in (17, 18):  # ReduceMean's axes: an attribute, then an input
        for out in run(model.to_onnx(opset=opset), X)[1].values():
            assert_close(out["output"], model.decision_function(X), RTOL[dtype])
    with pytest.raises(ValueError, match="LayerNormalization, which needs opset 17 or later; got opset=16"):
        model.to_onnx(opset=16)
    # An eps that float32 holds exactly: the LayerNormalization operator in float64 too.
    exact = fastbp.Sequential([fastbp.Dense(6, 4), fastbp.LayerNorm(4, eps=2.0 ** -10), fastbp.Dense(4, 2)],
                              dtype=dtype, seed=0)
    proto = exact.to_onnx()
    assert [node.op_type for node in proto.graph.node].count("LayerNormalization") == 1
    for out in run(proto, X)[1].values():
        assert_close(out["output"], exact.decision_function(X), RTOL[dtype])


def test_sequential_without_a_loss_keeps_its_final_softmax():
    model = fastbp.Sequential([fastbp.Dense(4, 3), fastbp.Softmax()], dtype="float64", seed=0)
    X = data(4, "float64")
    names, results = run(model.to_onnx(), X)
    assert names == ["output"]
    for out in results.values():
        assert_close(out["output"], model.decision_function(X), 1e-12)
        assert_close(out["output"].sum(axis=1), np.ones(len(X)), 1e-12)


def test_dtype_override_and_bad_arguments(tmp_path):
    model = fastbp.Sequential([fastbp.Dense(4, 5, activation="elu"), fastbp.Dense(5, 2)], seed=0)
    X = data(4, "float32")
    proto = model.to_onnx(tmp_path / "m.onnx", dtype="float64")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert onnx.load(str(tmp_path / "m.onnx")) == proto
    _, results = run(proto, X.astype(np.float64))
    for out in results.values():
        assert_close(out["output"], model.decision_function(X), 1e-5)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'; got 'float16'"):
        model.to_onnx(dtype="float16")
    with pytest.raises(ValueError, match="opset must be an integer from 13"):
        model.to_onnx(opset=11)


# ----- the scikit-learn estimators: skl2onnx's outputs ---------------------------------------


def _fit(estimator, X, y):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a few epochs are enough here
        return estimator.fit(X, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ["binary int", "binary str", "multiclass int", "multiclass str",
                                    "multiclass float", "multilabel"])
def test_classifier_outputs_label_and_probabilities(target, dtype):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(4)
    X = data(5, dtype, n=80)
    n_classes = 2 if target.startswith("binary") else 3
    index = np.argmax(X[:, :n_classes] + 0.5 * rng.standard_normal((80, n_classes)), axis=1)
    if target == "multilabel":
        y = (X[:, :3] + rng.standard_normal((80, 3)) > 0).astype(int)
    elif target.endswith("str"):
        y = np.array(["cat", "dog", "emu"])[index]
    elif target.endswith("float"):
        y = np.array([1.0, 2.0, 5.0])[index]
    else:
        y = np.array([3, 7, 11])[index]
    clf = _fit(fastbp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, dtype=dtype), X, y)
    names, results = run(clf.to_onnx(), X)
    assert names == ["label", "probabilities"]
    for runtime, out in results.items():
        label, proba = out["label"], out["probabilities"]
        want = clf.predict(X)
        assert label.shape == want.shape, runtime
        if target.endswith("str"):
            assert label.dtype.kind in "OU", runtime
            assert list(label) == list(want), runtime
        else:
            assert label.dtype == np.int64, runtime
            np.testing.assert_array_equal(label, want)
        assert proba.shape == (80, 2 if target.startswith("binary") else 3)
        assert proba.dtype == np.dtype(dtype)
        assert_close(proba, clf.predict_proba(X), RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_outputs", [1, 2])
def test_regressor_outputs_variable(n_outputs, dtype):
    pytest.importorskip("sklearn")
    X = data(5, dtype, n=60)
    y = X[:, :n_outputs] ** 2 - X[:, 1:1 + n_outputs]
    reg = _fit(fastbp.MLPRegressor(hidden_layer_sizes=(8, 6), activation="tanh", max_iter=5,
                                   random_state=0, dtype=dtype), X, y[:, 0] if n_outputs == 1 else y)
    names, results = run(reg.to_onnx(), X)
    assert names == ["variable"]
    for out in results.values():
        assert out["variable"].shape == (60, n_outputs)
        assert_close(out["variable"], reg.predict(X).reshape(60, n_outputs), RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_poisson_regressor_outputs_the_mean(dtype):
    pytest.importorskip("sklearn")
    X = data(5, dtype, n=60, scale=1.0)
    y = np.random.default_rng(1).poisson(np.exp(0.5 * X[:, :2]), size=(60, 2)).astype(dtype)
    reg = _fit(fastbp.MLPRegressor(loss="poisson", hidden_layer_sizes=(6,), max_iter=5, random_state=0,
                                   dtype=dtype), X, y)
    names, results = run(reg.to_onnx(), X)
    assert names == ["variable"]
    for out in results.values():
        assert_close(out["variable"], reg.predict(X), RTOL[dtype])
        assert np.all(out["variable"] > 0)  # exp of the network's output, not the output


def test_unfitted_estimator_is_refused():
    sklearn = pytest.importorskip("sklearn")
    with pytest.raises(sklearn.exceptions.NotFittedError):
        fastbp.MLPRegressor().to_onnx()


# ----- the command line and the optional dependency -----------------------------------------


def test_cli_export_writes_a_loadable_file(tmp_path, capsys):
    model = fastbp.Sequential([fastbp.Dense(4, 8, activation="relu"), fastbp.Dense(8, 3)], seed=0)
    model.compile("softmax_cross_entropy")
    model.save(tmp_path / "model.npz")
    assert cli_main(["export", str(tmp_path / "model.npz"), "-o", str(tmp_path / "model.onnx")]) == 0
    assert "outputs: output, probabilities" in capsys.readouterr().out
    proto = onnx.load(str(tmp_path / "model.onnx"))
    X = data(4, "float32")
    _, results = run(proto, X)
    for out in results.values():
        assert_close(out["probabilities"], model.predict_proba(X), 1e-5)
    # Without -o the file goes beside the model; --dtype converts.
    assert cli_main(["export", str(tmp_path / "model.npz"), "--dtype", "float64"]) == 0
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


def test_cli_export_without_onnx_says_how_to_install(tmp_path, capsys, monkeypatch):
    fastbp.Sequential([fastbp.Dense(2, 1)]).save(tmp_path / "m.npz")
    monkeypatch.setitem(sys.modules, "onnx", None)  # "import onnx" now fails as if not installed
    assert cli_main(["export", str(tmp_path / "m.npz")]) == 2
    assert "pip install 'fastbp[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_import_fastbp_does_not_import_onnx():
    code = "import sys, fastbp; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stderr
