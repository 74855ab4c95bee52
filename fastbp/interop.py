"""Weights in and out in PyTorch's layout (``from_sklearn``, weights in from scikit-learn, is
the estimators' own: ``fastbp/estimators.py``).

``state_dict(model)`` / ``load_state_dict(model, state)`` (``Sequential``'s
methods of those names) use the names and layouts of a PyTorch
``nn.Sequential`` of ``nn.Linear`` modules: ``"<index>.weight"`` (out, in)
and ``"<index>.bias"`` (out,), where ``<index>`` is the Dense layer's index in
``model.layers``. PyTorch numbers the modules of an ``nn.Sequential`` the same
way, activation and Dropout modules included, so a model written with separate
activation layers, ``[Dense(4, 8), ReLU(), Dense(8, 3)]``, has the keys of
``nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))``: "0.*" and
"2.*". A Dense with its activation fused, ``Dense(4, 8, activation="relu")``,
is one layer and so one index, as ``nn.Linear`` is one module: that model's
keys are "0.*" and "1.*". BatchNorm and LayerNorm give the keys of ``nn.BatchNorm1d``
and ``nn.LayerNorm``: "<index>.weight" (gamma) and "<index>.bias" (beta) when affine,
and for BatchNorm "<index>.running_mean", "<index>.running_var" and
"<index>.num_batches_tracked" (one count for the model). fastbp never imports torch: values go out as NumPy
arrays and come in as anything ``numpy.asarray`` takes (a CPU tensor does).
"""
import numpy as np

from ._validation import check_weight_values
from .layers import NORM_LAYERS, Activation, BatchNorm, Dense, Dropout

# ----- PyTorch's names and layouts -----------------------------------------------------------


def _dense_params(model):
    """(key prefix, weight view (I, O), bias view (O,)) per Dense layer, in the model's order."""
    views = model._param_views(model.theta)
    indices = [i for i, layer in enumerate(model.layers) if isinstance(layer, Dense)]
    return [(str(i), w, b) for i, (w, b) in zip(indices, views)]


def _targets(model):
    """{key: (view, transposed)} of every array of the state dict, in PyTorch's order.

    Dense layers give "<i>.weight" (transposed) and "<i>.bias"; a norm layer gives
    "<i>.weight" (gamma) and "<i>.bias" (beta) when affine, and BatchNorm its
    "<i>.running_mean" and "<i>.running_var" (then "<i>.num_batches_tracked",
    handled by the callers), as ``nn.BatchNorm1d`` and ``nn.LayerNorm`` name them.
    """
    targets = {}
    dense = {prefix: (w, b) for prefix, w, b in _dense_params(model)}
    for i, views in enumerate(model._norm_views(model.theta)):
        prefix = str(i)
        if prefix in dense:
            w, b = dense[prefix]
            targets[prefix + ".weight"] = (w, True)
            targets[prefix + ".bias"] = (b, False)
        elif views is not None:
            for name, view in zip(("weight", "bias", "running_mean", "running_var"), views):
                if view is not None:
                    targets[f"{prefix}.{name}"] = (view, False)
    return targets


def _tracked_keys(model):
    return [f"{i}.num_batches_tracked" for i, layer in enumerate(model.layers) if isinstance(layer, BatchNorm)]


def state_dict(model):
    """Copies of every parameter and buffer, keyed and laid out as ``nn.Sequential.state_dict``:
    "<index>.weight" (out, in) and "<index>.bias" (out,) per Dense layer, gamma, beta and
    BatchNorm's running statistics and batch count per norm layer."""
    state = {}
    for key, (view, transposed) in _targets(model).items():
        state[key] = view.T.copy() if transposed else view.copy()
        prefix = key.rsplit(".", 1)[0]
        if key.endswith("running_var"):
            state[prefix + ".num_batches_tracked"] = np.array(model.batches_tracked, dtype=np.int64)
    return state


def load_state_dict(model, state):
    """Load ``state`` (keys and layouts of ``state_dict``) into ``model``, cast to its dtype.

    The keys must be exactly the model's; every shape must match; every value must be
    a finite real number (running variances >= 0). Nothing is loaded unless everything
    fits. BatchNorm's "num_batches_tracked" entries set the model's one count (the first,
    if they differ).
    """
    if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
        raise TypeError(f"state_dict must be a mapping of names to arrays; got {type(state).__name__}")
    targets = _targets(model)
    tracked = _tracked_keys(model)
    expected_keys = list(targets) + tracked
    given = list(state.keys())
    missing = [k for k in expected_keys if k not in state]
    unexpected = [k for k in given if k not in expected_keys]
    if missing or unexpected:
        parts = ([f"missing key(s) {missing}"] if missing else []) + \
                ([f"unexpected key(s) {unexpected}"] if unexpected else [])
        raise ValueError(f"state_dict does not fit this model: {'; '.join(parts)} (expected "
                         f"{expected_keys})")
    arrays = {}
    for key, (view, transposed) in targets.items():
        value = np.asarray(state[key])
        expected = view.shape[::-1] if transposed else view.shape
        if value.shape != expected:
            raise ValueError(f"state_dict[{key!r}] must have shape {expected}; got {value.shape}")
        check_weight_values(value, f"state_dict[{key!r}]", variance=key.endswith(".running_var"))
        arrays[key] = value.T if transposed else value
    counts = []
    for key in tracked:
        value = np.asarray(state[key])
        if value.size != 1 or value.dtype.kind not in "iu" or int(value.reshape(-1)[0]) < 0:
            raise ValueError(f"state_dict[{key!r}] must be one non-negative integer; got {value!r}")
        counts.append(int(value.reshape(-1)[0]))
    for key, (view, _) in targets.items():
        view[...] = arrays[key].astype(model.dtype, copy=False)
    if counts:
        model.batches_tracked = counts[0]


# ----- a PyTorch module ------------------------------------------------------------------------

# fastbp's activation names as torch.nn modules: (class name, keyword arguments from alpha).
_TORCH_ACTIVATIONS = {
    "relu": ("ReLU", None), "leaky_relu": ("LeakyReLU", "negative_slope"), "elu": ("ELU", "alpha"),
    "sigmoid": ("Sigmoid", None), "tanh": ("Tanh", None), "softplus": ("Softplus", None),
    "gelu": ("GELU", None), "silu": ("SiLU", None), "selu": ("SELU", None),
    "softmax": ("Softmax", "dim"), "log_softmax": ("LogSoftmax", "dim"),
}


def _torch_plan(model):
    """The modules of the expanded nn.Sequential, in order: (kind, layer index, layer, activation
    name, alpha) with kind "linear", "activation", "dropout" or "norm".

    A Dense layer's fused activation becomes a module of its own after its Linear; a last
    activation that the loss applies itself (softmax before softmax cross-entropy, sigmoid
    before binary cross-entropy) is left out, as decision_function leaves it out.
    """
    plan = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Dense):
            plan.append(("linear", i, layer, None, None))
            if layer.activation != "identity":
                plan.append(("activation", i, layer, layer.activation, layer.alpha))
        elif isinstance(layer, Dropout):
            plan.append(("dropout", i, layer, None, None))
        elif isinstance(layer, NORM_LAYERS):
            plan.append(("norm", i, layer, None, None))
        elif isinstance(layer, Activation):
            if layer.activation != "identity":
                plan.append(("activation", i, layer, layer.activation, layer.alpha))
    link = model.loss.link if model.loss is not None else None
    last = next((k for k in range(len(plan) - 1, -1, -1) if plan[k][0] != "dropout"), None)
    if link is not None and last is not None and plan[last][0] == "activation" and plan[last][3] == link:
        del plan[last]
    return plan


def _expanded_prefixes(model):
    """{layer index: module index} of the layers that own parameters or buffers."""
    return {i: k for k, (kind, i, *_) in enumerate(_torch_plan(model)) if kind in ("linear", "norm")}


def expanded_state_dict(model):
    """``state_dict`` keyed by the modules of ``to_torch``'s nn.Sequential."""
    if model.input_scaling is not None:
        raise ValueError("this model standardizes its inputs (input_scaling), which no state_dict key holds: "
                         "use model.to_torch(), which folds the standardization into the first Linear, or "
                         "apply (X - mean) / scale yourself before the module")
    where = _expanded_prefixes(model)
    state = {}
    for key, value in state_dict(model).items():
        prefix, name = key.split(".", 1)
        state[f"{where[int(prefix)]}.{name}"] = value
    return state


def to_torch(model):
    """The model as a ``torch.nn.Sequential`` that computes what ``decision_function`` does.

    Fused activations become modules of their own (Dense(64, 256, activation="relu") is
    nn.Linear then nn.ReLU), Dropout is nn.Dropout, BatchNorm and LayerNorm are
    nn.BatchNorm1d and nn.LayerNorm with their parameters and running statistics. The
    weights are copies in the model's dtype; the module is in eval mode. An input
    standardization (``set_input_scaling``) is folded into the first Linear layer.
    """
    try:
        import torch
        from torch import nn
    except ImportError as err:
        raise ImportError(f"to_torch needs PyTorch: pip install torch ({err})") from err
    plan = _torch_plan(model)
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[model.dtype]
    modules = []
    for kind, _, layer, activation, alpha in plan:
        if kind == "linear":
            modules.append(nn.Linear(layer.in_features, layer.out_features))
        elif kind == "dropout":
            modules.append(nn.Dropout(layer.rate))
        elif kind == "norm" and isinstance(layer, BatchNorm):
            modules.append(nn.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                                          affine=layer.affine))
        elif kind == "norm":
            modules.append(nn.LayerNorm(layer.num_features, eps=layer.eps, elementwise_affine=layer.affine))
        else:
            name, argument = _TORCH_ACTIVATIONS[activation]
            kwargs = {} if argument is None else {argument: 1 if argument == "dim" else alpha}
            modules.append(getattr(nn, name)(**kwargs))
    module = nn.Sequential(*modules).to(dtype)
    state = dict(expanded_state_dict(model) if model.input_scaling is None else _folded(model))
    module.load_state_dict({k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in state.items()})
    return module.eval()


def _folded(model):
    """The expanded state dict with (X - mean) / scale folded into the first Linear layer:
    W' = W / scale (per input), b' = b - W' mean."""
    # Only Dropout (the identity in inference) may stand before the Dense layer it folds into.
    first = next(i for i, layer in enumerate(model.layers) if not isinstance(layer, Dropout))
    if not isinstance(model.layers[first], Dense):
        raise ValueError("to_torch folds the input standardization into the first Dense layer; this model "
                         f"has {type(model.layers[first]).__name__} before it")
    mean, scale = model.input_scaling
    saved, model.input_scaling = model.input_scaling, None
    try:
        state = expanded_state_dict(model)
    finally:
        model.input_scaling = saved
    key = str(_expanded_prefixes(model)[first])
    w = state[key + ".weight"].astype(np.float64) / scale
    state[key + ".bias"] = (state[key + ".bias"] - w @ mean).astype(model.dtype)
    state[key + ".weight"] = w.astype(model.dtype)
    return state
