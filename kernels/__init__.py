"""fastbp.kernels: hand-derived forward and backward kernels compiled with numba.

Every kernel writes its outputs into arrays passed first, then takes inputs,
then scalars; it returns nothing and allocates nothing. Gradients are always
overwritten, never accumulated. Shapes use N (batch), I (inputs), O (outputs).

The names here check their arguments (shape, dtype, contiguity) when called
from Python and raise ``KernelArgumentError`` naming the argument, the
expectation and what was given. Inside your own ``@njit`` function the same
names compile directly to the unchecked kernels. For a hot Python loop, call
the unchecked dispatchers in ``fastbp.kernels.cpu`` (or ``f.unchecked``)
after validating once.

Importing this package compiles nothing: numba compiles each kernel for a
dtype on first call and caches the machine code on disk.
"""
from . import cpu
from ._checks import KernelArgumentError, public
from ._scalar import ACTIVATION_CODES as ACTIVATIONS

_N_I, _N_O, _I_O = "NI", "NO", "IO"

_SPECS = {
    # name: (outputs, inputs and scalars...), with the number of outputs (the first ones)
    # or, where an input comes between them, their names
    "dense_forward": ([("out", _N_O), ("x", _N_I), ("w", _I_O), ("b", "O")], 1),
    "dense_backward": ([("dx", "NI?"), ("dw", _I_O), ("db", "O"), ("dout", _N_O), ("x", _N_I),
                        ("w", _I_O)], 3),
    "dense_act_forward": ([("out", _N_O), ("x", _N_I), ("w", _I_O), ("b", "O"),
                           ("activation", "act"), ("alpha", "float")], 1),
    "dense_act_backward": ([("dx", "NI?"), ("dw", _I_O), ("db", "O"), ("dz", _N_O), ("dout", _N_O),
                            ("out", _N_O), ("x", _N_I), ("w", _I_O), ("activation", "act_fused"),
                            ("alpha", "float")], 4),
    "identity_forward": ([("out", "*"), ("x", "*")], 1),
    "identity_backward": ([("dx", "*"), ("dout", "*")], 1),
    "softmax_forward": ([("out", _N_O), ("x", _N_O)], 1),
    "softmax_backward": ([("dx", _N_O), ("dout", _N_O), ("out", _N_O)], 1),
    "log_softmax_forward": ([("out", _N_O), ("x", _N_O)], 1),
    "log_softmax_backward": ([("dx", _N_O), ("dout", _N_O), ("out", _N_O)], 1),
    "gelu_forward": ([("out", "*"), ("x", "*")], 1),
    "gelu_backward": ([("dx", "*"), ("dout", "*"), ("x", "*")], 1),
    "mse_forward": ([("loss", "L"), ("pred", _N_O), ("target", _N_O), ("weight", "N?")], 1),
    "mse_backward": ([("dpred", _N_O), ("pred", _N_O), ("target", _N_O), ("weight", "N?")], 1),
    "softmax_cross_entropy_forward": ([("loss", "L"), ("probs", _N_O), ("logits", _N_O),
                                       ("labels", "labels"), ("weight", "N?")], 2),
    "softmax_cross_entropy_backward": ([("dlogits", _N_O), ("probs", _N_O), ("labels", "labels"),
                                        ("weight", "N?")], 1),
    "binary_cross_entropy_forward": ([("loss", "L"), ("logits", _N_O), ("target", _N_O),
                                      ("weight", "N?")], 1),
    "binary_cross_entropy_backward": ([("dlogits", _N_O), ("logits", _N_O), ("target", _N_O),
                                       ("weight", "N?")], 1),
    "dropout_forward": ([("out", "*"), ("mask", "*"), ("x", "*"), ("rate", "rate"), ("seed", "seed")], 2),
    "dropout_backward": ([("dx", "*"), ("dout", "*"), ("mask", "*")], 1),
    "sgd_update": ([("param", "*"), ("grad", "*"), ("velocity", "*"), ("lr", "nonneg"),
                    ("momentum", "nonneg"), ("nesterov", "bool"), ("weight_decay", "nonneg")],
                   ("param", "velocity")),
    "adam_update": ([("param", "*"), ("grad", "*"), ("m", "*"), ("v", "*"), ("lr", "nonneg"),
                     ("beta1", "rate"), ("beta2", "rate"), ("eps", "positive"), ("step", "step"),
                     ("weight_decay", "nonneg"), ("decoupled", "bool")], ("param", "m", "v")),
}
# Activations with a parameter, and those whose backward takes the output.
for _act, _param in (("relu", None), ("leaky_relu", ("slope", "nonneg")), ("elu", ("alpha", "positive")),
                     ("sigmoid", None), ("tanh", None), ("softplus", None)):
    _extra = [_param] if _param else []
    _SPECS[f"{_act}_forward"] = ([("out", "*"), ("x", "*")] + _extra, 1)
    _SPECS[f"{_act}_backward"] = ([("dx", "*"), ("dout", "*"), ("out", "*")] + _extra, 1)

for _name, (_spec, _n_out) in _SPECS.items():
    globals()[_name] = public(getattr(cpu, _name), _spec, _n_out)

__all__ = ["ACTIVATIONS", "KernelArgumentError", "cpu", *_SPECS]
del _name, _spec, _n_out, _act, _param, _extra
