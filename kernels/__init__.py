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

Each name below is defined on its own line from the unchecked kernel and the
argument spec written just above that kernel (``cpu/dense.py`` holds
``DENSE_FORWARD_SPEC`` and ``dense_forward``); ``fastbp.kernels.cuda`` makes
its names from the same specs.

Importing this package compiles nothing: numba compiles each kernel for a
dtype on first call and caches the machine code on disk.
"""
from . import cpu
from ._checks import KernelArgumentError, public
from ._scalar import ACTIVATION_CODES as ACTIVATIONS
from .cpu import activations as _act, dense as _dense, dropout as _dropout, losses as _losses
from .cpu import norm as _norm, optim as _optim

dense_forward = public(_dense.dense_forward, _dense.DENSE_FORWARD_SPEC)
dense_backward = public(_dense.dense_backward, _dense.DENSE_BACKWARD_SPEC)
dense_act_forward = public(_dense.dense_act_forward, _dense.DENSE_ACT_FORWARD_SPEC)
dense_act_backward = public(_dense.dense_act_backward, _dense.DENSE_ACT_BACKWARD_SPEC)

identity_forward = public(_act.identity_forward, _act.IDENTITY_FORWARD_SPEC)
identity_backward = public(_act.identity_backward, _act.IDENTITY_BACKWARD_SPEC)
relu_forward = public(_act.relu_forward, _act.RELU_FORWARD_SPEC)
relu_backward = public(_act.relu_backward, _act.RELU_BACKWARD_SPEC)
leaky_relu_forward = public(_act.leaky_relu_forward, _act.LEAKY_RELU_FORWARD_SPEC)
leaky_relu_backward = public(_act.leaky_relu_backward, _act.LEAKY_RELU_BACKWARD_SPEC)
elu_forward = public(_act.elu_forward, _act.ELU_FORWARD_SPEC)
elu_backward = public(_act.elu_backward, _act.ELU_BACKWARD_SPEC)
sigmoid_forward = public(_act.sigmoid_forward, _act.SIGMOID_FORWARD_SPEC)
sigmoid_backward = public(_act.sigmoid_backward, _act.SIGMOID_BACKWARD_SPEC)
tanh_forward = public(_act.tanh_forward, _act.TANH_FORWARD_SPEC)
tanh_backward = public(_act.tanh_backward, _act.TANH_BACKWARD_SPEC)
softplus_forward = public(_act.softplus_forward, _act.SOFTPLUS_FORWARD_SPEC)
softplus_backward = public(_act.softplus_backward, _act.SOFTPLUS_BACKWARD_SPEC)
gelu_forward = public(_act.gelu_forward, _act.GELU_FORWARD_SPEC)
gelu_backward = public(_act.gelu_backward, _act.GELU_BACKWARD_SPEC)
softmax_forward = public(_act.softmax_forward, _act.SOFTMAX_FORWARD_SPEC)
softmax_backward = public(_act.softmax_backward, _act.SOFTMAX_BACKWARD_SPEC)
log_softmax_forward = public(_act.log_softmax_forward, _act.LOG_SOFTMAX_FORWARD_SPEC)
log_softmax_backward = public(_act.log_softmax_backward, _act.LOG_SOFTMAX_BACKWARD_SPEC)
silu_forward = public(_act.silu_forward, _act.SILU_FORWARD_SPEC)
silu_backward = public(_act.silu_backward, _act.SILU_BACKWARD_SPEC)
selu_forward = public(_act.selu_forward, _act.SELU_FORWARD_SPEC)
selu_backward = public(_act.selu_backward, _act.SELU_BACKWARD_SPEC)

mse_forward = public(_losses.mse_forward, _losses.MSE_FORWARD_SPEC)
mse_backward = public(_losses.mse_backward, _losses.MSE_BACKWARD_SPEC)
softmax_cross_entropy_forward = public(_losses.softmax_cross_entropy_forward,
                                       _losses.SOFTMAX_CROSS_ENTROPY_FORWARD_SPEC)
softmax_cross_entropy_backward = public(_losses.softmax_cross_entropy_backward,
                                        _losses.SOFTMAX_CROSS_ENTROPY_BACKWARD_SPEC)
binary_cross_entropy_forward = public(_losses.binary_cross_entropy_forward,
                                      _losses.BINARY_CROSS_ENTROPY_FORWARD_SPEC)
binary_cross_entropy_backward = public(_losses.binary_cross_entropy_backward,
                                       _losses.BINARY_CROSS_ENTROPY_BACKWARD_SPEC)
poisson_forward = public(_losses.poisson_forward, _losses.POISSON_FORWARD_SPEC)
poisson_backward = public(_losses.poisson_backward, _losses.POISSON_BACKWARD_SPEC)
huber_forward = public(_losses.huber_forward, _losses.HUBER_FORWARD_SPEC)
huber_backward = public(_losses.huber_backward, _losses.HUBER_BACKWARD_SPEC)
mae_forward = public(_losses.mae_forward, _losses.MAE_FORWARD_SPEC)
mae_backward = public(_losses.mae_backward, _losses.MAE_BACKWARD_SPEC)

dropout_forward = public(_dropout.dropout_forward, _dropout.DROPOUT_FORWARD_SPEC)
dropout_backward = public(_dropout.dropout_backward, _dropout.DROPOUT_BACKWARD_SPEC)

batchnorm_forward = public(_norm.batchnorm_forward, _norm.BATCHNORM_FORWARD_SPEC)
batchnorm_inference = public(_norm.batchnorm_inference, _norm.BATCHNORM_INFERENCE_SPEC)
batchnorm_update_running = public(_norm.batchnorm_update_running, _norm.BATCHNORM_UPDATE_RUNNING_SPEC)
batchnorm_backward = public(_norm.batchnorm_backward, _norm.BATCHNORM_BACKWARD_SPEC)
layernorm_forward = public(_norm.layernorm_forward, _norm.LAYERNORM_FORWARD_SPEC)
layernorm_backward = public(_norm.layernorm_backward, _norm.LAYERNORM_BACKWARD_SPEC)
batchnorm_act_forward = public(_norm.batchnorm_act_forward, _norm.BATCHNORM_ACT_FORWARD_SPEC)
batchnorm_act_inference = public(_norm.batchnorm_act_inference, _norm.BATCHNORM_ACT_INFERENCE_SPEC)
batchnorm_act_backward = public(_norm.batchnorm_act_backward, _norm.BATCHNORM_ACT_BACKWARD_SPEC)
layernorm_act_forward = public(_norm.layernorm_act_forward, _norm.LAYERNORM_ACT_FORWARD_SPEC)
layernorm_act_backward = public(_norm.layernorm_act_backward, _norm.LAYERNORM_ACT_BACKWARD_SPEC)

sgd_update = public(_optim.sgd_update, _optim.SGD_UPDATE_SPEC)
adam_update = public(_optim.adam_update, _optim.ADAM_UPDATE_SPEC)
rmsprop_update = public(_optim.rmsprop_update, _optim.RMSPROP_UPDATE_SPEC)
adagrad_update = public(_optim.adagrad_update, _optim.ADAGRAD_UPDATE_SPEC)

__all__ = [
    "ACTIVATIONS", "KernelArgumentError", "cpu",
    "dense_forward", "dense_backward", "dense_act_forward", "dense_act_backward",
    "identity_forward", "identity_backward", "relu_forward", "relu_backward",
    "leaky_relu_forward", "leaky_relu_backward", "elu_forward", "elu_backward",
    "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
    "softplus_forward", "softplus_backward", "gelu_forward", "gelu_backward",
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "mse_forward", "mse_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "binary_cross_entropy_forward", "binary_cross_entropy_backward",
    "poisson_forward", "poisson_backward",
    "dropout_forward", "dropout_backward", "sgd_update", "adam_update",
    "silu_forward", "silu_backward", "selu_forward", "selu_backward",
    "huber_forward", "huber_backward", "mae_forward", "mae_backward",
    "rmsprop_update", "adagrad_update",
    "batchnorm_forward", "batchnorm_inference", "batchnorm_update_running", "batchnorm_backward",
    "layernorm_forward", "layernorm_backward",
    "batchnorm_act_forward", "batchnorm_act_inference", "batchnorm_act_backward",
    "layernorm_act_forward", "layernorm_act_backward",
]
