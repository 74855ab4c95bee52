"""A model's layers lowered to what both backends run: one op per layer, and the parameter layout.

``lower(layers, loss_link, n_features)`` turns a list of layers into a
``Lowered`` network: the op arrays of ``Network`` (kinds, activation codes and
parameters, dropout rates, which dense layer owns which parameters), the
running sum of the activation widths, and the layout of the flat parameter
vector ``theta``: all weights, then all biases, one row (weight offset, bias
offset, fan-in, fan-out) per Dense layer. The CPU backend hands ``Network`` to
its compiled loop as it is; the CUDA backend reads the same arrays on the
host and launches the kernel for each op. Neither looks at a layer.

The grouped values that the compiled loop takes are namedtuples of arrays,
which numba compiles (and caches) as structs, so two arrays of one type can
never trade places unnoticed:

- ``Network``: the lowered ops and the parameter table, read-only. Its ``activation_ops``,
  ``batchnorm_ops``, ``layernorm_ops`` and ``dropout_ops`` are each None where the network has
  no op of that kind, True where it has. ``kernels`` and ``code_kernels`` are None here; the
  CPU backend puts its kernel tables there and in place of the flags
  (``_cpu_loop.with_kernels``): the table of a kind the network has, and for an absent kind a
  table of zero addresses, which the loop holds but never calls, so that one compiled loop
  serves every network.
- ``Workspace``: buffers with room for ``cap`` rows of every activation
  (activations, their gradients, dropout masks), the scratch for a dense
  layer's dz, the softmax probabilities and the one-element loss.
- ``Targets``: labels (int), float targets and sample weights of a data set
  or of one batch; the unused ones are empty.
- ``Optimizer``: the flat parameters, their gradient, the optimizer state, the
  optimizer code, its ``hyper`` array and the step counter.
- ``LossSpec``: the loss code and its parameter (Huber's delta; 0 for the others).

Normalization layers (BatchNorm, LayerNorm) are ops of their own, with the
activation layer after them fused in (code and alpha, as a Dense op's). Their gamma
and beta sit in theta after every bias (so the optimizers update them, and
weight decay, which covers the first ``n_weights`` entries, leaves them alone
as it leaves the biases), one row of ``Network.norms`` per op says where
(registry ``NORM_*`` columns), and ``Network.norm_consts`` holds each op's eps
and momentum. BatchNorm's running statistics are no parameters: they live in
the model's ``buffers`` vector (running mean, then running variance, per
BatchNorm layer in order), which ``Workspace.running`` views, so the compiled
loop updates the model's own array. Each norm op has a row of
``Workspace.saved`` for the statistics its backward needs (BatchNorm: mean,
variance and inverse std per feature; LayerNorm: mean at 0 and inverse std at
``cap``, per row) and ``Workspace.normgrad`` is scratch for dgamma and dbeta
of an op without affine parameters.
"""
from collections import namedtuple

import numpy as np

from .kernels import registry as R
from .layers import NORM_LAYERS, Activation, BatchNorm, Dense

NORM_OPS = (R.OP_BATCHNORM, R.OP_LAYERNORM)
ELEMENTWISE = frozenset(R.ELEMENTWISE_CODES.values())

Network = namedtuple("Network", "kinds codes alphas rates params_of layout params n_weights norms "
                                "norm_consts activation_ops batchnorm_ops layernorm_ops dropout_ops kernels code_kernels")
Workspace = namedtuple("Workspace", "acts dacts masks scratch probs loss cap saved normgrad running")
Targets = namedtuple("Targets", "labels target weight")
Optimizer = namedtuple("Optimizer", "theta grad state1 state2 code hyper counters")
LossSpec = namedtuple("LossSpec", "code param")


class Lowered:
    """A network lowered for the backends: its ``Network``, widths and parameter layout."""

    def __init__(self, ops, widths, shapes, norm_layout, n_features, stripped_link):
        kinds, codes, alphas, rates, params_of, norms, norm_consts = ops
        self.widths = widths
        self.shapes = shapes
        self.n_features = n_features
        self.n_outputs = widths[-1]
        self.stripped_link = stripped_link
        self.n_weights = sum(i * o for i, o in shapes)
        self.n_parameters, self.n_buffers = norm_layout.n_parameters, norm_layout.n_buffers
        layout = np.cumsum([0, n_features] + widths, dtype=np.int64)
        self.net = Network(np.array(kinds, dtype=np.int64), np.array(codes, dtype=np.int64),
                           np.array(alphas, dtype=np.float64), np.array(rates, dtype=np.float64),
                           np.array(params_of, dtype=np.int64), layout, param_table(shapes),
                           self.n_weights, np.array(norms, dtype=np.int64).reshape(len(kinds), R.N_NORM_COLUMNS),
                           np.array(norm_consts, dtype=np.float64).reshape(len(kinds), 2),
                           *(np.bool_(True) if any(k in group for k in kinds) else None
                             for group in ((R.OP_ACTIVATION,), (R.OP_BATCHNORM,), (R.OP_LAYERNORM,), (R.OP_DROPOUT,))),
                           None, None)
        is_norm = (self.net.kinds == R.OP_BATCHNORM) | (self.net.kinds == R.OP_LAYERNORM)
        self.n_norm_ops = int(np.count_nonzero(is_norm))
        self.norm_width = max([w for w, norm in zip(widths, is_norm) if norm], default=0)

    @property
    def has_batchnorm(self):
        return bool(np.any(self.net.kinds == R.OP_BATCHNORM))

    @property
    def has_dropout(self):
        return bool(np.any(self.net.kinds == R.OP_DROPOUT))

    @property
    def activation_size(self):
        """Elements of one row of every activation, the input's included."""
        return int(self.net.layout[-1])

    def workspace(self, cap, dtype, training, loss_code, running):
        """Buffers for batches of up to ``cap`` rows; those inference does not need are empty.

        ``running``: the model's running statistics (``Sequential.buffers``), used in place.
        """
        size = cap * self.activation_size
        return Workspace(
            acts=np.zeros(size, dtype=dtype),
            dacts=np.zeros(size if training else 0, dtype=dtype),
            masks=np.zeros(size if training and self.has_dropout else 0, dtype=dtype),
            scratch=np.zeros(cap * max(self.widths) if training else 0, dtype=dtype),
            probs=np.zeros((cap, self.n_outputs) if loss_code == R.LOSS_SCE else (0, 0), dtype=dtype),
            loss=np.zeros(1, dtype=dtype),
            cap=cap,
            saved=np.zeros((self.n_norm_ops, max(3 * self.norm_width, 2 * cap) if self.n_norm_ops else 0),
                           dtype=dtype),
            normgrad=np.zeros(2 * self.norm_width if training else 0, dtype=dtype),
            running=running,
        )


def param_table(shapes):
    """One row (weight offset, bias offset, fan-in, fan-out) per Dense layer, into theta."""
    rows = []
    w_at, b_at = 0, sum(i * o for i, o in shapes)
    for i, o in shapes:
        rows.append((w_at, b_at, i, o))
        w_at += i * o
        b_at += o
    return np.array(rows, dtype=np.int64).reshape(len(rows), 4)


def param_views(flat, shapes):
    """(weight, bias) views of a flat vector laid out like theta, one pair per Dense layer."""
    table = param_table(shapes)
    return [(flat[w:w + i * o].reshape(i, o), flat[b:b + o]) for w, b, i, o in table]


NormSlot = namedtuple("NormSlot", "gamma beta running")
NormLayout = namedtuple("NormLayout", "slots n_parameters n_buffers")


def norm_layout(layers, shapes):
    """Where each norm layer's gamma and beta (in theta) and running statistics (in the buffers) start.

    ``slots``: one ``NormSlot`` per layer of ``layers`` (None for the others), -1
    where a layer has no such part; gamma and beta follow every weight and bias,
    in layer order. Also the parameter count (theta's size) and the buffer count.
    """
    at = sum(i * o + o for i, o in shapes)
    buffers = 0
    slots = []
    for layer in layers:
        if not isinstance(layer, NORM_LAYERS):
            slots.append(None)
            continue
        n = layer.num_features
        gamma = beta = running = -1
        if layer.affine:
            gamma, beta = at, at + n
            at += 2 * n
        if isinstance(layer, BatchNorm):
            running = buffers
            buffers += 2 * n
        slots.append(NormSlot(gamma, beta, running))
    return NormLayout(slots, at, buffers)


def norm_views(flat, buffers, layers, shapes):
    """Per layer: (gamma, beta, running_mean, running_var) views (None where absent) for norm layers,
    None for the others; ``flat`` is laid out like theta, ``buffers`` like the model's buffers."""
    views = []
    for layer, slot in zip(layers, norm_layout(layers, shapes).slots):
        if slot is None:
            views.append(None)
            continue
        n = layer.num_features
        gamma = flat[slot.gamma:slot.gamma + n] if slot.gamma >= 0 else None
        beta = flat[slot.beta:slot.beta + n] if slot.beta >= 0 else None
        mean = buffers[slot.running:slot.running + n] if slot.running >= 0 else None
        var = buffers[slot.running + n:slot.running + 2 * n] if slot.running >= 0 else None
        views.append((gamma, beta, mean, var))
    return views


def named_views(flat, buffers, layers, shapes):
    """[(name, view)] of every block of ``flat`` (laid out like theta) and ``buffers``, in layer order.

    Names as messages and gradient checks give them: 'layers[i].weight' (I, O) and
    'layers[i].bias' per Dense layer, 'layers[i].gamma' and 'layers[i].beta' per
    affine norm layer, 'layers[i].running_mean' and 'layers[i].running_var' per BatchNorm.
    """
    dense = iter(param_views(flat, shapes))
    out = []
    for i, (layer, views) in enumerate(zip(layers, norm_views(flat, buffers, layers, shapes))):
        if isinstance(layer, Dense):
            w, b = next(dense)
            out += [(f"layers[{i}].weight", w), (f"layers[{i}].bias", b)]
        elif views is not None:
            for part, view in zip(("gamma", "beta", "running_mean", "running_var"), views):
                if view is not None:
                    out.append((f"layers[{i}].{part}", view))
    return out


def lower(layers, loss_link, n_features):
    """Lower ``layers`` (a valid Sequential's) for a loss whose own link is ``loss_link``.

    Dense layers fuse their activation when its derivative follows from the
    output; other activations and the norm layers become ops of their own. A
    norm op fuses the elementwise activation layer right after it, whichever
    (its backward recomputes the pre-activation where f' needs it).
    Dropout(0) is no op.
    The loss applies its link (softmax, sigmoid) to the logits itself, fused
    and stable, so a final layer that applies the same link is dropped.
    """
    kinds, codes, alphas, rates, params_of, norms, norm_consts = ops = [], [], [], [], [], [], []
    widths, shapes = [], []
    layout = norm_layout(layers, [(l.in_features, l.out_features) for l in layers if isinstance(l, Dense)])
    width = n_features

    def add(kind, code=R.IDENTITY, alpha=0.0, rate=0.0, owner=-1, norm=(-1, -1, -1, -1), consts=(0.0, 0.0)):
        kinds.append(kind)
        codes.append(code)
        alphas.append(alpha)
        rates.append(rate)
        params_of.append(owner)
        norms.append(norm)
        norm_consts.append(consts)
        widths.append(width)

    n_norms = 0
    for layer, slot in zip(layers, layout.slots):
        if isinstance(layer, NORM_LAYERS):
            kind = R.OP_BATCHNORM if isinstance(layer, BatchNorm) else R.OP_LAYERNORM
            add(kind, norm=(slot.gamma, slot.beta, slot.running, n_norms),
                consts=(layer.eps, getattr(layer, "momentum", 0.0)))
            n_norms += 1
        elif isinstance(layer, Dense):
            width = layer.out_features
            code = R.ACTIVATIONS[layer.activation]
            fused = code in R.OUTPUT_DERIVABLE
            add(R.OP_DENSE, code if fused else R.IDENTITY, layer.alpha, owner=len(shapes))
            shapes.append((layer.in_features, layer.out_features))
            if not fused:
                add(R.OP_ACTIVATION, code, layer.alpha)
        elif isinstance(layer, Activation):
            code = R.ACTIVATIONS[layer.activation]
            if kinds and kinds[-1] in NORM_OPS and codes[-1] == R.IDENTITY and code in ELEMENTWISE:
                # Fused into the norm op before it, as Dense fuses its own.
                codes[-1], alphas[-1] = code, layer.alpha
            else:
                add(R.OP_ACTIVATION, code, layer.alpha)
        elif layer.rate > 0.0:
            add(R.OP_DROPOUT, rate=layer.rate)
    stripped = False
    if loss_link is not None and kinds:
        link = R.ACTIVATIONS[loss_link]
        if kinds[-1] == R.OP_ACTIVATION and codes[-1] == link:
            for seq in (*ops, widths):
                seq.pop()
            stripped = True
        elif (kinds[-1] == R.OP_DENSE or kinds[-1] in NORM_OPS) and codes[-1] == link:
            codes[-1] = R.IDENTITY
            stripped = True
    return Lowered(ops, widths, shapes, layout, n_features, stripped)


def check_norm_batches(lowered, n, batch_size, what):
    """ValueError unless every training batch has two rows or more, where the network has BatchNorm.

    PyTorch raises "Expected more than 1 value per channel when training" when it
    meets such a batch; fastbp says so before the first step, naming the sizes.
    """
    if not lowered.has_batchnorm:
        return
    last = n % batch_size
    if n < 2 or last == 1:
        batches = (f"{n} sample" if n < 2 else
                   f"batch_size={batch_size} over {n} training samples leaves a last batch of 1 sample")
        raise ValueError(f"BatchNorm expects more than 1 value per channel when training (as PyTorch's "
                         f"BatchNorm1d): {what} with {batches}; choose a batch_size that leaves 0 or "
                         f"at least 2 samples in the last batch, or drop a sample")
