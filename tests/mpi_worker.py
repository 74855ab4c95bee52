"""Run by tests/test_mpi.py under ``mpiexec -n N python tests/mpi_worker.py SCENARIO [DIR]``.

Every rank runs the scenario; rank 0 also trains the same model in one process
(no communicator) and compares. A check that fails raises, and the job exits
non-zero (an exception on one rank aborts every rank). "OK <scenario>" on
rank 0's stdout means every check passed.
"""
import hashlib
import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import fastbp
from fastbp.backends.cpu import DistributedTrainer
from fastbp.callbacks import Callback

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()


def data(n=103, n_features=5, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features))
    return X, rng.integers(0, n_classes, n), rng.uniform(0.2, 2.0, n)


def build(optimizer, seed=1, n_out=3, activation="tanh", hidden=(7,), dropout=0.0):
    sizes = (5,) + hidden
    layers = []
    for i, o in zip(sizes, sizes[1:]):
        layers += [fastbp.Dense(i, o, activation=activation)] + ([fastbp.Dropout(dropout)] if dropout else [])
    model = fastbp.Sequential(layers + [fastbp.Dense(sizes[-1], n_out)], dtype="float64", seed=seed)
    return model.compile("softmax_cross_entropy" if n_out > 1 else "mse", optimizer)


def assert_close(a, b, what):
    scale = max(np.max(np.abs(b)), 1e-300)
    err = np.max(np.abs(np.asarray(a) - np.asarray(b))) / scale
    if not err <= 1e-9:
        raise AssertionError(f"{what}: relative difference {err:g} > 1e-9")


def assert_same_on_every_rank(array, what):
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    digests = comm.allgather(digest)
    if len(set(digests)) != 1:
        raise AssertionError(f"{what} differs between ranks: {digests}")


class StepCheck:
    """Wraps the trainer's update: after every step, the parameters are bit-identical on every rank."""

    def __init__(self, model):
        self.model, self.steps, self.original = model, 0, DistributedTrainer._update

    def __call__(self, trainer):
        status = self.original(trainer)
        assert_same_on_every_rank(self.model.theta, f"theta after step {self.steps + 1}")
        self.steps += 1
        return status


class Logs(Callback):
    """Every epoch's logs, to compare between ranks (EarlyStopping decides on them)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs):
        self.seen.append(dict(logs))


def equal(tmp):
    """Each case trained over the communicator and in one process: same parameters and logs."""
    X, y, w = data()
    np.save(os.path.join(tmp, "X.npy"), X)
    cases = [
        # (name, optimizer, fit arguments): 103 rows in batches of 10 leave a last batch of 3,
        # which 2 or 3 ranks share unevenly; a batch of 4 on 3 ranks gives shares 1, 1, 2.
        ("sgd", lambda: fastbp.SGD(lr=0.05, momentum=0.9), dict(batch_size=10)),
        ("weighted-adam", lambda: fastbp.Adam(lr=0.01), dict(batch_size=4, sample_weight=w)),
        ("class-weight-schedule", lambda: fastbp.SGD(lr=fastbp.StepDecay(0.1, 1, 0.5)),
         dict(batch_size=16, class_weight="balanced", validation_split=0.25)),
        ("memmap", lambda: fastbp.Adam(lr=0.01), dict(batch_size=10, sample_weight=w)),
        # Batches of 2 on 3 ranks: one rank has no rows in every batch (the last has one row).
        ("empty-shares", lambda: fastbp.SGD(lr=0.02, momentum=0.5), dict(batch_size=2, sample_weight=w)),
        ("large-message", lambda: fastbp.Adam(lr=0.001), dict(batch_size=10)),
        # Masks drawn from each row's place in the global batch: the same on any number of ranks.
        ("dropout", lambda: fastbp.SGD(lr=0.05, momentum=0.9), dict(batch_size=10)),
    ]
    # 103,000 parameters: an 824 kB gradient, which MPI reduces with its large-message algorithm.
    shapes = {"large-message": (400, 250), "dropout": (9, 6)}
    for name, optimizer, kwargs in cases:
        features = np.load(os.path.join(tmp, "X.npy"), mmap_mode="r") if name == "memmap" else X
        hidden = shapes.get(name, (7,))
        rate = 0.3 if name == "dropout" else 0.0
        model, logs = build(optimizer(), hidden=hidden, dropout=rate), Logs()
        # Each rank would write its own file; rank 0 alone does.
        checkpoint = fastbp.callbacks.ModelCheckpoint(os.path.join(tmp, f"{name}-{rank}.npz"), monitor="loss")
        check = StepCheck(model)
        DistributedTrainer._update = lambda trainer: check(trainer)
        try:
            history = model.fit(features, y, epochs=3, seed=2, verbose=0, comm=comm, callbacks=[logs, checkpoint],
                                **kwargs)
        finally:
            DistributedTrainer._update = check.original
        if check.steps != 3 * -(-int(103 * (1 - kwargs.get("validation_split", 0))) // kwargs["batch_size"]):
            raise AssertionError(f"{name}: {check.steps} steps checked")
        comm.Barrier()
        written = sorted(f for f in os.listdir(tmp) if f.startswith(name + "-"))
        if written != [f"{name}-0.npz"]:
            raise AssertionError(f"{name}: ModelCheckpoint wrote {written}; expected rank 0's alone")
        assert_same_on_every_rank(model.theta, f"{name}: theta")
        assert_same_on_every_rank(model.optimizer.state[0], f"{name}: optimizer state")
        every = comm.allgather(logs.seen)
        if any(seen != every[0] for seen in every):
            raise AssertionError(f"{name}: the callbacks saw different logs on different ranks")
        if rank == 0:
            single = build(optimizer(), hidden=hidden, dropout=rate)
            expected = single.fit(X, y, epochs=3, seed=2, verbose=0, **kwargs)
            assert_close(model.theta, single.theta, f"{name}: theta against one process")
            for key, values in expected.history.items():
                if key not in ("seconds", "samples_per_second", "compile_seconds"):
                    assert_close(history.history[key], values, f"{name}: history {key!r}")


def diverge(tmp):
    """A huge row on one rank's share: every rank stops at the same step, the model as before it."""
    X, _, y = data()
    X[37] = 1e300  # its squared error overflows: a non-finite loss on the rank whose share holds it
    error = None
    model = build(fastbp.SGD(lr=0.05), n_out=1, activation="relu")
    try:
        model.fit(X, y, epochs=2, batch_size=10, seed=3, verbose=0, comm=comm)
    except fastbp.DivergenceError as err:
        error = err
    if error is None:
        raise AssertionError("no DivergenceError")
    assert_same_on_every_rank(np.array([error.epoch, error.batch]), "where training stopped")
    assert_same_on_every_rank(model.theta, "theta after the divergence")
    if rank == 0:
        single = build(fastbp.SGD(lr=0.05), n_out=1, activation="relu")
        try:
            single.fit(X, y, epochs=2, batch_size=10, seed=3, verbose=0)
            raise AssertionError("one process did not diverge")
        except fastbp.DivergenceError as err:
            if (err.epoch, err.batch) != (error.epoch, error.batch):
                raise AssertionError(f"stopped at {(error.epoch, error.batch)}, one process at "
                                     f"{(err.epoch, err.batch)}")
        assert_close(model.theta, single.theta, "theta against one process")


class Fail(Callback):
    def on_epoch_end(self, epoch, logs):
        if rank == size - 1 and epoch == 1:
            if sys.argv[1] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("a failure on the last rank")


def fail(tmp):
    """The last rank fails after epoch 2; the others go on into epoch 3's collectives."""
    X, y, _ = data()
    build(fastbp.SGD(lr=0.05)).fit(X, y, epochs=100, batch_size=10, seed=3, verbose=0, comm=comm,
                                   callbacks=[Fail()])


def estimator(tmp):
    """MLPClassifier.fit(comm=...) equals its one-process fit; an lbfgs one says it cannot."""
    X, y, w = data()
    kwargs = dict(hidden_layer_sizes=(6,), solver="adam", batch_size=10, max_iter=4, random_state=0,
                  early_stopping=True, validation_fraction=0.2, n_iter_no_change=10)
    clf = fastbp.MLPClassifier(**kwargs).fit(X, y, sample_weight=w, comm=comm)
    flat = np.concatenate([a.ravel() for a in clf.coefs_ + clf.intercepts_])
    assert_same_on_every_rank(flat, "coefs_ and intercepts_")
    try:
        fastbp.MLPClassifier(solver="lbfgs", random_state=0).fit(X, y, comm=comm)
        raise AssertionError("lbfgs took comm")
    except ValueError as err:
        if "solver='sgd' or 'adam'" not in str(err):
            raise
    if rank == 0:
        one = fastbp.MLPClassifier(**kwargs).fit(X, y, sample_weight=w)
        assert_close(flat, np.concatenate([a.ravel() for a in one.coefs_ + one.intercepts_]), "coefs_")
        assert_close(clf.loss_curve_, one.loss_curve_, "loss_curve_")
        assert_close(clf.validation_scores_, one.validation_scores_, "validation_scores_")


def nan(tmp):
    """A NaN in the last rank's block of rows: that rank's check raises, and the job ends."""
    X, y, _ = data()
    X[-1, 2] = np.nan
    build(fastbp.SGD(lr=0.05)).fit(X, y, epochs=1, batch_size=10, verbose=0, comm=comm)


def mismatch(tmp):
    """Ranks given different data or models: every rank raises the same error before training."""
    cases = [
        # 4000 against 4007 rows: the same 8 batches of 512, which trained silently on misaligned shares.
        ("rows", lambda: (build(fastbp.SGD(lr=0.05)), 4000 + 7 * (rank == 1), 5),
         "X: (4000, 5) on rank 0; (4007, 5) on rank 1"),
        # Different batch counts: a raw "Message truncated" from the allreduce.
        ("batches", lambda: (build(fastbp.SGD(lr=0.05)), 4000 + 1000 * (rank == 1), 5),
         "X: (4000, 5) on rank 0; (5000, 5) on rank 1"),
        # Different feature counts (and so models): a raw error from the parameters' broadcast.
        ("features", lambda: (fastbp.Sequential([fastbp.Dense(5 + rank, 3)], dtype="float64", seed=0)
                              .compile("softmax_cross_entropy", "sgd"), 400, 5 + rank),
         "parameters: 18 on rank 0; 21 on rank 1"),
    ]
    for name, make, expected in cases:
        model, n, n_features = make()
        X, y, _ = data(n=n, n_features=n_features)
        before = model.get_flat_weights()
        try:
            model.fit(X, y, epochs=1, batch_size=512, verbose=0, comm=comm)
        except fastbp.DataMismatchError as err:
            message = str(err)
            if expected not in message or "needs the same data, model and batch_size on every rank" not in message:
                raise AssertionError(f"{name}: {message}")
        else:
            raise AssertionError(f"{name}: fit trained on different data")
        if not np.array_equal(model.theta, before):
            raise AssertionError(f"{name}: the model changed")
        comm.Barrier()


def early(tmp):
    """Rank 1 raises before fit inside fastbp.abort_on_error; rank 0 would wait in fit for good."""
    X, y, _ = data()
    with fastbp.abort_on_error(comm):
        if rank == 1:
            raise RuntimeError("rank 1 could not read its data")
        build(fastbp.SGD(lr=0.05)).fit(X, y, epochs=1000, batch_size=10, verbose=0, comm=comm)


if __name__ == "__main__":
    scenario, tmp = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "."
    {"equal": equal, "diverge": diverge, "raise": fail, "kill": fail, "nan": nan, "estimator": estimator,
     "mismatch": mismatch, "early": early}[scenario](tmp)
    comm.Barrier()
    if rank == 0:
        print(f"OK {scenario}", flush=True)
