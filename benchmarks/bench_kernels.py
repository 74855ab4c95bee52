"""asv: time of each kernel's forward and backward (or update) at the shapes of configs.SHAPES.

Each parameter set is (shape, dtype); setup builds the arrays and calls every phase once, so
that compiling (or loading numba's cache) never happens inside a timed body.
"""
from .configs import DTYPES, SHAPES, kernel_calls


class _Kernel:
    kernel = None
    params = (list(SHAPES), list(DTYPES))
    param_names = ("shape", "dtype")

    def setup(self, shape, dtype):
        self.calls = kernel_calls(self.kernel, shape, dtype)
        for func, args in self.calls.values():
            func(*args)

    def _run(self, phase):
        func, args = self.calls[phase]
        func(*args)


class _Layer(_Kernel):
    def time_forward(self, shape, dtype):
        self._run("forward")

    def time_backward(self, shape, dtype):
        self._run("backward")


class _Update(_Kernel):
    def time_update(self, shape, dtype):
        self._run("update")


class Dense(_Layer):
    kernel = "dense"


class DenseRelu(_Layer):
    """dense_act_forward/backward with the ReLU fused in."""

    kernel = "dense_act"


class Relu(_Layer):
    kernel = "relu"


class Softmax(_Layer):
    kernel = "softmax"


class Gelu(_Layer):
    kernel = "gelu"


class Silu(_Layer):
    """SiLU, whose backward takes the forward input (a separate pass after the dense product)."""

    kernel = "silu"


class Selu(_Layer):
    kernel = "selu"


class Mse(_Layer):
    """The elementwise losses share one kernel pair; MSE, Huber and MAE time its dispatch."""

    kernel = "mse"


class Huber(_Layer):
    kernel = "huber"


class Mae(_Layer):
    kernel = "mae"


class BatchNorm(_Layer):
    """Training mode: the batch's statistics, and the backward through them."""

    kernel = "batchnorm"


class LayerNorm(_Layer):
    kernel = "layernorm"


class BatchNormAct(_Layer):
    """BatchNorm with the ReLU after it fused in."""

    kernel = "batchnorm_act"


class LayerNormAct(_Layer):
    kernel = "layernorm_act"


class SoftmaxCrossEntropy(_Layer):
    kernel = "softmax_cross_entropy"


class SgdUpdate(_Update):
    kernel = "sgd_update"


class AdamUpdate(_Update):
    kernel = "adam_update"


class RmspropUpdate(_Update):
    """Centered RMSprop with momentum: every buffer in use."""

    kernel = "rmsprop_update"


class AdagradUpdate(_Update):
    kernel = "adagrad_update"
