"""A model's layers lowered to what both backends run: one op per layer, and the parameter layout.

``lower(layers, loss_link, n_features)`` turns a list of layers into ``Op`` records, one per
op, and packs them into a ``Lowered`` network: the op arrays of ``Network`` (kinds, activation codes and
parameters, dropout rates, which dense layer owns which parameters), the
running sum of the activation widths, and the layout of the flat parameter
vector ``theta``: all weights, then all biases, one row (weight offset, bias
offset, fan-in, fan-out) per Dense layer. The CPU backend hands ``Network`` to
its compiled loop as it is; the CUDA backend reads the same arrays on the
host and launches the kernel for each op. Neither looks at a layer.

The grouped values that the compiled loop takes are namedtuples of arrays,
which numba compiles (and caches) as structs, so two arrays of one type can
never trade places unnoticed:

- ``Network``: the lowered ops, the backward pass's schedule (``backward_schedule``) and the
  parameter table, read-only. Its ``activation_ops``, ``batchnorm_ops``, ``layernorm_ops`` and
  ``dropout_ops`` are each None where the network has no op of that kind, True where it has.
  ``kernels`` and ``code_kernels`` are None here; the CPU backend puts its kernel tables there
  and in place of the flags (``_kernel_tables.with_kernels``): the table of a kind the network
  has, and for an absent kind a table of zero addresses, which the loop holds but never calls,
  so that one compiled loop serves every network.
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
loop updates the model's own array. Each norm op has a slab of ``Workspace.saved``
(a row per statistic its backward needs, registry ``SAVED_*``: BatchNorm's mean,
variance and inverse std per feature; LayerNorm's mean and inverse std per row) and
``Workspace.normgrad`` is scratch for dgamma and dbeta of an op without affine parameters.

Every offset into theta, the buffers and the workspace is computed here and nowhere else:
``buffer_shapes`` sizes the buffers, and ``activation_extent``, ``dense_extent``, ``dense_bias``,
``norm_affine``, ``norm_affine_grads``, ``norm_statistics`` and ``norm_running`` cut an op's
named views: called as they are by the CUDA backend (on device arrays) and ONNX export, and
compiled into the CPU loop by ``backends/_views.py``.
"""
from collections import namedtuple

import numpy as np

from .kernels import registry
from .layers import NORM_LAYERS, Activation, BatchNorm, Dense

NORM_OPS = (registry.OP_BATCHNORM, registry.OP_LAYERNORM)
ELEMENTWISE = frozenset(registry.ELEMENTWISE_CODES.values())

Network = namedtuple("Network", "kinds codes alphas rates params_of layout params n_weights norms norm_consts "
                                "backward_order input_grads activation_ops batchnorm_ops layernorm_ops dropout_ops "
                                "kernels code_kernels")
Workspace = namedtuple("Workspace", "acts dacts masks scratch probs loss cap saved normgrad running")
Targets = namedtuple("Targets", "labels target weight")
Optimizer = namedtuple("Optimizer", "theta grad state1 state2 code hyper counters")
LossSpec = namedtuple("LossSpec", "code param")


class Lowered:
    """A network lowered for the backends: its ``Network``, widths and parameter layout."""

    def __init__(self, ops, shapes, norm_layout, n_features, stripped_link):
        widths = [op.width for op in ops]
        kinds = [op.kind for op in ops]
        self.ops = ops
        self.widths = widths
        self.shapes = shapes
        self.n_features = n_features
        self.n_outputs = widths[-1]
        self.stripped_link = stripped_link
        self.n_weights = sum(i * o for i, o in shapes)
        self.n_parameters, self.n_buffers = norm_layout.n_parameters, norm_layout.n_buffers
        layout = np.cumsum([0, n_features] + widths, dtype=np.int64)
        self.net = Network(np.array(kinds, dtype=np.int64), np.array([op.code for op in ops], dtype=np.int64),
                           np.array([op.alpha for op in ops], dtype=np.float64),
                           np.array([op.rate for op in ops], dtype=np.float64),
                           np.array([op.owner for op in ops], dtype=np.int64), layout, param_table(shapes),
                           self.n_weights,
                           np.array([op.norm for op in ops], dtype=np.int64).reshape(len(ops), registry.N_NORM_COLUMNS),
                           np.array([op.consts for op in ops], dtype=np.float64).reshape(len(ops), 2),
                           *(np.array(part, dtype=np.int64) for part in backward_schedule(ops)),
                           *(np.bool_(True) if any(k in group for k in kinds) else None
                             for group in ((registry.OP_ACTIVATION,), (registry.OP_BATCHNORM,),
                                           (registry.OP_LAYERNORM,), (registry.OP_DROPOUT,))),
                           None, None)
        is_norm = (self.net.kinds == registry.OP_BATCHNORM) | (self.net.kinds == registry.OP_LAYERNORM)
        self.n_norm_ops = int(np.count_nonzero(is_norm))
        self.norm_width = max([w for w, norm in zip(widths, is_norm) if norm], default=0)

    @property
    def has_batchnorm(self):
        return bool(np.any(self.net.kinds == registry.OP_BATCHNORM))

    @property
    def has_dropout(self):
        return bool(np.any(self.net.kinds == registry.OP_DROPOUT))

    @property
    def activation_size(self):
        """Elements of one row of every activation, the input's included."""
        return int(self.net.layout[-1])

    def buffer_shapes(self, cap, training, loss_code):
        """The shape of each buffer of a ``Workspace`` (``running`` aside, which is the model's)
        for batches of up to ``cap`` rows; those the pass does not need are empty. Both backends
        allocate from here, the CUDA backend on the device."""
        size = cap * self.activation_size
        return dict(
            acts=(size,),
            dacts=(size if training else 0,),
            masks=(size if training and self.has_dropout else 0,),
            scratch=(cap * max(self.widths) if training else 0,),
            probs=(cap, self.n_outputs) if loss_code == registry.LOSS_SCE else (0, 0),
            loss=(1,),
            # A slab per norm op, a row per statistic (registry.SAVED_*): one entry per feature
            # (BatchNorm) or per row of the batch (LayerNorm).
            saved=(self.n_norm_ops, registry.N_SAVED_STATS, max(self.norm_width, cap) if self.n_norm_ops else 0),
            normgrad=(2 * self.norm_width if training else 0,),
        )

    def workspace(self, cap, dtype, training, loss_code, running):
        """Buffers for batches of up to ``cap`` rows (``buffer_shapes``).

        ``running``: the model's running statistics (``Sequential.buffers``), used in place.
        """
        buffers = {name: np.zeros(shape, dtype=dtype)
                   for name, shape in self.buffer_shapes(cap, training, loss_code).items()}
        return Workspace(cap=cap, running=running, **buffers)


def backward_schedule(ops):
    """The backward pass's plan for ``ops``: the ops whose backward runs, last to first, and for
    each op whether it computes its input gradient (1) or not (0).

    The forward pass runs every op in order. An op's backward runs where it or an op before it
    has parameters (a Dense op, a norm op with gamma and beta), and computes its input gradient
    where an op before it has: ops in front of the first parameters (a dropout of the inputs, a
    norm layer without affine parameters) pass no gradient to anything that learns.
    """
    learns = [op.kind == registry.OP_DENSE or (op.kind in NORM_OPS and op.norm[registry.NORM_GAMMA] >= 0)
              for op in ops]
    learns_before = [any(learns[:i]) for i in range(len(ops))]
    order = [i for i in range(len(ops) - 1, -1, -1) if learns_before[i] or learns[i]]
    return order, [int(flag) for flag in learns_before]


def param_table(shapes):
    """One row per Dense layer, into theta: where its weight and its bias start, its fan-in and its
    fan-out (registry ``PARAM_*`` columns)."""
    rows = []
    w_at, b_at = 0, sum(i * o for i, o in shapes)
    for i, o in shapes:
        row = [0] * registry.N_PARAM_COLUMNS
        row[registry.PARAM_WEIGHT], row[registry.PARAM_BIAS] = w_at, b_at
        row[registry.PARAM_FAN_IN], row[registry.PARAM_FAN_OUT] = i, o
        rows.append(row)
        w_at += i * o
        b_at += o
    return np.array(rows, dtype=np.int64).reshape(len(rows), registry.N_PARAM_COLUMNS)


def param_views(flat, shapes):
    """(weight, bias) views of a flat vector laid out like theta, one pair per Dense layer."""
    table = param_table(shapes)
    return [dense_weight_and_bias(flat, table, p) for p in range(len(table))]


def activation_extent(layout, cap, i):
    """(start, width) of activation i (0: the input, i + 1: op i's output) in a buffer laid out as
    ``Workspace.acts``: room for ``cap`` rows of every activation, one after the other."""
    return cap * layout[i], layout[i + 1] - layout[i]


def dense_extent(params, p):
    """(weight start, bias start, fan-in, fan-out) of Dense layer p in theta or its gradient."""
    return (params[p, registry.PARAM_WEIGHT], params[p, registry.PARAM_BIAS], params[p, registry.PARAM_FAN_IN],
            params[p, registry.PARAM_FAN_OUT])


def dense_weight_and_bias(flat, params, p):
    """(weight (fan_in, fan_out), bias (fan_out,)) views of Dense layer p in ``flat`` (theta or its
    gradient); the compiled loop cuts the weight with ``_views.matrix`` instead of a reshape."""
    w, b, n_in, n_out = dense_extent(params, p)
    return flat[w:w + n_in * n_out].reshape(n_in, n_out), flat[b:b + n_out]


def dense_bias(flat, params, p):
    """The bias of Dense layer p in ``flat`` (theta or its gradient)."""
    b, n_out = params[p, registry.PARAM_BIAS], params[p, registry.PARAM_FAN_OUT]
    return flat[b:b + n_out]


def norm_affine(flat, norms, i, width):
    """(gamma, beta) of norm op i in ``flat`` (theta), zero-size views where it has no affine
    parameters."""
    g, b = norms[i, registry.NORM_GAMMA], norms[i, registry.NORM_BETA]
    if g < 0:
        return flat[:0], flat[:0]
    return flat[g:g + width], flat[b:b + width]


def norm_affine_grads(grad, normgrad, norms, i, width):
    """(dgamma, dbeta) of norm op i: its part of the gradient, or the two halves of the
    ``normgrad`` scratch where it has no affine parameters (its backward forms both sums anyway)."""
    g, b = norms[i, registry.NORM_GAMMA], norms[i, registry.NORM_BETA]
    if g < 0:
        return normgrad[:width], normgrad[width:2 * width]
    return grad[g:g + width], grad[b:b + width]


def norm_statistics(saved, norms, i, length):
    """(mean, var, invstd) of norm op i in ``saved``, as its forward leaves them for its backward:
    the first ``length`` entries of each row of its slab, ``length`` its width for BatchNorm (one
    per feature) or the batch's rows for LayerNorm (one per row; the variance row unused)."""
    slab = saved[norms[i, registry.NORM_SAVED]]
    return slab[registry.SAVED_MEAN, :length], slab[registry.SAVED_VAR, :length], slab[registry.SAVED_INVSTD, :length]


def norm_running(running, norms, i, width):
    """(running_mean, running_var) of BatchNorm op i in the model's ``buffers``."""
    m, v = norms[i, registry.NORM_RUNNING_MEAN], norms[i, registry.NORM_RUNNING_VAR]
    return running[m:m + width], running[v:v + width]


NormSlot = namedtuple("NormSlot", "gamma beta running_mean running_var")


def _norm_row(slot, saved):
    """A norm op's row of ``Network.norms`` (registry ``NORM_*`` columns)."""
    row = [-1] * registry.N_NORM_COLUMNS
    row[registry.NORM_GAMMA], row[registry.NORM_BETA] = slot.gamma, slot.beta
    row[registry.NORM_RUNNING_MEAN], row[registry.NORM_RUNNING_VAR] = slot.running_mean, slot.running_var
    row[registry.NORM_SAVED] = saved
    return tuple(row)
NormLayout = namedtuple("NormLayout", "slots n_parameters n_buffers")


def norm_layout(layers, shapes):
    """Where each norm layer's gamma and beta (in theta) and running mean and variance (in the
    buffers) start.

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
        gamma = beta = running_mean = running_var = -1
        if layer.affine:
            gamma, beta = at, at + n
            at += 2 * n
        if isinstance(layer, BatchNorm):
            running_mean, running_var = buffers, buffers + n
            buffers += 2 * n
        slots.append(NormSlot(gamma, beta, running_mean, running_var))
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
        mean = buffers[slot.running_mean:slot.running_mean + n] if slot.running_mean >= 0 else None
        var = buffers[slot.running_var:slot.running_var + n] if slot.running_var >= 0 else None
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


# One op of a lowered network, before ``Lowered`` packs the ops into the arrays of ``Network``:
# its kind, activation code and parameter, dropout rate, the Dense layer whose parameters it uses
# (-1: none), its row of ``Network.norms`` and of ``Network.norm_consts``, its output's width.
Op = namedtuple("Op", "kind code alpha rate owner norm consts width",
                defaults=(registry.IDENTITY, 0.0, 0.0, -1, (-1,) * registry.N_NORM_COLUMNS, (0.0, 0.0), 0))


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
    layout = norm_layout(layers, [(l.in_features, l.out_features) for l in layers if isinstance(l, Dense)])
    ops, shapes, width = [], [], n_features
    for layer, slot in zip(layers, layout.slots):
        width = layer.out_features if isinstance(layer, Dense) else width
        _lower_layer(ops, shapes, layer, slot, width)
    stripped = _strip_link(ops, loss_link)
    return Lowered(ops, shapes, layout, n_features, stripped)


def _lower_layer(ops, shapes, layer, slot, width):
    """Append ``layer``'s ops to ``ops`` (a Dense layer's shape to ``shapes``), or fuse it into the
    op before it."""
    if isinstance(layer, NORM_LAYERS):
        kind = registry.OP_BATCHNORM if isinstance(layer, BatchNorm) else registry.OP_LAYERNORM
        n_norms = sum(op.kind in NORM_OPS for op in ops)
        ops.append(Op(kind, norm=_norm_row(slot, n_norms), consts=(layer.eps, getattr(layer, "momentum", 0.0)),
                      width=width))
    elif isinstance(layer, Dense):
        code = registry.ACTIVATIONS[layer.activation]
        fused = code in registry.OUTPUT_DERIVABLE
        ops.append(Op(registry.OP_DENSE, code if fused else registry.IDENTITY, layer.alpha, owner=len(shapes),
                      width=width))
        shapes.append((layer.in_features, layer.out_features))
        if not fused:
            ops.append(Op(registry.OP_ACTIVATION, code, layer.alpha, width=width))
    elif isinstance(layer, Activation):
        code = registry.ACTIVATIONS[layer.activation]
        if ops and ops[-1].kind in NORM_OPS and ops[-1].code == registry.IDENTITY and code in ELEMENTWISE:
            # Fused into the norm op before it, as Dense fuses its own.
            ops[-1] = ops[-1]._replace(code=code, alpha=layer.alpha)
        else:
            ops.append(Op(registry.OP_ACTIVATION, code, layer.alpha, width=width))
    elif layer.rate > 0.0:
        ops.append(Op(registry.OP_DROPOUT, rate=layer.rate, width=width))


def _strip_link(ops, loss_link):
    """Drop the loss's link (``loss_link``) from the end of ``ops``, where the network applies it:
    an activation op of its own goes, a fused one becomes the identity. True where it did."""
    if loss_link is None or not ops:
        return False
    link = registry.ACTIVATIONS[loss_link]
    if ops[-1].code != link:
        return False
    if ops[-1].kind == registry.OP_ACTIVATION:
        ops.pop()
        return True
    if ops[-1].kind == registry.OP_DENSE or ops[-1].kind in NORM_OPS:
        ops[-1] = ops[-1]._replace(code=registry.IDENTITY)
        return True
    return False


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
