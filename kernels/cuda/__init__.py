"""fastbp.kernels.cuda: the GPU half of the kernels, written with numba-cuda.

The same public names, argument order and conventions as ``fastbp.kernels``
(outputs first, gradients overwritten, the batch mean only in the loss
backward, a zero-size dx skips the input gradient, dz may alias dout), taking
device arrays: numba device arrays or any object with
``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors), used in
place without copying. Loss forwards write the mean into a device array of
shape (1,) and return without waiting for the device.

Each name is a launcher: a Python function that looks up the launch
configuration cached for the shapes and launches the ``@cuda.jit`` kernels on
the default stream; kernels compile for a dtype on first launch (and are
cached on disk). The names here check their arguments once per call, with the
CPU specs (the very ``ArgSpec`` objects defined beside the CPU kernels) and
messages (shape, dtype, contiguity, on the device), and raise
``KernelArgumentError`` naming the argument; checking class labels and sample
weights copies those to the host, which waits for the device. ``f.unchecked``
(also ``fastbp.kernels.cuda.dense.dense_forward`` and so on) skips the checks
for a training loop that validated once.

Importing this needs numba-cuda (``pip install fastbp[cuda]``), not a GPU:
with ``NUMBA_ENABLE_CUDASIM=1`` the kernels run in numba's CUDA simulator.
``fastbp.kernels`` never imports this package.
"""
from . import _numba_cuda  # noqa: F401  (first: raises ImportError without numba-cuda)
from . import activations, dense, dropout, losses, norm, optim
from .._checks import KernelArgumentError
from .._scalar import ACTIVATION_CODES as ACTIVATIONS
from ..cpu import activations as _cpu_act, dense as _cpu_dense, dropout as _cpu_dropout
from ..cpu import losses as _cpu_losses, norm as _cpu_norm, optim as _cpu_optim
from ._checks import public
from ._numba_cuda import SIMULATOR, as_device_array

dense_forward = public(dense.dense_forward, _cpu_dense.DENSE_FORWARD_SPEC)
dense_backward = public(dense.dense_backward, _cpu_dense.DENSE_BACKWARD_SPEC)
dense_act_forward = public(dense.dense_act_forward, _cpu_dense.DENSE_ACT_FORWARD_SPEC)
dense_act_backward = public(dense.dense_act_backward, _cpu_dense.DENSE_ACT_BACKWARD_SPEC)

identity_forward = public(activations.identity_forward, _cpu_act.IDENTITY_FORWARD_SPEC)
identity_backward = public(activations.identity_backward, _cpu_act.IDENTITY_BACKWARD_SPEC)
relu_forward = public(activations.relu_forward, _cpu_act.RELU_FORWARD_SPEC)
relu_backward = public(activations.relu_backward, _cpu_act.RELU_BACKWARD_SPEC)
leaky_relu_forward = public(activations.leaky_relu_forward, _cpu_act.LEAKY_RELU_FORWARD_SPEC)
leaky_relu_backward = public(activations.leaky_relu_backward, _cpu_act.LEAKY_RELU_BACKWARD_SPEC)
elu_forward = public(activations.elu_forward, _cpu_act.ELU_FORWARD_SPEC)
elu_backward = public(activations.elu_backward, _cpu_act.ELU_BACKWARD_SPEC)
sigmoid_forward = public(activations.sigmoid_forward, _cpu_act.SIGMOID_FORWARD_SPEC)
sigmoid_backward = public(activations.sigmoid_backward, _cpu_act.SIGMOID_BACKWARD_SPEC)
tanh_forward = public(activations.tanh_forward, _cpu_act.TANH_FORWARD_SPEC)
tanh_backward = public(activations.tanh_backward, _cpu_act.TANH_BACKWARD_SPEC)
softplus_forward = public(activations.softplus_forward, _cpu_act.SOFTPLUS_FORWARD_SPEC)
softplus_backward = public(activations.softplus_backward, _cpu_act.SOFTPLUS_BACKWARD_SPEC)
gelu_forward = public(activations.gelu_forward, _cpu_act.GELU_FORWARD_SPEC)
gelu_backward = public(activations.gelu_backward, _cpu_act.GELU_BACKWARD_SPEC)
softmax_forward = public(activations.softmax_forward, _cpu_act.SOFTMAX_FORWARD_SPEC)
softmax_backward = public(activations.softmax_backward, _cpu_act.SOFTMAX_BACKWARD_SPEC)
log_softmax_forward = public(activations.log_softmax_forward, _cpu_act.LOG_SOFTMAX_FORWARD_SPEC)
log_softmax_backward = public(activations.log_softmax_backward, _cpu_act.LOG_SOFTMAX_BACKWARD_SPEC)
silu_forward = public(activations.silu_forward, _cpu_act.SILU_FORWARD_SPEC)
silu_backward = public(activations.silu_backward, _cpu_act.SILU_BACKWARD_SPEC)
selu_forward = public(activations.selu_forward, _cpu_act.SELU_FORWARD_SPEC)
selu_backward = public(activations.selu_backward, _cpu_act.SELU_BACKWARD_SPEC)

mse_forward = public(losses.mse_forward, _cpu_losses.MSE_FORWARD_SPEC)
mse_backward = public(losses.mse_backward, _cpu_losses.MSE_BACKWARD_SPEC)
softmax_cross_entropy_forward = public(losses.softmax_cross_entropy_forward,
                                       _cpu_losses.SOFTMAX_CROSS_ENTROPY_FORWARD_SPEC)
softmax_cross_entropy_backward = public(losses.softmax_cross_entropy_backward,
                                        _cpu_losses.SOFTMAX_CROSS_ENTROPY_BACKWARD_SPEC)
binary_cross_entropy_forward = public(losses.binary_cross_entropy_forward,
                                      _cpu_losses.BINARY_CROSS_ENTROPY_FORWARD_SPEC)
binary_cross_entropy_backward = public(losses.binary_cross_entropy_backward,
                                       _cpu_losses.BINARY_CROSS_ENTROPY_BACKWARD_SPEC)
poisson_forward = public(losses.poisson_forward, _cpu_losses.POISSON_FORWARD_SPEC)
poisson_backward = public(losses.poisson_backward, _cpu_losses.POISSON_BACKWARD_SPEC)
huber_forward = public(losses.huber_forward, _cpu_losses.HUBER_FORWARD_SPEC)
huber_backward = public(losses.huber_backward, _cpu_losses.HUBER_BACKWARD_SPEC)
mae_forward = public(losses.mae_forward, _cpu_losses.MAE_FORWARD_SPEC)
mae_backward = public(losses.mae_backward, _cpu_losses.MAE_BACKWARD_SPEC)

dropout_forward = public(dropout.dropout_forward, _cpu_dropout.DROPOUT_FORWARD_SPEC)
dropout_backward = public(dropout.dropout_backward, _cpu_dropout.DROPOUT_BACKWARD_SPEC)

batchnorm_forward = public(norm.batchnorm_forward, _cpu_norm.BATCHNORM_FORWARD_SPEC)
batchnorm_inference = public(norm.batchnorm_inference, _cpu_norm.BATCHNORM_INFERENCE_SPEC)
batchnorm_update_running = public(norm.batchnorm_update_running, _cpu_norm.BATCHNORM_UPDATE_RUNNING_SPEC)
batchnorm_backward = public(norm.batchnorm_backward, _cpu_norm.BATCHNORM_BACKWARD_SPEC)
layernorm_forward = public(norm.layernorm_forward, _cpu_norm.LAYERNORM_FORWARD_SPEC)
layernorm_backward = public(norm.layernorm_backward, _cpu_norm.LAYERNORM_BACKWARD_SPEC)
batchnorm_act_forward = public(norm.batchnorm_act_forward, _cpu_norm.BATCHNORM_ACT_FORWARD_SPEC)
batchnorm_act_inference = public(norm.batchnorm_act_inference, _cpu_norm.BATCHNORM_ACT_INFERENCE_SPEC)
batchnorm_act_backward = public(norm.batchnorm_act_backward, _cpu_norm.BATCHNORM_ACT_BACKWARD_SPEC)
layernorm_act_forward = public(norm.layernorm_act_forward, _cpu_norm.LAYERNORM_ACT_FORWARD_SPEC)
layernorm_act_backward = public(norm.layernorm_act_backward, _cpu_norm.LAYERNORM_ACT_BACKWARD_SPEC)

sgd_update = public(optim.sgd_update, _cpu_optim.SGD_UPDATE_SPEC)
adam_update = public(optim.adam_update, _cpu_optim.ADAM_UPDATE_SPEC)
rmsprop_update = public(optim.rmsprop_update, _cpu_optim.RMSPROP_UPDATE_SPEC)
adagrad_update = public(optim.adagrad_update, _cpu_optim.ADAGRAD_UPDATE_SPEC)

__all__ = [
    "ACTIVATIONS", "KernelArgumentError", "SIMULATOR", "as_device_array",
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
