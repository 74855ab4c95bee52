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

- ``Network``: the lowered ops and the parameter table, read-only.
- ``Workspace``: buffers with room for ``cap`` rows of every activation
  (activations, their gradients, dropout masks), the scratch for a dense
  layer's dz, the softmax probabilities and the one-element loss.
- ``Targets``: labels (int), float targets and sample weights of a data set
  or of one batch; the unused ones are empty.
- ``Optimizer``: the flat parameters, their gradient, the optimizer state, the
  optimizer code, its ``hyper`` array and the step counter.
- ``LossSpec``: the loss code and its parameter (Huber's delta; 0 for the others).
"""
from collections import namedtuple

import numpy as np

from .kernels import registry as R
from .layers import Activation, Dense

Network = namedtuple("Network", "kinds codes alphas rates params_of layout params n_weights")
Workspace = namedtuple("Workspace", "acts dacts masks scratch probs loss cap")
Targets = namedtuple("Targets", "labels target weight")
Optimizer = namedtuple("Optimizer", "theta grad state1 state2 code hyper counters")
LossSpec = namedtuple("LossSpec", "code param")


class Lowered:
    """A network lowered for the backends: its ``Network``, widths and parameter layout."""

    def __init__(self, kinds, codes, alphas, rates, params_of, widths, shapes, n_features, stripped_link):
        self.widths = widths
        self.shapes = shapes
        self.n_features = n_features
        self.n_outputs = widths[-1]
        self.stripped_link = stripped_link
        self.n_weights = sum(i * o for i, o in shapes)
        self.n_parameters = self.n_weights + sum(o for _, o in shapes)
        layout = np.cumsum([0, n_features] + widths, dtype=np.int64)
        self.net = Network(np.array(kinds, dtype=np.int64), np.array(codes, dtype=np.int64),
                           np.array(alphas, dtype=np.float64), np.array(rates, dtype=np.float64),
                           np.array(params_of, dtype=np.int64), layout, param_table(shapes),
                           self.n_weights)

    @property
    def has_dropout(self):
        return bool(np.any(self.net.kinds == R.OP_DROPOUT))

    @property
    def activation_size(self):
        """Elements of one row of every activation, the input's included."""
        return int(self.net.layout[-1])

    def workspace(self, cap, dtype, training, loss_code):
        """Buffers for batches of up to ``cap`` rows; those inference does not need are empty."""
        size = cap * self.activation_size
        return Workspace(
            acts=np.zeros(size, dtype=dtype),
            dacts=np.zeros(size if training else 0, dtype=dtype),
            masks=np.zeros(size if training and self.has_dropout else 0, dtype=dtype),
            scratch=np.zeros(cap * max(self.widths) if training else 0, dtype=dtype),
            probs=np.zeros((cap, self.n_outputs) if loss_code == R.LOSS_SCE else (0, 0), dtype=dtype),
            loss=np.zeros(1, dtype=dtype),
            cap=cap,
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


def lower(layers, loss_link, n_features):
    """Lower ``layers`` (a valid Sequential's) for a loss whose own link is ``loss_link``.

    Dense layers fuse their activation when its derivative follows from the
    output; other activations become ops of their own. Dropout(0) is no op.
    The loss applies its link (softmax, sigmoid) to the logits itself, fused
    and stable, so a final layer that applies the same link is dropped.
    """
    kinds, codes, alphas, rates, params_of, widths, shapes = [], [], [], [], [], [], []
    width = n_features

    def add(kind, code=R.IDENTITY, alpha=0.0, rate=0.0, owner=-1):
        kinds.append(kind)
        codes.append(code)
        alphas.append(alpha)
        rates.append(rate)
        params_of.append(owner)
        widths.append(width)

    for layer in layers:
        if isinstance(layer, Dense):
            width = layer.out_features
            code = R.ACTIVATIONS[layer.activation]
            fused = code in R.OUTPUT_DERIVABLE
            add(R.OP_DENSE, code if fused else R.IDENTITY, layer.alpha, owner=len(shapes))
            shapes.append((layer.in_features, layer.out_features))
            if not fused:
                add(R.OP_ACTIVATION, code, layer.alpha)
        elif isinstance(layer, Activation):
            add(R.OP_ACTIVATION, R.ACTIVATIONS[layer.activation], layer.alpha)
        elif layer.rate > 0.0:
            add(R.OP_DROPOUT, rate=layer.rate)
    stripped = False
    if loss_link is not None and kinds:
        link = R.ACTIVATIONS[loss_link]
        if kinds[-1] == R.OP_ACTIVATION and codes[-1] == link:
            for seq in (kinds, codes, alphas, rates, params_of, widths):
                seq.pop()
            stripped = True
        elif kinds[-1] == R.OP_DENSE and codes[-1] == link:
            codes[-1] = R.IDENTITY
            stripped = True
    return Lowered(kinds, codes, alphas, rates, params_of, widths, shapes, n_features, stripped)
