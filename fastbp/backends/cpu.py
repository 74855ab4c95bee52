"""The CPU backend: ``fit``'s epochs, ``predict`` and ``evaluate`` through the compiled loop.

The interface both backends implement (``cuda.py`` is the other):

- ``Trainer(model, lowered, X, data, batch_size, seed)`` holds every buffer of
  one fit; ``begin_epoch(order, hyper)`` takes the epoch's permutation and
  hyperparameters; ``run(first, last)`` trains on that range of batches and
  returns ``(status, batch)`` (a registry status code and where it stopped);
  ``running_loss()`` is the mean loss so far in the epoch; ``end_epoch(stats)``
  fills the registry's S_* sums and returns ``(status, batch)`` like run.
- ``outputs(model, lowered, X, batch_size)``: the network's outputs on X.
- ``evaluate(model, lowered, X, data, batch_size)``: the S_* sums on (X, data).

Both stop before the update of a step whose loss or gradient is not finite,
and leave parameters and optimizer state as they were before that step.
"""
import numpy as np

from ..kernels import registry
from ..lowering import Optimizer, Targets, check_norm_batches
from . import _cpu_loop, _kernel_tables, _warm


def _batch_targets(data, cap, dtype):
    """Per-batch buffers shaped like the data's targets, for ``cap`` rows."""
    return Targets(np.zeros(cap if data.labels.size else 0, dtype=np.int64),
                   np.zeros((cap, data.target.shape[1]), dtype=dtype),
                   np.zeros(cap if data.weight.size else 0, dtype=dtype))


class Trainer:
    """Buffers for one fit on the CPU, around ``_cpu_loop.train_batches``."""

    def __init__(self, model, lowered, X, data, batch_size, seed):
        self.model, self.X, self.data, self.seed = model, X, data, seed
        self.net = lowered.net
        self._loop_net = None
        self.n_batches = -(-len(X) // batch_size)
        self.ws = lowered.workspace(batch_size, model.dtype, True, model.loss.kind, model.buffers)
        self.batch = _batch_targets(data, batch_size, model.dtype)
        opt = model.optimizer
        self.opt = Optimizer(model.theta, np.zeros_like(model.theta), opt.state[0], opt.state[-1], opt.kind,
                             np.zeros(registry.N_HYPER), np.zeros(1, dtype=np.int64))
        self.stats = np.zeros(registry.N_STATS)
        self.order = np.arange(len(X), dtype=np.int64)

    def begin_epoch(self, order, hyper):
        self.order = order
        self.opt.hyper[:] = hyper
        self.stats[:] = 0.0

    def run(self, first, last):
        optimizer = self.model.optimizer
        self.opt.counters[0] = optimizer.steps
        status, stopped = _cpu_loop.train_batches(self.X, self.data, self.order, first, last, self.loop_net(),
                                                  self.ws, self.batch, self.opt, self.model.loss.spec(),
                                                  self.seed, self.stats)
        # PyTorch's num_batches_tracked: the training steps that happened.
        self.model.batches_tracked += int(self.opt.counters[0]) - optimizer.steps
        optimizer.steps = int(self.opt.counters[0])
        return status, stopped

    def loop_net(self):
        """The network with its kernel tables (``_kernel_tables.with_kernels``): made at the first run,
        so that compiling the kernels happens under ``_first_run``'s note."""
        if self._loop_net is None:
            self._loop_net = _kernel_tables.with_kernels(self.net, self.model.dtype, *_codes(self.model),
                                                         ahead=self._compile_loop if self.compile_ahead else None)
        return self._loop_net

    # On a cold cache, the loop compiles here while worker processes compile the dense kernels
    # (``_kernel_tables.with_kernels``, ``_warm``). Not under MPI, whose ranks share the cores already.
    compile_ahead = True

    def _compile_loop(self, net):
        """Compile ``train_batches`` for this fit's argument types, ``net`` holding the tables; and
        ``evaluate_batches``, which fit's validation and ``evaluate`` call next (an inference
        workspace has the training one's types), while the workers still compile kernels."""
        loss = self.model.loss.spec()
        _compiled(_cpu_loop.train_batches, (self.X, self.data, self.order, 0, 0, net, self.ws, self.batch, self.opt,
                                            loss, self.seed, self.stats))
        _compiled(_cpu_loop.evaluate_batches, (self.X, self.data, net, self.ws, self.model.theta, loss, self.stats))

    def pending(self):
        """What the first run compiles: ((table, field) or "loop", single-core seconds) of each
        unit neither compiled in this process nor in the cache (``_first_run``)."""
        loss, optimizer = _codes(self.model)
        found = _kernel_tables.pending(self.net, self.model.dtype, loss, optimizer)
        args = (self.X, self.data, self.order, 0, 0, _kernel_tables.placeholder_net(self.net), self.ws, self.batch,
                self.opt, self.model.loss.spec(), self.seed, self.stats)
        loop = _cpu_loop.train_batches
        if not _warm.cached(loop, tuple(loop.typeof_pyval(a) for a in args)):
            found.append(("loop", _kernel_tables.LOOP_SECONDS))
        return found

    def running_loss(self):
        return self.stats[registry.S_LOSS] / max(self.stats[registry.S_WEIGHT], 1e-300)

    def end_epoch(self, stats):
        stats[:] = self.stats
        return registry.OK, self.n_batches


def _compiled(dispatcher, args):
    """The compiled function for these arguments' types (compiling or loading it now).

    Called directly it skips numba's per-call type dispatch, which walks every array of
    the namedtuples: about 18 us a call on the small network, measured (under load).
    """
    return dispatcher.compile(tuple(dispatcher.typeof_pyval(a) for a in args))


class DistributedTrainer(Trainer):
    """``Trainer`` for data-parallel training over an MPI communicator (``fastbp._mpi``).

    Every step: ``_cpu_loop.share_gradient`` (compiled) on this rank's rows of
    the global batch, one in-place Allreduce of the flat gradient (which ends
    in a flag slot: 1 where a rank's loss was not finite), then
    ``_cpu_loop.apply_update`` (compiled) on the sum: every rank takes the
    same decision on the same numbers. MPI cannot be called from inside the
    compiled loop (numba-mpi would, but it is GPL), hence one Python round per
    step. The compiled code allocates nothing; passing the buffers in from
    Python costs numba one small record per array (NRT counts 51 per step on
    a two-layer network), no array data.
    """

    compile_ahead = False

    def __init__(self, model, lowered, X, data, batch_size, seed, comm):
        super().__init__(model, lowered, X, data, batch_size, seed)
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.batch_size = batch_size
        # The gradient and the flag slot in one buffer: one collective per step.
        self.reduced = np.zeros(model.theta.size + 1, dtype=model.dtype)
        self.opt = self.opt._replace(grad=self.reduced[:-1])
        self.share = np.zeros(2, dtype=np.int64)
        self._share_fn = self._update_fn = None

    def _set_share(self, nb):
        """Rows [lo, hi) of a global batch of nb rows for this rank: contiguous, sizes differing by at most one."""
        self.share[0] = nb * self.rank // self.size
        self.share[1] = nb * (self.rank + 1) // self.size

    def _share_args(self, start, nb):
        return (self.X, self.data, self.order, start, nb, self.share, self.loop_net(), self.ws, self.batch,
                self.opt, self.model.loss.spec(), self.seed)

    def _update_args(self):
        return (self.loop_net(), self.ws, self.batch, self.opt, int(self.share[1] - self.share[0]),
                self.model.loss.spec(), self.stats)

    def run(self, first, last):
        from mpi4py import MPI

        if self._share_fn is None:
            # The first call (fit's compile-ahead one, ``_first_run``) compiles or loads both halves.
            self._share_fn = _compiled(_cpu_loop.share_gradient, self._share_args(0, 0))
            self._update_fn = _compiled(_cpu_loop.apply_update, self._update_args())
        optimizer = self.model.optimizer
        self.opt.counters[0] = optimizer.steps
        n, cap, flag = len(self.order), self.batch_size, self.reduced.size - 1
        for b in range(first, last):
            start = b * cap
            nb = min(cap, n - start)
            self._set_share(nb)
            status = self._share_fn(*self._share_args(start, nb))
            self.reduced[flag] = status != registry.OK
            self.comm.Allreduce(MPI.IN_PLACE, self.reduced, op=MPI.SUM)
            status = registry.NONFINITE_LOSS if self.reduced[flag] != 0 else self._update()
            if status != registry.OK:
                optimizer.steps = int(self.opt.counters[0])
                return status, b
        optimizer.steps = int(self.opt.counters[0])
        return registry.OK, last

    def _update(self):
        """The update with the summed gradient, and this rank's rows' loss and metrics."""
        return self._update_fn(*self._update_args())

    def end_epoch(self, stats):
        from mpi4py import MPI

        stats[:] = self.stats
        self.comm.Allreduce(MPI.IN_PLACE, stats, op=MPI.SUM)
        return registry.OK, self.n_batches


def _codes(model):
    """The registry codes of the model's loss and optimizer (None before ``compile``): they pick the
    loss and update kernels of the loop's kernel table."""
    return (model.loss.kind if model.loss is not None else None,
            model.optimizer.kind if model.optimizer is not None else None)


def _writable(array):
    """``array``, or a copy where it is read-only (a memory-mapped file, a joblib load): the loops'
    kernels are compiled for writable arrays only (numba types a read-only array apart), and
    inference only reads the parameters."""
    return array if array.flags.writeable else np.array(array)


def outputs(model, lowered, X, batch_size):
    """The network's outputs (inference mode) on X, (n_samples, O)."""
    ws = lowered.workspace(batch_size, model.dtype, False, -1, _writable(model.buffers))
    out = np.empty((len(X), lowered.n_outputs), dtype=model.dtype)
    net = _kernel_tables.with_kernels(lowered.net, model.dtype, *_codes(model))
    _cpu_loop.predict_batches(out, X, net, ws, _writable(model.theta))
    return out


def compile_outputs(model, lowered, net, X, batch_size):
    """Compile (or load) ``predict_batches`` for ``outputs``'s argument types, ``net`` holding the
    tables (``fastbp compile``: zero addresses)."""
    ws = lowered.workspace(batch_size, model.dtype, False, -1, model.buffers)
    out = np.empty((len(X), lowered.n_outputs), dtype=model.dtype)
    _compiled(_cpu_loop.predict_batches, (out, X, net, ws, model.theta))


def evaluate(model, lowered, X, data, batch_size):
    """The S_* sums of loss and metrics (inference mode) on (X, data)."""
    ws = lowered.workspace(batch_size, model.dtype, False, model.loss.kind, _writable(model.buffers))
    stats = np.zeros(registry.N_STATS)
    net = _kernel_tables.with_kernels(lowered.net, model.dtype, *_codes(model))
    _cpu_loop.evaluate_batches(X, data, net, ws, _writable(model.theta), model.loss.spec(), stats)
    return stats


def objective(model, lowered, X, data):
    """``f(theta) -> (loss, grad)``: the full-batch loss of ``Sequential.objective`` on the CPU.

    One step of the compiled training loop with a zero learning rate: the same
    forward and backward code as fit, no second compiled entry point, and an
    SGD update that leaves theta exactly as it was. Dropout uses the masks of
    step 0 (seed 0) on every call.
    """
    n = len(X)
    check_norm_batches(lowered, n, n, "objective")
    # Training mode, as fit: BatchNorm normalizes with the batch's statistics. Its running
    # statistics move on a copy: f leaves the model's as they are.
    ws = lowered.workspace(n, model.dtype, True, model.loss.kind, model.buffers.copy())
    batch = _batch_targets(data, n, model.dtype)
    velocity = np.zeros_like(model.theta)
    opt = Optimizer(model.theta, np.zeros_like(model.theta), velocity, velocity, registry.OPT_SGD,
                    np.zeros(registry.N_HYPER), np.zeros(1, dtype=np.int64))
    order = np.arange(n, dtype=np.int64)
    stats = np.zeros(registry.N_STATS)
    net = _kernel_tables.with_kernels(lowered.net, model.dtype, model.loss.kind, registry.OPT_SGD)

    def f(theta):
        model.theta[...] = theta
        # The step count seeds the dropout masks: step 0 on every call, so that f is a
        # function of theta alone (the same masks for a line search or a gradient check).
        opt.counters[0] = 0
        status, _ = _cpu_loop.train_batches(X, data, order, 0, 1, net, ws, batch, opt, model.loss.spec(), 0,
                                            stats)
        if status != registry.OK:
            return np.inf, np.zeros(opt.grad.size)
        return float(ws.loss[0]), opt.grad.astype(np.float64)

    return f
