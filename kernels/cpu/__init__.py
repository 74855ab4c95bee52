"""Unchecked CPU kernels (numba dispatchers).

These trust their callers: C-contiguous arrays of one float dtype with
matching shapes, outputs first. Call them from hot loops or from your own
``@njit`` code after validating once; ``fastbp.kernels`` exposes checked
versions under the same names.
"""
from .activations import (  # noqa: F401
    elu_backward, elu_forward, gelu_backward, gelu_forward, identity_backward,
    identity_forward, leaky_relu_backward, leaky_relu_forward, log_softmax_backward,
    log_softmax_forward, relu_backward, relu_forward, selu_backward, selu_forward, sigmoid_backward,
    sigmoid_forward, silu_backward, silu_forward,
    softmax_backward, softmax_forward, softplus_backward, softplus_forward, tanh_backward,
    tanh_forward,
)
from .dense import dense_act_backward, dense_act_forward, dense_backward, dense_forward  # noqa: F401
from .dropout import dropout_backward, dropout_forward  # noqa: F401
from .losses import (  # noqa: F401
    binary_cross_entropy_backward, binary_cross_entropy_forward, huber_backward, huber_forward,
    mae_backward, mae_forward, mse_backward, mse_forward,
    poisson_backward, poisson_forward, softmax_cross_entropy_backward, softmax_cross_entropy_forward,
)
from .norm import (  # noqa: F401
    batchnorm_act_backward, batchnorm_act_forward, batchnorm_act_inference, batchnorm_backward,
    batchnorm_forward, batchnorm_inference, batchnorm_update_running, layernorm_act_backward,
    layernorm_act_forward, layernorm_backward, layernorm_forward,
)
from .optim import adagrad_update, adam_update, rmsprop_update, sgd_update  # noqa: F401
