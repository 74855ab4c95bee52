"""
The speed of fastbp against NumPy (and PyTorch)
===============================================

One epoch of the same small network (64-32-10, ReLU, softmax cross-entropy, SGD with momentum,
batch 32, float32) trained by fastbp, by a hand-written NumPy backprop and, where it is
installed, by PyTorch on the CPU. Each is warmed up first, then timed over a few epochs
(the best is kept). This is a quick look on whatever machine builds the page; the figures
worth keeping, per machine, with their commands, are on the :doc:`/benchmarks` page.
"""
import time

import matplotlib.pyplot as plt
import numpy as np

import fastbp

N_SAMPLES, BATCH, LR, MOMENTUM = 8192, 32, 0.01, 0.9
rng = np.random.default_rng(0)
X = rng.normal(size=(N_SAMPLES, 64)).astype(np.float32)
y = np.argmax(X[:, :10] @ rng.normal(size=(10, 10)), axis=1)


def best_epoch_seconds(run_epoch, repeats=3):
    run_epoch()                                   # warm-up: compiles, allocates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - start)
    return min(times)


model = fastbp.Sequential([fastbp.Dense(64, 32, activation="relu"), fastbp.Dense(32, 10)], seed=0)
model.compile("softmax_cross_entropy", fastbp.SGD(lr=LR, momentum=MOMENTUM))
seconds = {"fastbp": best_epoch_seconds(lambda: model.fit(X, y, epochs=1, batch_size=BATCH, verbose=0))}


class NumpyMLP:
    """The same network and step in plain NumPy: forward, softmax cross-entropy, backward, update."""

    def __init__(self):
        limit1, limit2 = np.sqrt(6 / 64), np.sqrt(6 / 32)
        self.params = [rng.uniform(-limit1, limit1, (64, 32)).astype(np.float32), np.zeros(32, np.float32),
                       rng.uniform(-limit2, limit2, (32, 10)).astype(np.float32), np.zeros(10, np.float32)]
        self.velocity = [np.zeros_like(p) for p in self.params]

    def epoch(self):
        w1, b1, w2, b2 = self.params
        order = rng.permutation(N_SAMPLES)
        for start in range(0, N_SAMPLES, BATCH):
            idx = order[start:start + BATCH]
            x, t = X[idx], y[idx]
            h = np.maximum(x @ w1 + b1, 0)
            z = h @ w2 + b2
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(t)), t] -= 1
            dz = p / len(t)
            dh = (dz @ w2.T) * (h > 0)
            grads = [x.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]
            for param, v, g in zip(self.params, self.velocity, grads):
                v *= MOMENTUM
                v += g
                param -= LR * v


seconds["NumPy"] = best_epoch_seconds(NumpyMLP().epoch)

try:
    import torch
except ImportError:
    torch = None
    print("PyTorch is not installed: fastbp against NumPy only")
if torch is not None:
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def torch_epoch():
        for idx in torch.randperm(N_SAMPLES).split(BATCH):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
            optimizer.step()

    seconds["PyTorch"] = best_epoch_seconds(torch_epoch)

for name, s in seconds.items():
    print(f"{name:8s} {N_SAMPLES / s:12,.0f} samples/s   fastbp is {s / seconds['fastbp']:.1f}x")

# %%
# Samples per second, higher is better.
fig, ax = plt.subplots(figsize=(5, 3.5))
names = list(seconds)
ax.bar(names, [N_SAMPLES / seconds[n] for n in names], color=["C0", "C1", "C2"][:len(names)])
ax.set_ylabel("samples / s (one epoch)")
ax.set_title("64-32-10, batch 32, float32")
fig.tight_layout()
