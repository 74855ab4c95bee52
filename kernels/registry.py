"""Every code and layout that the kernels, the compiled loop and the backends share, defined once.

Compiled code cannot look names up in dicts, so activations, losses,
optimizers, op kinds, status codes and the layouts of the ``hyper`` and
``stats`` arrays travel as small integers. Each is defined here and nowhere
else; every table of names (the layers' activation names, the checked kernels'
codes, the CUDA dispatch) derives from the tables below. numba freezes these
module globals into the machine code it caches, and the cache is keyed on the
content of this file (``kernels/_cache.py``), so an edit here recompiles.

Adding an activation: a code and a row in ``ACTIVATION_TABLE``, its scalar
formulas in ``_scalar.py`` (a branch in ``activate`` and ``activate_grad``, or
``activate_input_grad`` when its backward needs the input, or a row-wise kernel
pair for a non-elementwise one), and its tests. Nothing
else names it.
"""
from collections import namedtuple

# ----- activations --------------------------------------------------------------------

IDENTITY = 0
RELU = 1
LEAKY_RELU = 2
ELU = 3
SIGMOID = 4
TANH = 5
SOFTPLUS = 6
GELU = 7
SOFTMAX = 8
LOG_SOFTMAX = 9
SILU = 10
SELU = 11

Activation = namedtuple("Activation", "name code alpha alpha_rule backward_from")
"""One activation.

alpha: the default of its parameter (leaky slope, ELU scale), or None when it has none;
alpha_rule: 'nonneg' or 'positive', what the parameter must be for the backward to hold;
backward_from: what its backward needs besides dout: 'output' (elementwise, from
y = f(z); these fuse into the dense kernels), 'input' (elementwise, from z), or 'rows'
(row-wise over the last axis, from the output).
"""

ACTIVATION_TABLE = (
    Activation("identity", IDENTITY, None, None, "output"),
    Activation("relu", RELU, None, None, "output"),
    Activation("leaky_relu", LEAKY_RELU, 0.01, "nonneg", "output"),
    Activation("elu", ELU, 1.0, "positive", "output"),
    Activation("sigmoid", SIGMOID, None, None, "output"),
    Activation("tanh", TANH, None, None, "output"),
    Activation("softplus", SOFTPLUS, None, None, "output"),
    Activation("gelu", GELU, None, None, "input"),
    Activation("softmax", SOFTMAX, None, None, "rows"),
    Activation("log_softmax", LOG_SOFTMAX, None, None, "rows"),
    Activation("silu", SILU, None, None, "input"),
    Activation("selu", SELU, None, None, "output"),
)
# The elementwise activations whose backward takes the input z (``backward_from == 'input'``):
# a tuple, which compiled code can test with ``code in INPUT_DERIVED``.
INPUT_DERIVED = tuple(a.code for a in ACTIVATION_TABLE if a.backward_from == "input")

# Every activation by name (layers, the model's lowering).
ACTIVATIONS = {a.name: a.code for a in ACTIVATION_TABLE}
# The elementwise ones, which the fused dense kernels and activation_forward take.
ELEMENTWISE_CODES = {a.name: a.code for a in ACTIVATION_TABLE if a.backward_from != "rows"}
# Elementwise activations whose derivative follows from their output: fusable into dense backward.
OUTPUT_DERIVABLE = frozenset(a.code for a in ACTIVATION_TABLE if a.backward_from == "output")
ACTIVATION_NAMES = {a.code: a.name for a in ACTIVATION_TABLE}
ACTIVATION_BY_NAME = {a.name: a for a in ACTIVATION_TABLE}

# ----- the ops of a lowered network ---------------------------------------------------

OP_DENSE = 0
OP_ACTIVATION = 1
OP_DROPOUT = 2
# Normalization ops (fastbp.BatchNorm, fastbp.LayerNorm): their parameters gamma and beta sit in
# theta after every bias, BatchNorm's running statistics in the model's ``buffers``.
OP_BATCHNORM = 3
OP_LAYERNORM = 4
# Columns of ``Network.norms``, one row per op (-1 where unused): where the op's gamma and beta
# start in theta (-1 without affine), where its running mean and running variance start in the
# buffers (BatchNorm), and which slab of the workspace's ``saved`` holds its statistics.
NORM_GAMMA = 0
NORM_BETA = 1
NORM_RUNNING_MEAN = 2
NORM_RUNNING_VAR = 3
NORM_SAVED = 4
N_NORM_COLUMNS = 5
# Rows of a norm op's slab of ``saved``: the statistics its backward reads, per feature
# (BatchNorm) or per row of the batch (LayerNorm, which keeps no variance).
SAVED_MEAN = 0
SAVED_VAR = 1
SAVED_INVSTD = 2
N_SAVED_STATS = 3
# Columns of ``Network.params``, one row per Dense op: where its weight (fan_in, fan_out) and
# bias (fan_out) start in theta.
PARAM_WEIGHT = 0
PARAM_BIAS = 1
PARAM_FAN_IN = 2
PARAM_FAN_OUT = 3
N_PARAM_COLUMNS = 4

# ----- losses ---------------------------------------------------------------------------

LOSS_SCE = 0
LOSS_BCE = 1
LOSS_MSE = 2
LOSS_POISSON = 3
LOSS_HUBER = 4
LOSS_MAE = 5

Loss = namedtuple("Loss", "name code link param")
"""One loss; link is the activation it applies to the logits itself (fused and stable), or None;
param is the default of its one parameter (Huber's delta), or None when it has none.

The losses other than softmax cross-entropy are elementwise: a term l(z, t; param)
per output and its derivative, ``loss_term`` and ``loss_grad`` of ``_scalar.py``,
averaged over outputs and (weighted) samples by one kernel pair per backend.

The Poisson loss takes the network's output as the log of the mean, eta, and
applies exp inside the loss (loss exp(eta) - y eta); exp is no activation of
fastbp's and there are no probabilities, so its link is None here and
``Sequential.predict`` returns exp(eta), the predicted mean.
"""

LOSS_TABLE = (
    Loss("softmax_cross_entropy", LOSS_SCE, "softmax", None),
    Loss("binary_cross_entropy", LOSS_BCE, "sigmoid", None),
    Loss("mse", LOSS_MSE, None, None),
    Loss("poisson", LOSS_POISSON, None, None),
    Loss("huber", LOSS_HUBER, None, 1.0),
    Loss("mae", LOSS_MAE, None, None),
)

# ----- optimizers and the layout of their ``hyper`` array --------------------------------

OPT_SGD = 0
OPT_ADAM = 1
OPT_RMSPROP = 2
OPT_ADAGRAD = 3

H_LR = 0
H_MOMENTUM = 1
H_NESTEROV = 2
H_WEIGHT_DECAY = 3
H_BETA1 = 4
H_BETA2 = 5
H_EPS = 6
H_DECOUPLED = 7
H_ALPHA = 8        # RMSprop's smoothing constant
H_CENTERED = 9     # RMSprop: normalize by the centered second moment
H_LR_DECAY = 10    # Adagrad: lr / (1 + (step - 1) lr_decay)
H_EPS_HAT = 11     # Adam: eps added to the uncorrected sqrt(v) (Keras, scikit-learn)
N_HYPER = 12

# ----- what a run of training steps reports -----------------------------------------------

OK = 0
NONFINITE_LOSS = 1
NONFINITE_GRADIENT = 2

# Layout of the per-run statistics array: sums over the samples seen, each sample's terms
# times its weight s_n (1 unweighted). S_LOSS: s_n-weighted loss; S_WEIGHT: sum s_n;
# S_CORRECT, S_SQUARED, S_ABSOLUTE: s_n times correct rows or outputs, squared and absolute
# errors; S_COUNT: samples; S_ELEMENTS: O sum s_n (elementwise losses only).
S_LOSS = 0
S_WEIGHT = 1
S_CORRECT = 2
S_SQUARED = 3
S_ABSOLUTE = 4
S_COUNT = 5
S_ELEMENTS = 6
N_STATS = 7
