"""ONNX export: a Sequential, or a fitted MLPClassifier/MLPRegressor, as a standard ONNX graph.

The graph is built from the model's lowered network (``Sequential.lowered``),
the op list both backends run, so it computes what ``decision_function``
computes: Dense layers become ``Gemm`` (W as (I, O), no transpose), every
activation its ONNX operator, Dropout nothing (inference), BatchNorm
``BatchNormalization`` in inference mode with the running statistics, LayerNorm
``LayerNormalization`` (opset 17 or later; in float64 with an eps that float32
rounds, the same formula in elementary operators), and a final softmax
or sigmoid that the loss fuses (``lowering.lower``, "stripped_link") is left
out of the network's output just as it is there. The input is ``X`` (N, I) of
the graph's dtype; the outputs are

- ``Sequential``: ``output`` (N, O), what ``decision_function`` returns (logits
  for classification losses), and for a classification loss ``probabilities``
  (N, O), what ``predict_proba`` returns (the loss's link applied to ``output``);
- ``MLPClassifier``: ``label`` and ``probabilities``, shaped as skl2onnx shapes
  them for scikit-learn's MLPClassifier (zipmap off): label (N,) int64 for
  integer, boolean and integral float classes, string for string classes,
  (N, K) int64 for multilabel targets; probabilities (N, 2) for binary
  targets, (N, C) multiclass, (N, K) multilabel;
- ``MLPRegressor``: ``variable`` (N, n_outputs).

Each activation maps to its ONNX operator through ``_ACTIVATIONS``, keyed by
the registry's names (``kernels/registry.py``): an activation added there
without an entry here is a NotImplementedError that names it. Where
onnxruntime has no kernel for the operator in float64 (as of onnxruntime 1.32,
Elu, Softplus, Erf and Gelu run in float32 only), or an attribute would round
a float64 parameter to float32 (LeakyRelu's alpha), the float64 graph spells
the same formula out in elementary operators that every runtime has, in
float64 throughout. For GELU that needs erf (``_erf_float64``); with opset 20
or later a float32 graph uses the ``Gelu`` operator, and an older opset
``0.5 x (1 + Erf(x / sqrt 2))``.

``onnx`` is imported here, inside the functions, so that fastbp never needs
it otherwise (``pip install 'fastbp[onnx]'``).
"""
import math

import numpy as np

from ._validation import check_dtype
from ._version import __version__
from .kernels import registry
from .lowering import norm_affine, norm_running

DEFAULT_OPSET = 17  # from 2022, which runtimes have long supported
MIN_OPSET = 13  # Softmax over the last axis
GELU_OPSET = 20  # the first opset with a Gelu operator
LAYERNORM_OPSET = 17  # the first opset with a LayerNormalization operator


def _import_onnx():
    try:
        import onnx
    except ImportError as err:
        raise ImportError(f"exporting to ONNX needs the onnx package: pip install 'fastbp[onnx]' "
                          f"(or pip install onnx) ({err})") from err
    return onnx


# ----- the graph ------------------------------------------------------------------------


class _Graph:
    """Nodes and initializers of one graph in one float dtype, with unique names."""

    def __init__(self, onnx, dtype, opset):
        self.onnx = onnx
        self.dtype = np.dtype(dtype)
        self.proto_dtype = onnx.helper.np_dtype_to_tensor_dtype(self.dtype)
        self.opset = opset
        self.nodes = []
        self.initializers = []
        self._constants = {}

    def node(self, op, inputs, out=None, **attributes):
        """Append one node; returns the name of its output (``out``, or a new unique name)."""
        out = out or f"{op.lower()}_{len(self.nodes)}"
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out], name=f"{op}_{len(self.nodes)}",
                                                     **attributes))
        return out

    def constant(self, value):
        """A scalar initializer of the graph's dtype, one per distinct value."""
        value = float(value)
        if value not in self._constants:
            name = f"c{len(self._constants)}"
            self._constants[value] = self.initializer(np.array(value, dtype=self.dtype), name)
        return self._constants[value]

    def initializer(self, array, name):
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def model(self, inputs, outputs, doc):
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, "fastbp", inputs, outputs, initializer=self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="fastbp",
                                  producer_version=__version__, doc_string=doc,
                                  ir_version=helper.find_min_ir_version_for(opsets))
        self.onnx.checker.check_model(model, full_check=True)
        return model

    def tensor(self, name, shape, elem_type=None):
        """A value description (graph input or output), ``elem_type`` the graph's float by default."""
        return self.onnx.helper.make_tensor_value_info(
            name, self.proto_dtype if elem_type is None else elem_type, shape)


# ----- activations, by the registry's names ------------------------------------------------


def _exact_attribute(g, alpha):
    """Whether ``alpha`` survives as a float attribute (stored as float32) in this graph."""
    return g.dtype == np.float32 or float(np.float32(alpha)) == alpha


def _where_positive(g, x, negative):
    """x where x > 0, else ``negative``: the form of leaky_relu and elu."""
    return g.node("Where", [g.node("Greater", [x, g.constant(0.0)]), x, negative])


def _identity(g, x, alpha):
    return g.node("Identity", [x])


def _relu(g, x, alpha):
    return g.node("Relu", [x])


def _leaky_relu(g, x, alpha):
    if _exact_attribute(g, alpha):
        return g.node("LeakyRelu", [x], alpha=alpha)
    return _where_positive(g, x, g.node("Mul", [x, g.constant(alpha)]))


def _expm1(g, x):
    """e^x - 1 for x <= 0, accurate for small |x| too (Kahan): (u - 1) x / log u, u = e^x; x where u == 1.

    x is clipped at -700, where the answer has been -1 for a long way and e^x is
    still above 0, so no branch that Where drops divides by log 0 or by 0 either.
    """
    x = g.node("Max", [x, g.constant(-700.0)])
    u = g.node("Exp", [x])
    one = g.constant(1.0)
    is_one = g.node("Equal", [u, one])
    log_u = g.node("Where", [is_one, one, g.node("Log", [u])])
    ratio = g.node("Div", [g.node("Mul", [g.node("Sub", [u, one]), x]), log_u])
    return g.node("Where", [is_one, x, ratio])


def _log1p(g, x):
    """log(1 + x) accurate for small x too (Goldberg): x log u / (u - 1), u = 1 + x; x where u == 1."""
    one = g.constant(1.0)
    u = g.node("Add", [x, one])
    is_one = g.node("Equal", [u, one])
    u_minus_1 = g.node("Where", [is_one, one, g.node("Sub", [u, one])])
    ratio = g.node("Div", [g.node("Mul", [x, g.node("Log", [u])]), u_minus_1])
    return g.node("Where", [is_one, x, ratio])


def _elu(g, x, alpha):
    if g.dtype == np.float32:
        return g.node("Elu", [x], alpha=alpha)
    # alpha expm1(min(x, 0)), as the kernel computes it; the min keeps e^x finite on the
    # branch that Where drops.
    negative = _expm1(g, g.node("Min", [x, g.constant(0.0)]))
    return _where_positive(g, x, g.node("Mul", [g.constant(alpha), negative]))


def _sigmoid(g, x, alpha):
    return g.node("Sigmoid", [x])


def _tanh(g, x, alpha):
    return g.node("Tanh", [x])


def _softplus(g, x, alpha):
    if g.dtype == np.float32:
        return g.node("Softplus", [x])
    # max(x, 0) + log1p(e^-|x|), as the kernel computes it: no overflow for large |x|.
    e = g.node("Exp", [g.node("Neg", [g.node("Abs", [x])])])
    return g.node("Add", [g.node("Max", [x, g.constant(0.0)]), _log1p(g, e)])


def _gelu(g, x, alpha):
    if g.dtype == np.float32 and g.opset >= GELU_OPSET:
        return g.node("Gelu", [x])
    # 0.5 x (1 + erf(x / sqrt 2)), in the kernel's order of operations.
    t = g.node("Mul", [x, g.constant(1.0 / math.sqrt(2.0))])
    erf = g.node("Erf", [t]) if g.dtype == np.float32 else _erf_float64(g, t)
    half_x = g.node("Mul", [g.constant(0.5), x])
    return g.node("Mul", [half_x, g.node("Add", [g.constant(1.0), erf])])


def _silu(g, x, alpha):
    # ONNX has no SiLU operator (HardSwish is another function): x sigmoid(x).
    if g.dtype == np.float32:
        return g.node("Mul", [x, g.node("Sigmoid", [x])])
    # onnxruntime's float64 Sigmoid loses the tail (0 for x = -50): the kernel's two
    # branches instead, e = e^-|x| <= 1, sigmoid = 1 / (1 + e) for x >= 0, e / (1 + e) below.
    e = g.node("Exp", [g.node("Neg", [g.node("Abs", [x])])])
    one_plus_e = g.node("Add", [g.constant(1.0), e])
    nonneg = g.node("Not", [g.node("Less", [x, g.constant(0.0)])])
    s = g.node("Where", [nonneg, g.node("Div", [g.constant(1.0), one_plus_e]), g.node("Div", [e, one_plus_e])])
    return g.node("Mul", [x, s])


def _selu(g, x, alpha):
    from .kernels._scalar import SELU_ALPHA, SELU_SCALE

    if g.dtype == np.float32:
        return g.node("Selu", [x], alpha=SELU_ALPHA, gamma=SELU_SCALE)
    # onnxruntime's Selu is float32 only, and its attributes are float32: float64 spells
    # out scale (x if x > 0 else alpha expm1(min(x, 0))) with float64 constants.
    negative = g.node("Mul", [g.constant(SELU_SCALE * SELU_ALPHA),
                              _expm1(g, g.node("Min", [x, g.constant(0.0)]))])
    return g.node("Where", [g.node("Greater", [x, g.constant(0.0)]),
                            g.node("Mul", [g.constant(SELU_SCALE), x]), negative])


def _softmax(g, x, alpha):
    return g.node("Softmax", [x], axis=-1)


def _log_softmax(g, x, alpha):
    return g.node("LogSoftmax", [x], axis=-1)


# Every name of registry.ACTIVATION_TABLE, and how it is written in ONNX.
_ACTIVATIONS = {
    "identity": _identity,
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "softplus": _softplus,
    "gelu": _gelu,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "silu": _silu,
    "selu": _selu,
}


def _activation(g, code, x, alpha):
    name = registry.ACTIVATION_NAMES[int(code)]
    if name not in _ACTIVATIONS:
        raise NotImplementedError(f"the {name!r} activation has no ONNX export yet: add it to "
                                  f"fastbp.export._ACTIVATIONS")
    return _ACTIVATIONS[name](g, x, float(alpha))


# erf in float64 from Exp, Mul, Add, Div, Where (onnxruntime has Erf in float32 only). For
# |t| <= 2.5 the series erf t = 2/sqrt(pi) e^(-t^2) sum_n (2 t^2)^n t / (1 3 5 ... (2n+1))
# (Abramowitz and Stegun 7.1.6), whose terms are all positive, so nothing cancels; 40 terms
# reach 1e-17 at 2.5. Above, erfc t = e^(-t^2) / (sqrt(pi) (t + (1/2) / (t + 1 / (t + (3/2) /
# (t + ...))))) (A&S 7.1.14), a continued fraction that 50 levels resolve from 2.5 on.
# Together within a few units in the last place of math.erf.
_ERF_SPLIT = 2.5
_ERF_SERIES_TERMS = 40
_ERFC_FRACTION_LEVELS = 50


def _erf_float64(g, t):
    a = g.node("Abs", [t])
    two_over_sqrt_pi = g.constant(2.0 / math.sqrt(math.pi))
    # Series on min(|t|, split); the coefficients 1 / (1 3 5 ... (2n+1)) by Horner in x = 2 s^2.
    s = g.node("Min", [a, g.constant(_ERF_SPLIT)])
    s2 = g.node("Mul", [s, s])
    x = g.node("Add", [s2, s2])
    # As nested ratios 1 + x/3 (1 + x/5 (1 + ...)), not by Horner on the coefficients
    # themselves: those fall to 1e-59, below float32's range, and onnxruntime's optimizer
    # (1.32, basic level and up) merged all the scalar initializers below that range into
    # one, 1e-13 off at |t| = 2.5. The ratios 1 / (2n + 1) stay in [1/79, 1].
    total = g.constant(1.0)
    for n in range(_ERF_SERIES_TERMS - 1, 0, -1):
        total = g.node("Add", [g.constant(1.0), g.node("Mul", [g.node("Mul", [total, x]),
                                                               g.constant(1.0 / (2 * n + 1))])])
    gauss = g.node("Exp", [g.node("Neg", [s2])])
    series = g.node("Mul", [g.node("Mul", [g.node("Mul", [two_over_sqrt_pi, s]), gauss]), total])
    # Continued fraction on |t| clipped to [split, 27] (erfc 27 < 1e-318: erf is 1 from 6 on),
    # evaluated from the innermost level out.
    l = g.node("Min", [g.node("Max", [a, g.constant(_ERF_SPLIT)]), g.constant(27.0)])
    v = l
    for k in range(_ERFC_FRACTION_LEVELS, 0, -1):
        v = g.node("Add", [l, g.node("Div", [g.constant(k / 2.0), v])])
    gauss_l = g.node("Exp", [g.node("Neg", [g.node("Mul", [l, l])])])
    erfc = g.node("Div", [gauss_l, g.node("Mul", [g.constant(math.sqrt(math.pi)), v])])
    fraction = g.node("Sub", [g.constant(1.0), erfc])
    magnitude = g.node("Where", [g.node("LessOrEqual", [a, g.constant(_ERF_SPLIT)]), series, fraction])
    return g.node("Mul", [g.node("Sign", [t]), magnitude])


# ----- the network --------------------------------------------------------------------------


def _norm(g, net, i, x, theta, buffers):
    """Norm op i at inference: ``BatchNormalization`` with the running statistics, or
    ``LayerNormalization`` over the last axis; gamma 1 and beta 0 without affine parameters."""
    width = int(net.layout[i + 1] - net.layout[i])
    eps = float(net.norm_consts[i, 0])
    gamma, beta = norm_affine(theta, net.norms, i, width)
    gamma = g.initializer((gamma if gamma.size else np.ones(width)).astype(g.dtype), f"norm{i}.gamma")
    beta = g.initializer((beta if beta.size else np.zeros(width)).astype(g.dtype), f"norm{i}.beta")
    # ONNX stores epsilon as a float32 attribute. Where that rounds a float64 graph's eps,
    # BatchNorm moves the difference into its variance initializer (var + eps is what counts);
    # LayerNorm spells the normalization out in float64 operators.
    eps32 = float(np.float32(eps))
    if net.kinds[i] == registry.OP_LAYERNORM:
        if g.opset < LAYERNORM_OPSET:
            raise ValueError(f"LayerNorm exports as ONNX LayerNormalization, which needs opset "
                             f"{LAYERNORM_OPSET} or later; got opset={g.opset}")
        if not _exact_attribute(g, eps):
            return _layernorm_float64(g, x, gamma, beta, eps)
        return g.node("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps32)
    mean, var = norm_running(buffers, net.norms, i, width)
    mean = g.initializer(mean.astype(g.dtype), f"norm{i}.running_mean")
    var = var.astype(g.dtype)
    if g.dtype == np.float64:
        var = var + (eps - eps32)
    var = g.initializer(var, f"norm{i}.running_var")
    return g.node("BatchNormalization", [x, gamma, beta, mean, var], epsilon=eps32)


def _layernorm_float64(g, x, gamma, beta, eps):
    """LayerNormalization over the last axis in elementary operators, eps kept in float64."""
    def row_mean(t):
        if g.opset >= 18:  # axes became an input
            axes = g.initializer(np.array([-1], dtype=np.int64), f"axes{len(g.nodes)}")
            return g.node("ReduceMean", [t, axes], keepdims=1)
        return g.node("ReduceMean", [t], axes=[-1], keepdims=1)

    centered = g.node("Sub", [x, row_mean(x)])
    var = row_mean(g.node("Mul", [centered, centered]))
    invstd = g.node("Reciprocal", [g.node("Sqrt", [g.node("Add", [var, g.constant(eps)])])])
    return g.node("Add", [g.node("Mul", [g.node("Mul", [centered, invstd]), gamma]), beta])


def _network(g, lowered, weights, x, state=None):
    """The lowered network's forward pass from ``x`` in inference mode; returns its output.

    ``state``: (theta, buffers) of a model with norm layers (their gamma, beta and
    running statistics), None for a network of Dense and activation layers.
    """
    net = lowered.net
    for i, (kind, code, alpha, owner) in enumerate(zip(net.kinds, net.codes, net.alphas, net.params_of)):
        if kind in (registry.OP_BATCHNORM, registry.OP_LAYERNORM):
            x = _norm(g, net, i, x, *state)
            if code != registry.IDENTITY:  # the activation layer fused into the norm op
                x = _activation(g, code, x, alpha)
        elif kind == registry.OP_DENSE:
            w, b = weights[owner]
            x = g.node("Gemm", [x, g.initializer(w.astype(g.dtype), f"dense{owner}.W"),
                                g.initializer(b.astype(g.dtype), f"dense{owner}.b")])
            if code != registry.IDENTITY:
                x = _activation(g, code, x, alpha)
        elif kind == registry.OP_ACTIVATION:
            x = _activation(g, code, x, alpha)
        # OP_DROPOUT: the identity at inference.
    return x


def _check_opset(onnx, opset):
    if opset is None:
        return DEFAULT_OPSET
    newest = onnx.defs.onnx_opset_version()
    integer = isinstance(opset, (int, np.integer)) and not isinstance(opset, bool)
    if not integer or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest} (the newest this onnx "
                         f"package knows); got {opset!r}")
    return int(opset)


def _graph_dtype(dtype, default):
    if dtype is None:
        return np.dtype(default)
    return check_dtype(dtype)


def _finish(model, path):
    """Write ``model`` to ``path`` (whole or not at all, as Sequential.save writes) unless None."""
    if path is not None:
        from ._persist import write_whole

        data = model.SerializeToString()
        write_whole(path, lambda fh: fh.write(data))
    return model


def sequential_to_onnx(model, path=None, dtype=None, opset=None):
    """``Sequential.to_onnx``: the network as an ONNX graph, written to ``path``; returns the ModelProto.

    Outputs ``output`` = decision_function and, for a classification loss,
    ``probabilities`` = predict_proba. ``dtype`` is the graph's float type,
    the model's by default; ``opset`` the ONNX opset, 17 by default.
    """
    onnx = _import_onnx()
    opset = _check_opset(onnx, opset)
    g = _Graph(onnx, _graph_dtype(dtype, model.dtype), opset)
    x = "X"
    if model.input_scaling is not None:
        # The model standardizes its inputs itself: so does the graph, before the network.
        mean, scale = (g.initializer(a.astype(g.dtype), name)
                       for a, name in zip(model.input_scaling, ("input_mean", "input_scale")))
        x = g.node("Div", [g.node("Sub", ["X", mean]), scale])
    output = _network(g, model.lowered(), model._param_views(model.theta), x, (model.theta, model.buffers))
    g.node("Identity", [output], out="output")
    outputs = [g.tensor("output", ["N", model.n_outputs])]
    link = model.loss.link if model.loss is not None else None
    if link is not None:
        g.node("Identity", [_activation(g, registry.ACTIVATIONS[link], "output", 0.0)], out="probabilities")
        outputs.append(g.tensor("probabilities", ["N", model.n_outputs]))
    doc = f"fastbp Sequential: {len(model.layers)} layers, loss {model.loss.name if model.loss else None}"
    return _finish(g.model([g.tensor("X", ["N", model.n_features])], outputs, doc), path)


def estimator_to_onnx(estimator, path=None, opset=None):
    """``MLPClassifier.to_onnx`` / ``MLPRegressor.to_onnx``: the outputs skl2onnx gives scikit-learn's.

    The graph's dtype is the estimator's; returns the ModelProto.
    """
    from sklearn.utils.validation import check_is_fitted

    onnx = _import_onnx()
    opset = _check_opset(onnx, opset)
    check_is_fitted(estimator)
    estimator._sync_params()
    model = estimator._model
    g = _Graph(onnx, model.dtype, opset)
    z = _network(g, model.lowered(), model._param_views(model.theta), "X")
    n_out = estimator.n_outputs_
    if not estimator._is_classifier():
        # The Poisson loss's network outputs the log of the mean: predict is its exp.
        g.node("Exp" if estimator.out_activation_ == "exp" else "Identity", [z], out="variable")
        outputs = [g.tensor("variable", ["N", n_out])]
        doc = "fastbp MLPRegressor"
    else:
        outputs = _classifier_outputs(g, estimator, z, n_out)
        doc = "fastbp MLPClassifier"
    inputs = [g.tensor("X", ["N", estimator.n_features_in_])]
    return _finish(g.model(inputs, outputs, doc), path)


def _classifier_outputs(g, estimator, z, n_out):
    """label and probabilities from the logits ``z``, as the estimator's predict and predict_proba.

    Labels come from the logits (argmax, or z > 0 for logistic outputs, which
    is p > 0.5), not from rounded probabilities, so a float32 graph agrees
    with the estimator's float64 probabilities on every label.
    """
    int64 = g.onnx.TensorProto.INT64
    if estimator.out_activation_ == "softmax":
        g.node("Softmax", [z], out="probabilities", axis=-1)
        index = g.node("ArgMax", [z], axis=1, keepdims=0)
        n_classes = n_out
    else:
        p = g.node("Sigmoid", [z])
        positive = g.node("Cast", [g.node("Greater", [z, g.constant(0.0)])], to=int64)
        n_classes = 2 if n_out == 1 else n_out
        if n_out == 1:  # binary: P(classes_[0]) = 1 - p, P(classes_[1]) = p
            g.node("Concat", [g.node("Sub", [g.constant(1.0), p]), p], out="probabilities", axis=1)
            index = g.node("Reshape", [positive, g.initializer(np.array([-1], np.int64), "flat")])
        else:  # multilabel: the indicator matrix is the label
            g.node("Identity", [p], out="probabilities")
            g.node("Identity", [positive], out="label")
            return [g.tensor("label", ["N", n_out], int64), g.tensor("probabilities", ["N", n_out])]
    classes, elem_type = _class_labels(g.onnx, estimator.classes_)
    g.node("Gather", [g.initializer(classes, "classes"), index], out="label", axis=0)
    return [g.tensor("label", ["N"], elem_type), g.tensor("probabilities", ["N", n_classes])]


def _class_labels(onnx, classes):
    """classes_ as an initializer's array and the label's ONNX type, as skl2onnx types labels."""
    classes = np.asarray(classes)
    if classes.dtype.kind in "iub":
        return classes.astype(np.int64), onnx.TensorProto.INT64
    if classes.dtype.kind == "f":
        if not np.all(classes == np.round(classes)):
            # skl2onnx would cast these to integers; the exact labels are more use.
            return classes.astype(np.float64), onnx.TensorProto.DOUBLE
        return classes.astype(np.int64), onnx.TensorProto.INT64
    return np.array([str(c) for c in classes], dtype=object), onnx.TensorProto.STRING
