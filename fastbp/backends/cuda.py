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

from ..kernels import registry
from ..lowering import (activation_extent, dense_weight_and_bias, norm_affine, norm_affine_grads, norm_running,
                        norm_statistics)


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
    """Device copies of a model's parameters, and the workspace for batches of up to ``cap`` rows:
    the CPU loop's buffers (``Lowered.buffer_shapes``), on the device, cut where ``lowering`` says."""

    def __init__(self, model, lowered, cap, training):
        self.cuda = cuda = require_gpu()
        from ..kernels.cuda import activations, dense, dropout, losses, norm, optim, training as steps

        self.activations, self.dense, self.dropout, self.loss_kernels = activations, dense, dropout, losses
        self.norm, self.optim, self.steps = norm, optim, steps
        self.lowered, self.net = lowered, lowered.net
        dtype = model.dtype
        self.theta = cuda.to_device(model.theta)
        # BatchNorm's running statistics (one element where there are none: no zero-size copy).
        self.running = cuda.to_device(model.buffers if model.buffers.size else np.zeros(1, dtype))
        self.cap = cap
        # Every loss's kernels take the softmax probabilities, which only softmax cross-entropy fills.
        shapes = lowered.buffer_shapes(cap, training, registry.LOSS_SCE)
        for name, shape in shapes.items():
            setattr(self, name, cuda.device_array(shape, dtype=dtype))
        if training:
            self.grad = cuda.device_array(model.theta.size, dtype=dtype)
        self.no_dx = cuda.device_array((0, 0), dtype=dtype)
        # Each device view costs a Python object or two; a step of full batches asks for the same ones.
        self._cut_views = {}

    def rows(self, flat, i, nb):
        """The first nb rows of activation i (of its gradient, of its dropout mask) in ``flat``."""
        key = (id(flat), i, nb)
        if key not in self._cut_views:
            start, width = activation_extent(self.net.layout, self.cap, i)
            self._cut_views[key] = flat[start:start + nb * width].reshape(nb, width)
        return self._cut_views[key]

    def weight_and_bias(self, flat, i):
        """Dense op i's weight and bias in ``flat`` (theta or grad)."""
        key = (id(flat), i)
        if key not in self._cut_views:
            self._cut_views[key] = dense_weight_and_bias(flat, self.net.params, self.net.params_of[i])
        return self._cut_views[key]

    def forward(self, nb, training, seed):
        """Run every op on the first nb rows of activation 0; returns the output view."""
        net = self.net
        for i, kind in enumerate(net.kinds):
            x, out = self.rows(self.acts, i, nb), self.rows(self.acts, i + 1, nb)
            code, alpha = int(net.codes[i]), float(net.alphas[i])
            if kind == registry.OP_DENSE:
                self.dense.dense_act_forward(out, x, *self.weight_and_bias(self.theta, i), code, alpha)
            elif kind == registry.OP_ACTIVATION:
                self.activations.activation_code_forward(out, x, code, alpha)
            elif kind in (registry.OP_BATCHNORM, registry.OP_LAYERNORM):
                self._norm_forward(i, x, out, training)
            elif training:
                # Same per-step, per-layer seed as the CPU loop: the same masks.
                self.dropout.dropout_forward(out, self.rows(self.masks, i + 1, nb), x, float(net.rates[i]), seed + i)
            else:
                self.activations.identity_forward(out, x)
        return self.rows(self.acts, len(net.kinds), nb)

    def _norm_forward(self, i, x, out, training):
        """Norm op i and its fused activation, as ``_norm_ops``: statistics to the op's slab of saved."""
        nb, width = x.shape
        net = self.net
        gamma, beta = norm_affine(self.theta, net.norms, i, width)
        eps, code, alpha = float(net.norm_consts[i, 0]), int(net.codes[i]), float(net.alphas[i])
        if net.kinds[i] == registry.OP_LAYERNORM:
            mean, _, invstd = norm_statistics(self.saved, net.norms, i, nb)
            self.norm.layernorm_act_forward(out, mean, invstd, x, gamma, beta, eps, code, alpha)
        elif training:
            mean, var, invstd = norm_statistics(self.saved, net.norms, i, width)
            self.norm.batchnorm_act_forward(out, mean, var, invstd, x, gamma, beta, eps, code, alpha)
        else:
            running_mean, running_var = norm_running(self.running, net.norms, i, width)
            self.norm.batchnorm_act_inference(out, x, running_mean, running_var, gamma, beta, eps, code, alpha)

    def _norm_backward(self, i, nb):
        """Backward of norm op i and its fused activation into grad (scratch without affine) and its
        input gradient."""
        net = self.net
        x, out, dout = self.rows(self.acts, i, nb), self.rows(self.acts, i + 1, nb), self.rows(self.dacts, i + 1, nb)
        width = x.shape[1]
        dx = self.rows(self.dacts, i, nb) if net.input_grads[i] else self.no_dx
        dgamma, dbeta = norm_affine_grads(self.grad, self.normgrad, net.norms, i, width)
        gamma, beta = norm_affine(self.theta, net.norms, i, width)
        is_layernorm = net.kinds[i] == registry.OP_LAYERNORM
        mean, _, invstd = norm_statistics(self.saved, net.norms, i, nb if is_layernorm else width)
        code, alpha = int(net.codes[i]), float(net.alphas[i])
        backward = self.norm.layernorm_act_backward if is_layernorm else self.norm.batchnorm_act_backward
        backward(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, code, alpha)

    def update_running(self, nb):
        """BatchNorm's running statistics after a training step, as ``_norm_ops.batchnorm_update_running``."""
        net = self.net
        for i, kind in enumerate(net.kinds):
            if kind == registry.OP_BATCHNORM:
                width = int(net.layout[i + 1] - net.layout[i])
                running_mean, running_var = norm_running(self.running, net.norms, i, width)
                mean, var, _ = norm_statistics(self.saved, net.norms, i, width)
                self.norm.batchnorm_update_running(running_mean, running_var, mean, var,
                                                   float(net.norm_consts[i, 1]), nb)

    def backward(self, nb):
        """Backpropagate the gradient of the last activation into grad through the ops of the
        backward schedule (``lowering.backward_schedule``), dz through scratch."""
        net = self.net
        for i in net.backward_order:
            dout, out = self.rows(self.dacts, i + 1, nb), self.rows(self.acts, i + 1, nb)
            x = self.rows(self.acts, i, nb)
            kind, code, alpha = net.kinds[i], int(net.codes[i]), float(net.alphas[i])
            if kind == registry.OP_DENSE:
                dw, db = self.weight_and_bias(self.grad, i)
                dx = self.rows(self.dacts, i, nb) if net.input_grads[i] else self.no_dx
                dz = self.scratch[:dout.size].reshape(dout.shape)
                w, _ = self.weight_and_bias(self.theta, i)
                self.dense.dense_act_backward(dx, dw, db, dz, dout, out, x, w, code, alpha)
            elif kind in (registry.OP_BATCHNORM, registry.OP_LAYERNORM):
                self._norm_backward(i, nb)
            elif kind == registry.OP_ACTIVATION:
                self.activations.activation_code_backward(self.rows(self.dacts, i, nb), dout, out, x, code, alpha)
            else:
                self.dropout.dropout_backward(self.rows(self.dacts, i, nb), dout, self.rows(self.masks, i + 1, nb))


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
        T, data = self.net.steps, self.data
        T.gather_rows(self.net.rows(self.net.acts, 0, nb), data.X, self.order, start)
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
            net.loss_kernels.loss_code_forward(self.losses[batch:batch + 1], probs, out, labels, target, weight, code,
                                               param)
            net.loss_kernels.loss_code_backward(net.rows(net.dacts, n_ops, nb), probs, out, labels, target, weight,
                                                code, param)
            net.backward(nb)
            net.steps.mark_nonfinite(self.nonfinite, batch, net.grad)
            opt.steps += 1
            net.optim.optimizer_code_update(net.theta, net.grad, self.states[0], state2, net.net.n_weights,
                                            opt.kind, self.hyper, opt.steps)
            # fit refuses training batches of one row where there is BatchNorm.
            net.update_running(nb)
            net.steps.batch_metrics(self.metrics, batch, out, labels, target, weight, code)
        self.model.batches_tracked += last - first
        self.done = last
        return registry.OK, last

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
            return registry.OK, None, losses.astype(np.float64)
        b = int(bad[0])
        return (registry.NONFINITE_LOSS if bad_loss[b] else registry.NONFINITE_GRADIENT), b, None

    def end_epoch(self, stats):
        """Read the epoch's losses, flags and metrics; on divergence restore and replay, then report."""
        status, stopped, losses = self._first_bad_step()
        if status != registry.OK:
            self._restore_and_replay(stopped)
            return status, stopped
        metrics = self.metrics.copy_to_host()
        n, bs = self.data.n, self.batch_size
        starts = np.arange(self.n_batches) * bs
        if self.data.has_weight:
            totals = np.add.reduceat(self.data.weight_host[self.order_host].astype(np.float64), starts)
        else:
            totals = np.minimum(bs, n - starts).astype(np.float64)
        stats[registry.S_LOSS] = float(np.dot(losses, totals))
        stats[registry.S_WEIGHT] = float(totals.sum())
        stats[registry.S_COUNT] = float(n)
        stats[registry.S_CORRECT], stats[registry.S_SQUARED], stats[registry.S_ABSOLUTE] = metrics.sum(axis=0)
        stats[registry.S_ELEMENTS] = stats[registry.S_WEIGHT] * self.model.n_outputs
        self.sync_parameters()
        return registry.OK, self.n_batches

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
        net.rows(net.acts, 0, nb).copy_to_device(d_x[start:start + nb])
        out[start:start + nb] = net.forward(nb, False, 0).copy_to_host()
    return out


def evaluate(model, lowered, X, data, batch_size):
    """The S_* sums on (X, data): outputs from the device, loss and metrics by the CPU's code."""
    from ._metrics import STATS
    from ..kernels.cpu.losses import loss_code_forward

    out = outputs(model, lowered, X, batch_size)
    probs = np.zeros(out.shape if model.loss.kind == registry.LOSS_SCE else (0, 0), dtype=model.dtype)
    loss = np.zeros(1, dtype=model.dtype)
    stats = np.zeros(registry.N_STATS)
    spec = model.loss.spec()
    loss_code_forward(loss, probs, out, data.labels, data.target, data.weight, spec.code, spec.param)
    STATS[model.loss.kind](stats, loss[0], out, data.labels, data.target, data.weight, model.loss.kind)
    return stats
