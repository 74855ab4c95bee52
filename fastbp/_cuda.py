"""GPU-resident training: the model's ops run as CUDA kernel launches on device data.

``fit`` on ``device='cuda'`` copies the training data, the parameters and the
optimizer state to the device once, then launches the kernels of
``fastbp.kernels.cuda`` step after step with no copies in between: the batch
is gathered on the device through the epoch's permutation, and the loss and
metrics of each batch go to a slot of a device array. The host reads them, and
the parameters for the callbacks, once per epoch or per progress update.

Divergence is found when the host reads the losses. The trainer then restores
the parameters and optimizer state saved at the start of the epoch and
replays the batches before the failing one, so the model is left as it was
before the failing step, as on the CPU. (The GPU path checks the loss, not the
gradient, for non-finite values.)
"""
import numpy as np

from . import _loop
from .kernels._scalar import ACTIVATION_CODES, ELU, GELU, IDENTITY, LEAKY_RELU

_NAMES = {code: name for name, code in ACTIVATION_CODES.items()}
_NAMES.update({_loop.SOFTMAX: "softmax", _loop.LOG_SOFTMAX: "log_softmax"})
_PARAMETRIZED = (LEAKY_RELU, ELU)


def require_gpu():
    """Import the CUDA kernels and check for a usable device, or raise a clear error."""
    try:
        from .kernels.cuda._numba_cuda import SIMULATOR, cuda
    except ImportError as err:
        raise RuntimeError(f"device='cuda' needs numba-cuda: pip install 'fastbp[cuda]' ({err})") from err
    if not SIMULATOR and not cuda.is_available():
        raise RuntimeError("device='cuda' needs an NVIDIA GPU with a working CUDA driver; none is usable "
                           "here (numba.cuda.is_available() is False). Use device='cpu'.")
    return cuda


class GPUNetwork:
    """Device copies of a model's parameters, and activation buffers for one batch size."""

    def __init__(self, model, ops, batch_size, with_grads):
        from .kernels.cuda import activations, dense, dropout, losses, optim, training

        self.cuda = cuda = require_gpu()
        self.D, self.A, self.L, self.R, self.O, self.T = dense, activations, losses, dropout, optim, training
        self.model, self.ops, self.batch_size = model, ops, batch_size
        dtype = model.dtype
        self.theta = cuda.to_device(model.theta)
        self.params = model._param_views(self.theta)
        widths = [model.n_features] + ops.widths
        self.acts = [cuda.device_array((batch_size, w), dtype=dtype) for w in widths]
        self.masks = [cuda.device_array((batch_size, w), dtype=dtype) if kind == _loop.OP_DROPOUT else None
                      for kind, w in zip(ops.kinds, ops.widths)]
        if with_grads:
            self.grad = cuda.device_array(model.theta.size, dtype=dtype)
            self.grads = model._param_views(self.grad)
            self.dacts = [cuda.device_array((batch_size, w), dtype=dtype) for w in widths]
        self.probs = cuda.device_array((batch_size, model.n_outputs), dtype=dtype)
        self.loss = cuda.device_array(1, dtype=dtype)
        self.no_dx = cuda.device_array((0, 0), dtype=dtype)

    def forward(self, nb, training, seed):
        """Run every op on the first nb rows of acts[0]; returns the output view."""
        ops = self.ops
        for i, kind in enumerate(ops.kinds):
            x, out = self.acts[i][:nb], self.acts[i + 1][:nb]
            code, alpha = int(ops.codes[i]), float(ops.alphas[i])
            if kind == _loop.OP_DENSE:
                w, b = self.params[ops.params_of[i]]
                self.D.dense_act_forward(out, x, w, b, code, alpha)
            elif kind == _loop.OP_ACTIVATION:
                forward = getattr(self.A, _NAMES[code] + "_forward")
                forward(out, x, alpha) if code in _PARAMETRIZED else forward(out, x)
            elif training and ops.rates[i] > 0:
                # Same per-step, per-layer seed as the CPU loop: the same masks.
                self.R.dropout_forward(out, self.masks[i][:nb], x, float(ops.rates[i]), seed + i)
            else:
                self.A.identity_forward(out, x)
        return self.acts[-1][:nb]

    def backward(self, nb):
        """Backpropagate dacts[-1][:nb] through every op into grad."""
        ops = self.ops
        for i in range(len(ops.kinds) - 1, -1, -1):
            dout, out, x = self.dacts[i + 1][:nb], self.acts[i + 1][:nb], self.acts[i][:nb]
            kind, code, alpha = ops.kinds[i], int(ops.codes[i]), float(ops.alphas[i])
            if kind == _loop.OP_DENSE:
                p = ops.params_of[i]
                dw, db = self.grads[p]
                dx = self.dacts[i][:nb] if i > 0 else self.no_dx
                self.D.dense_act_backward(dx, dw, db, dout, dout, out, x, self.params[p][0], code, alpha)
            elif i == 0:
                break  # nothing upstream needs the input gradient
            elif kind == _loop.OP_ACTIVATION:
                backward = getattr(self.A, _NAMES[code] + "_backward")
                dx = self.dacts[i][:nb]
                if code == IDENTITY:
                    backward(dx, dout)
                elif code == GELU:
                    backward(dx, dout, x)
                elif code in _PARAMETRIZED:
                    backward(dx, dout, out, alpha)
                else:
                    backward(dx, dout, out)
            elif ops.rates[i] > 0:
                self.R.dropout_backward(self.dacts[i][:nb], dout, self.masks[i][:nb])
            else:
                self.A.identity_backward(self.dacts[i][:nb], dout)

    def loss_forward(self, loss, out, yi, yf, w, loss_kind):
        if loss_kind == _loop.LOSS_SCE:
            self.L.softmax_cross_entropy_forward(loss, self.probs[:out.shape[0]], out, yi, w)
        elif loss_kind == _loop.LOSS_BCE:
            self.L.binary_cross_entropy_forward(loss, out, yf, w)
        else:
            self.L.mse_forward(loss, out, yf, w)

    def loss_backward(self, dout, out, yi, yf, w, loss_kind):
        if loss_kind == _loop.LOSS_SCE:
            self.L.softmax_cross_entropy_backward(dout, self.probs[:out.shape[0]], yi, w)
        elif loss_kind == _loop.LOSS_BCE:
            self.L.binary_cross_entropy_backward(dout, out, yf, w)
        else:
            self.L.mse_backward(dout, out, yf, w)


class DeviceData:
    """X, targets and sample weights of one data set, on the device."""

    def __init__(self, cuda, X, y_int, y_float, sw):
        self.n = len(X)
        self.X = cuda.to_device(X)
        # Zero-size host arrays still need a device twin of the right dtype and rank.
        self.y_int = cuda.to_device(y_int if y_int.size else np.zeros(1, np.int64))
        self.y_float = cuda.to_device(y_float if y_float.size else np.zeros((1, 1), X.dtype))
        self.sw = cuda.to_device(sw if sw.size else np.zeros(1, X.dtype))
        self.has_int, self.has_sw = y_int.size > 0, sw.size > 0
        self.sw_host = sw


class GPUTrainer:
    """The CUDA backend of Sequential.fit: the same contract as the CPU loop."""

    def __init__(self, model, ops, data, batch_size, seed):
        self.model, self.ops, self.batch_size, self.seed = model, ops, batch_size, seed
        self.net = GPUNetwork(model, ops, batch_size, with_grads=True)
        cuda = self.cuda = self.net.cuda
        self.data = DeviceData(cuda, *data)
        n = self.data.n
        self.n_batches = -(-n // batch_size)
        dtype = model.dtype
        self.yb_int = cuda.device_array(batch_size, dtype=np.int64)
        self.yb_float = cuda.device_array((batch_size, self.data.y_float.shape[1]), dtype=dtype)
        self.swb = cuda.device_array(batch_size, dtype=dtype)
        self.losses = cuda.device_array(self.n_batches, dtype=dtype)
        self.metrics = cuda.device_array((self.n_batches, 3), dtype=np.float64)
        opt = model.optimizer
        self.states = [cuda.to_device(s) for s in opt.state]
        self.order = None

    def begin_epoch(self, order, hyper):
        """Upload the epoch's permutation and snapshot parameters and state for a replay."""
        self.order_host = order.copy()
        self.order = self.cuda.to_device(order)
        self.hyper = hyper
        self.snapshot = [a.copy_to_host() for a in [self.net.theta] + self.states]
        self.steps_at_start = self.model.optimizer.steps

    def run(self, first, last):
        net, data, T = self.net, self.data, self.net.T
        opt = self.model.optimizer
        n_ops = len(self.ops.kinds)
        loss_kind = self.model.loss.kind
        for batch in range(first, last):
            start = batch * self.batch_size
            nb = min(self.batch_size, data.n - start)
            T.gather_rows(net.acts[0][:nb], data.X, self.order, start)
            yi = self.yb_int[:nb] if data.has_int else self.yb_int[:0]
            yf = self.yb_float[:nb] if not data.has_int else self.yb_float[:0]
            w = self.swb[:nb] if data.has_sw else self.swb[:0]
            if data.has_int:
                T.gather(yi, data.y_int, self.order, start)
            else:
                T.gather_rows(yf, data.y_float, self.order, start)
            if data.has_sw:
                T.gather(w, data.sw, self.order, start)
            step_seed = self.seed + opt.steps * (n_ops + 1)
            out = net.forward(nb, True, step_seed)
            loss = self.losses[batch:batch + 1]
            net.loss_forward(loss, out, yi, yf, w, loss_kind)
            net.loss_backward(net.dacts[-1][:nb], out, yi, yf, w, loss_kind)
            net.backward(nb)
            opt.steps += 1
            self._update(opt)
            T.batch_metrics(self.metrics, batch, out, yi, yf, loss_kind == _loop.LOSS_SCE)
        return _loop.OK, last

    def _update(self, opt):
        h, n_w = self.hyper, self.model._n_weights
        theta, grad, s = self.net.theta, self.net.grad, self.states
        lr, wd = h[_loop.H_LR], h[_loop.H_WEIGHT_DECAY]
        for part, decay in ((slice(0, n_w), wd), (slice(n_w, theta.size), 0.0)):
            if part.stop == part.start:
                continue
            if opt.kind == _loop.OPT_SGD:
                self.net.O.sgd_update(theta[part], grad[part], s[0][part], lr, h[_loop.H_MOMENTUM],
                                      bool(h[_loop.H_NESTEROV]), decay)
            else:
                self.net.O.adam_update(theta[part], grad[part], s[0][part], s[1][part], lr, h[_loop.H_BETA1],
                                       h[_loop.H_BETA2], h[_loop.H_EPS], opt.steps, decay,
                                       bool(h[_loop.H_DECOUPLED]))

    def running_loss(self, done):
        losses = self.losses[:done].copy_to_host().astype(np.float64)
        return float(np.mean(losses)) if done else float("nan")

    def end_epoch(self, stats):
        """Read the epoch's losses and metrics; on divergence restore and replay, then report."""
        losses = self.losses.copy_to_host().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            stopped = int(bad[0])
            self._restore_and_replay(stopped)
            return _loop.NONFINITE_LOSS, stopped
        metrics = self.metrics.copy_to_host()
        n, bs = self.data.n, self.batch_size
        sizes = np.minimum(bs, n - np.arange(self.n_batches) * bs)
        if self.data.has_sw:
            totals = np.add.reduceat(self.data.sw_host[self.order_host].astype(np.float64),
                                     np.arange(self.n_batches) * bs)
        else:
            totals = sizes.astype(np.float64)
        stats[_loop.S_LOSS] = float(np.dot(losses, totals))
        stats[_loop.S_WEIGHT] = float(totals.sum())
        stats[_loop.S_COUNT] = float(n)
        stats[_loop.S_CORRECT], stats[_loop.S_SQUARED], stats[_loop.S_ABSOLUTE] = metrics.sum(axis=0)
        stats[_loop.S_ELEMENTS] = float(n * self.model.n_outputs)
        self.sync_parameters()
        return _loop.OK, self.n_batches

    def _restore_and_replay(self, stopped):
        for dst, src in zip([self.net.theta] + self.states, self.snapshot):
            dst.copy_to_device(src)
        self.model.optimizer.steps = self.steps_at_start
        self.run(0, stopped)
        self.sync_parameters()

    def sync_parameters(self):
        self.net.theta.copy_to_host(self.model.theta)
        for host, device in zip(self.model.optimizer.state, self.states):
            device.copy_to_host(host)


def predict(model, ops, X, batch_size):
    """The network's outputs on X (inference mode), computed on the device."""
    net = GPUNetwork(model, ops, batch_size, with_grads=False)
    d_x = net.cuda.to_device(X)
    out = np.empty((len(X), model.n_outputs), dtype=model.dtype)
    for start in range(0, len(X), batch_size):
        nb = min(batch_size, len(X) - start)
        net.acts[0][:nb].copy_to_device(d_x[start:start + nb])
        out[start:start + nb] = net.forward(nb, False, 0).copy_to_host()
    return out
