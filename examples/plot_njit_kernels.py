"""
A kernel pair in your own ``@njit`` training step
=================================================

:mod:`fastbp.kernels` called from a numba-compiled function: inside ``@njit`` code each
public name compiles straight to the unchecked kernel, so a whole training step (forward,
loss, backward, update) runs without Python. Here, a one-hidden-layer network on two
interleaved spirals, every buffer allocated once, and the loss of each epoch plotted.
"""
import matplotlib.pyplot as plt
import numpy as np
from numba import njit

from fastbp import datasets
from fastbp import kernels as K

TANH = K.ACTIVATIONS["tanh"]


@njit
def epoch(X, labels, params, moments, buffers, lr):
    # X (batches, N, I) and labels (batches, N): X[i] is a C-contiguous batch, no copy.
    w1, b1, w2, b2 = params
    h, out, probs, dout, dh, dz, no_dx, dw1, db1, dw2, db2, no_weight, loss = buffers
    total = 0.0
    for i in range(X.shape[0]):
        x, y = X[i], labels[i]
        K.dense_act_forward(h, x, w1, b1, TANH, 0.0)                  # h = tanh(x w1 + b1)
        K.dense_forward(out, h, w2, b2)                               # logits
        K.softmax_cross_entropy_forward(loss, probs, out, y, no_weight)
        K.softmax_cross_entropy_backward(dout, probs, y, no_weight)   # the batch mean, here only
        K.dense_backward(dh, dw2, db2, dout, h, w2)
        K.dense_act_backward(no_dx, dw1, db1, dz, dh, h, x, w1, TANH, 0.0)
        for p, g, v in ((w1, dw1, moments[0]), (w2, dw2, moments[2])):
            K.sgd_update(p, g, v, lr, 0.9, False, 0.0)
        for p, g, v in ((b1, db1, moments[1]), (b2, db2, moments[3])):
            K.sgd_update(p, g, v, lr, 0.9, False, 0.0)
        total += loss[0]
    return total / X.shape[0]


X, y = datasets.make_spirals(n_samples=1024, n_classes=3, noise=0.1, seed=0)
N, I, H, O = 32, X.shape[1], 64, 3
rng = np.random.default_rng(0)
f32 = np.float32
params = (rng.normal(0, 1 / np.sqrt(I), (I, H)).astype(f32), np.zeros(H, f32),
          rng.normal(0, 1 / np.sqrt(H), (H, O)).astype(f32), np.zeros(O, f32))
moments = tuple(np.zeros_like(p) for p in params)
buffers = (np.empty((N, H), f32), np.empty((N, O), f32), np.empty((N, O), f32), np.empty((N, O), f32),
           np.empty((N, H), f32), np.empty((N, H), f32), np.empty((0, 0), f32),
           np.empty((I, H), f32), np.empty(H, f32), np.empty((H, O), f32), np.empty(O, f32),
           np.empty(0, f32), np.empty(1, f32))
batches = X.shape[0] // N
Xb = X[:batches * N].reshape(batches, N, I)
yb = y[:batches * N].astype(np.int64).reshape(batches, N)
losses = [epoch(Xb, yb, params, moments, buffers, 0.1) for _ in range(60)]
print(f"mean loss: epoch 1 {losses[0]:.3f}, epoch 60 {losses[-1]:.3f}")

# %%
# The loss falls as the hidden layer learns the spirals.
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(np.arange(1, len(losses) + 1), losses)
ax.set_xlabel("epoch")
ax.set_ylabel("softmax cross-entropy")
fig.tight_layout()
