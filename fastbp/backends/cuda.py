"""The CUDA backend: the same interface as ``cpu.py``, as kernel launches on device data.

``fit`` on ``device='cuda'`` copies the training data, the parameters and the
optimizer state to the device once, then launches the kernels of
``fastbp.kernels.cuda`` step after step with no copies in between: the batch
is gathered on the device through the epoch's permutation, and each step's
loss, metrics and a flag for a non-finite gradient go to a slot of a device
array. The host reads them, and the parameters for the callbacks, once per
epoch or per progress update. The ops are the lowered network's arrays, read
on the host; kernels are chosen by the registry's codes through the CUDA
kernels' ``*_code_*`` dispatchers, exactly as the CPU loop calls the CPU ones.

The rules are the CPU's: a dense layer's dz goes to a scratch buffer, and a
step whose loss or gradient is not finite must not have happened. Divergence
is found when the host reads the slots; the trainer then restores the
parameters and optimizer state saved at the start of the epoch and replays
the batches before the failing one, so the model is left as it was before the
failing step.
"""
import numpy as np

from ..kernels import registry as R
from ..lowering import param_views


def require_gpu():
    """Import the CUDA kernels and check for a usable device, or raise a clear error."""
    try:
        from ..kernels.cuda._numba_cuda import SIMULATOR, cuda
    except ImportError as err:
        raise RuntimeError(f"device='cuda' needs numba-cuda: pip install 'fastbp[cuda]' ({err})") from err
    if not SIMULATOR and not cuda.is_available():
        raise RuntimeError("device='cuda' needs an NVIDIA GPU with a working CUDA driver; none is usable "
                           "here (numba.cuda.is_available() is False). Use device='cpu'.")
    return cuda


class _Network:
    """Device copies of a model's parameters, and activation buffers for one batch size."""

    def __init__(self, model, lowered, cap, training):
        self.cuda = cuda = require_gpu()
        from ..kernels.cuda import activations, dense, dropout, losses, norm, optim, training as steps

        self.A, self.D, self.DR, self.L, self.O, self.T = activations, dense, dropout, losses, optim, steps
        self.NM = norm
        self.lowered, self.net = lowered, lowered.net
        dtype = model.dtype
        self.theta = cuda.to_device(model.theta)
        self.params = param_views(self.theta, lowered.shapes)
        # BatchNorm's running statistics (one element where there are none: no zero-size copy).
        self.running = cuda.to_device(model.buffers if model.buffers.size else np.zeros(1, dtype))
        self.cap = cap
        self.saved = [cuda.device_array(max(3 * w, 2 * cap), dtype=dtype)
                      for kind, w in zip(self.net.kinds, lowered.widths)
                      if kind in (R.OP_BATCHNORM, R.OP_LAYERNORM)]
        self.no_param = cuda.device_array(0, dtype=dtype)
        widths = [lowered.n_features] + lowered.widths
        self.acts = [cuda.device_array((cap, w), dtype=dtype) for w in widths]
        if training:
            self.masks = [cuda.device_array((cap, w), dtype=dtype) if kind == R.OP_DROPOUT else None
                          for kind, w in zip(self.net.kinds, lowered.widths)]
            self.grad = cuda.device_array(model.theta.size, dtype=dtype)
            self.grads = param_views(self.grad, lowered.shapes)
            self.dacts = [cuda.device_array((cap, w), dtype=dtype) for w in widths]
            self.scratch = cuda.device_array(cap * max(lowered.widths), dtype=dtype)
            self.normgrad = cuda.device_array(max(2 * lowered.norm_width, 1), dtype=dtype)
        self.probs = cuda.device_array((cap, lowered.n_outputs), dtype=dtype)
        self.no_dx = cuda.device_array((0, 0), dtype=dtype)

    def forward(self, nb, training, seed):
        """Run every op on the first nb rows of acts[0]; returns the output view."""
        net = self.net
        for i, kind in enumerate(net.kinds):
            x, out = self.acts[i][:nb], self.acts[i + 1][:nb]
            code, alpha = int(net.codes[i]), float(net.alphas[i])
            if kind == R.OP_DENSE:
                w, b = self.params[net.params_of[i]]
                self.D.dense_act_forward(out, x, w, b, code, alpha)
            elif kind == R.OP_ACTIVATION:
                self.A.activation_code_forward(out, x, code, alpha)
            elif kind in (R.OP_BATCHNORM, R.OP_LAYERNORM):
                self._norm_forward(i, x, out, training)
            elif training:
                # Same per-step, per-layer seed as the CPU loop: the same masks.
                self.DR.dropout_forward(out, self.masks[i][:nb], x, float(net.rates[i]), seed + i)
            else:
                self.A.identity_forward(out, x)
        return self.acts[-1][:nb]

    def _part(self, flat, at, width):
        return flat[at:at + width] if at >= 0 else self.no_param

    def _norm_forward(self, i, x, out, training):
        """Norm op i and its fused activation, as ``_cpu_loop._norm_forward``: statistics to the op's
        saved buffer."""
        nb, width = x.shape
        row = self.net.norms[i]
        gamma = self._part(self.theta, row[R.NORM_GAMMA], width)
        beta = self._part(self.theta, row[R.NORM_BETA], width)
        saved, eps = self.saved[row[R.NORM_SAVED]], float(self.net.norm_consts[i, 0])
        code, alpha = int(self.net.codes[i]), float(self.net.alphas[i])
        if self.net.kinds[i] == R.OP_LAYERNORM:
            self.NM.layernorm_act_forward(out, saved[:nb], saved[self.cap:self.cap + nb], x, gamma, beta, eps,
                                          code, alpha)
        elif training:
            self.NM.batchnorm_act_forward(out, saved[:width], saved[width:2 * width],
                                          saved[2 * width:3 * width], x, gamma, beta, eps, code, alpha)
        else:
            at = row[R.NORM_RUNNING]
            self.NM.batchnorm_act_inference(out, x, self.running[at:at + width],
                                            self.running[at + width:at + 2 * width], gamma, beta, eps, code,
                                            alpha)

    def _norm_backward(self, i, nb):
        """Backward of norm op i and its fused activation into grad (scratch without affine) and its
        input gradient."""
        x, out, dout = self.acts[i][:nb], self.acts[i + 1][:nb], self.dacts[i + 1][:nb]
        width = x.shape[1]
        dx = self.dacts[i][:nb] if i > 0 else self.no_dx
        row = self.net.norms[i]
        g, b = row[R.NORM_GAMMA], row[R.NORM_BETA]
        dgamma = self.grad[g:g + width] if g >= 0 else self.normgrad[:width]
        dbeta = self.grad[b:b + width] if b >= 0 else self.normgrad[width:2 * width]
        gamma, beta = self._part(self.theta, g, width), self._part(self.theta, b, width)
        saved = self.saved[row[R.NORM_SAVED]]
        code, alpha = int(self.net.codes[i]), float(self.net.alphas[i])
        if self.net.kinds[i] == R.OP_LAYERNORM:
            self.NM.layernorm_act_backward(dx, dgamma, dbeta, dout, out, x, saved[:nb],
                                           saved[self.cap:self.cap + nb], gamma, beta, code, alpha)
        else:
            self.NM.batchnorm_act_backward(dx, dgamma, dbeta, dout, out, x, saved[:width],
                                           saved[2 * width:3 * width], gamma, beta, code, alpha)

    def update_running(self, nb):
        """BatchNorm's running statistics after a training step, as ``_cpu_loop.update_running``."""
        net = self.net
        for i, kind in enumerate(net.kinds):
            if kind == R.OP_BATCHNORM:
                width = int(net.layout[i + 1] - net.layout[i])
                at = net.norms[i, R.NORM_RUNNING]
                saved = self.saved[net.norms[i, R.NORM_SAVED]]
                self.NM.batchnorm_update_running(self.running[at:at + width],
                                                 self.running[at + width:at + 2 * width], saved[:width],
                                                 saved[width:2 * width], float(net.norm_consts[i, 1]), nb)

    def backward(self, nb):
        """Backpropagate dacts[-1][:nb] through every op into grad, dz through scratch."""
        net = self.net
        for i in range(len(net.kinds) - 1, -1, -1):
            dout, out, x = self.dacts[i + 1][:nb], self.acts[i + 1][:nb], self.acts[i][:nb]
            kind, code, alpha = net.kinds[i], int(net.codes[i]), float(net.alphas[i])
            if kind == R.OP_DENSE:
                p = net.params_of[i]
                dw, db = self.grads[p]
                dx = self.dacts[i][:nb] if i > 0 else self.no_dx
                dz = self.scratch[:dout.size].reshape(dout.shape)
                self.D.dense_act_backward(dx, dw, db, dz, dout, out, x, self.params[p][0], code, alpha)
            elif kind in (R.OP_BATCHNORM, R.OP_LAYERNORM):
                self._norm_backward(i, nb)  # before the i == 0 exit: dgamma and dbeta still count
            elif i == 0:
                break  # nothing upstream needs the input gradient
            elif kind == R.OP_ACTIVATION:
                self.A.activation_code_backward(self.dacts[i][:nb], dout, out, x, code, alpha)
            else:
                self.DR.dropout_backward(self.dacts[i][:nb], dout, self.masks[i][:nb])


class _DeviceData:
    """X and the targets of one data set, on the device."""

    def __init__(self, cuda, X, data):
        self.n = len(X)
        self.X = cuda.to_device(X)
        # Zero-size host arrays still need a device twin of the right dtype and rank.
        self.labels = cuda.to_device(data.labels if data.labels.size else np.zeros(1, np.int64))
        self.target = cuda.to_device(data.target if data.target.size else np.zeros((1, 1), X.dtype))
        self.weight = cuda.to_device(data.weight if data.weight.size else np.zeros(1, X.dtype))
        self.has_labels, self.has_weight = data.labels.size > 0, data.weight.size > 0
        self.weight_host = data.weight


class Trainer:
    """The CUDA backend of Sequential.fit: the interface and rules of ``cpu.Trainer``."""

    def __init__(self, model, lowered, X, data, batch_size, seed):
        self.model, self.batch_size, self.seed = model, batch_size, seed
        self.net = _Network(model, lowered, batch_size, training=True)
        cuda = self.cuda = self.net.cuda
        self.data = _DeviceData(cuda, X, data)
        self.n_batches = -(-self.data.n // batch_size)
        dtype = model.dtype
        self.labels = cuda.device_array(batch_size, dtype=np.int64)
        self.target = cuda.device_array((batch_size, self.data.target.shape[1]), dtype=dtype)
        self.weight = cuda.device_array(batch_size, dtype=dtype)
        self.losses = cuda.device_array(self.n_batches, dtype=dtype)
        self.nonfinite = cuda.device_array(self.n_batches, dtype=np.int32)
        self.metrics = cuda.device_array((self.n_batches, 3), dtype=np.float64)
        self.states = [cuda.to_device(s) for s in model.optimizer.state]
        self.order = None
        self.done = 0

    def begin_epoch(self, order, hyper):
        """Upload the epoch's permutation and snapshot parameters and state for a replay."""
        self.order_host = order.copy()
        self.order = self.cuda.to_device(order)
        self.hyper = hyper
        self.nonfinite.copy_to_device(np.zeros(self.n_batches, dtype=np.int32))
        self.snapshot = [a.copy_to_host() for a in self._model_arrays()]
        self.steps_at_start = self.model.optimizer.steps
        self.tracked_at_start = self.model.batches_tracked

    def _model_arrays(self):
        """What a training step changes on the device: parameters, optimizer state, running statistics."""
        return [self.net.theta] + self.states + [self.net.running]

    def _gather(self, start, nb):
        T, data = self.net.T, self.data
        T.gather_rows(self.net.acts[0][:nb], data.X, self.order, start)
        labels = self.labels[:nb] if data.has_labels else self.labels[:0]
        target = self.target[:nb] if not data.has_labels else self.target[:0]
        weight = self.weight[:nb] if data.has_weight else self.weight[:0]
        if data.has_labels:
            T.gather(labels, data.labels, self.order, start)
        else:
            T.gather_rows(target, data.target, self.order, start)
        if data.has_weight:
            T.gather(weight, data.weight, self.order, start)
        return labels, target, weight

    def run(self, first, last):
        net, opt = self.net, self.model.optimizer
        n_ops, code, param = len(net.net.kinds), self.model.loss.kind, self.model.loss.spec().param
        state2 = self.states[-1]
        for batch in range(first, last):
            start = batch * self.batch_size
            nb = min(self.batch_size, self.data.n - start)
            labels, target, weight = self._gather(start, nb)
            out = net.forward(nb, True, self.seed + opt.steps * (n_ops + 1))
            probs = net.probs[:nb]
            net.L.loss_code_forward(self.losses[batch:batch + 1], probs, out, labels, target, weight, code, param)
            net.L.loss_code_backward(net.dacts[-1][:nb], probs, out, labels, target, weight, code, param)
            net.backward(nb)
            net.T.mark_nonfinite(self.nonfinite, batch, net.grad)
            opt.steps += 1
            net.O.optimizer_code_update(net.theta, net.grad, self.states[0], state2, net.net.n_weights,
                                        opt.kind, self.hyper, opt.steps)
            # fit refuses training batches of one row where there is BatchNorm.
            net.update_running(nb)
            net.T.batch_metrics(self.metrics, batch, out, labels, target, weight, code)
        self.model.batches_tracked += last - first
        self.done = last
        return R.OK, last

    def running_loss(self):
        losses = self.losses[:self.done].copy_to_host().astype(np.float64)
        return float(np.mean(losses)) if self.done else float("nan")

    def _first_bad_step(self):
        """(status, batch) of the epoch's first non-finite loss or gradient, or (OK, None)."""
        losses = self.losses.copy_to_host()
        flags = self.nonfinite.copy_to_host()
        bad_loss = ~np.isfinite(losses)
        bad = np.flatnonzero(bad_loss | (flags != 0))
        if not bad.size:
            return R.OK, None, losses.astype(np.float64)
        b = int(bad[0])
        return (R.NONFINITE_LOSS if bad_loss[b] else R.NONFINITE_GRADIENT), b, None

    def end_epoch(self, stats):
        """Read the epoch's losses, flags and metrics; on divergence restore and replay, then report."""
        status, stopped, losses = self._first_bad_step()
        if status != R.OK:
            self._restore_and_replay(stopped)
            return status, stopped
        metrics = self.metrics.copy_to_host()
        n, bs = self.data.n, self.batch_size
        starts = np.arange(self.n_batches) * bs
        if self.data.has_weight:
            totals = np.add.reduceat(self.data.weight_host[self.order_host].astype(np.float64), starts)
        else:
            totals = np.minimum(bs, n - starts).astype(np.float64)
        stats[R.S_LOSS] = float(np.dot(losses, totals))
        stats[R.S_WEIGHT] = float(totals.sum())
        stats[R.S_COUNT] = float(n)
        stats[R.S_CORRECT], stats[R.S_SQUARED], stats[R.S_ABSOLUTE] = metrics.sum(axis=0)
        stats[R.S_ELEMENTS] = stats[R.S_WEIGHT] * self.model.n_outputs
        self.sync_parameters()
        return R.OK, self.n_batches

    def _restore_and_replay(self, stopped):
        for dst, src in zip(self._model_arrays(), self.snapshot):
            dst.copy_to_device(src)
        self.model.optimizer.steps = self.steps_at_start
        self.model.batches_tracked = self.tracked_at_start
        self.run(0, stopped)
        self.sync_parameters()

    def sync_parameters(self):
        self.net.theta.copy_to_host(self.model.theta)
        if self.model.buffers.size:
            self.net.running.copy_to_host(self.model.buffers)
        for host, device in zip(self.model.optimizer.state, self.states):
            device.copy_to_host(host)


def outputs(model, lowered, X, batch_size):
    """The network's outputs on X (inference mode), computed on the device."""
    net = _Network(model, lowered, batch_size, training=False)
    d_x = net.cuda.to_device(X)
    out = np.empty((len(X), lowered.n_outputs), dtype=model.dtype)
    for start in range(0, len(X), batch_size):
        nb = min(batch_size, len(X) - start)
        net.acts[0][:nb].copy_to_device(d_x[start:start + nb])
        out[start:start + nb] = net.forward(nb, False, 0).copy_to_host()
    return out


def evaluate(model, lowered, X, data, batch_size):
    """The S_* sums on (X, data): outputs from the device, loss and metrics by the CPU's code."""
    from ._cpu_loop import STATS
    from ..kernels.cpu.losses import loss_code_forward

    out = outputs(model, lowered, X, batch_size)
    probs = np.zeros(out.shape if model.loss.kind == R.LOSS_SCE else (0, 0), dtype=model.dtype)
    loss = np.zeros(1, dtype=model.dtype)
    stats = np.zeros(R.N_STATS)
    spec = model.loss.spec()
    loss_code_forward(loss, probs, out, data.labels, data.target, data.weight, spec.code, spec.param)
    STATS[model.loss.kind](stats, loss[0], out, data.labels, data.target, data.weight, model.loss.kind)
    return stats
