"""The ``fastbp`` command line: train, evaluate, predict, export, info.

``fastbp train`` with no arguments trains a 64-256-10 ReLU network (dropout 0.2) on the
bundled UCI digits and reports train and test accuracy and throughput.
"""
import argparse
import os
import platform
import sys
import time

import numpy as np


def _load_data(path, dtype, argument="--data"):
    """(X, y) from a .npz (arrays X and y), a .csv (label in the last column) or an MNIST IDX folder."""
    from . import datasets

    if path is None:
        return datasets.load_digits(dtype=dtype)
    if os.path.isdir(path):
        return datasets.load_mnist(path, kind="train", dtype=dtype)
    if not os.path.exists(path):
        raise SystemExit(f"fastbp: {argument} {path!r} does not exist")
    lower = path.lower()
    if lower.endswith(".npz"):
        X, y = datasets.load_npz(path)
    elif lower.endswith((".csv", ".csv.gz", ".txt")):
        X, y = datasets.load_csv(path)
    else:
        raise SystemExit(f"fastbp: {argument} {path!r}: expected a .npz file with arrays X and y, "
                         f"a .csv file with the label in the last column, or a folder of MNIST IDX files")
    return np.asarray(X, dtype=dtype), np.asarray(y)


def _mnist_test(path, dtype):
    from . import datasets

    try:
        return datasets.load_mnist(path, kind="test", dtype=dtype)
    except FileNotFoundError:
        return None


def _sizes(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes such as 128,64; got {text!r}")
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive; got {text!r}")
    return sizes


def _parser():
    parser = argparse.ArgumentParser(prog="fastbp", description="Train dense networks with hand-derived, "
                                     "numba-compiled backpropagation.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a network (default: the bundled 8x8 digits)")
    train.add_argument("--data", help="a .npz (X, y), a .csv (label last) or an MNIST IDX folder; "
                       "default: the bundled UCI digits")
    train.add_argument("--hidden", type=_sizes, default=[256], help="hidden layer sizes, e.g. 256,128 (default 256)")
    train.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    train.add_argument("--dropout", type=float, default=0.2, help="dropout rate after each hidden layer "
                       "(default 0.2; 0 for none)")
    train.add_argument("--norm", choices=["none", "batch", "layer"], default="none",
                       help="normalize each hidden layer before its activation: Dense -> BatchNorm or "
                       "LayerNorm -> activation (default none)")
    train.add_argument("--loss", default=None, help="softmax_cross_entropy (default for integer labels), "
                       "binary_cross_entropy, mse (default for real targets), mae, huber or poisson")
    train.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "rmsprop", "adagrad"], default="sgd")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default 0.1 for sgd, 0.001 for "
                       "adam and adamw, 0.01 for rmsprop and adagrad)")
    train.add_argument("--momentum", type=float, default=None, help="momentum of sgd (default 0.9) and "
                       "rmsprop (default 0)")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--test-size", type=float, default=0.2, help="held-out fraction when the data has "
                       "no test part (default 0.2)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    train.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    train.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    train.add_argument("--output", "-o", help="save the trained model to this .npz path")
    train.add_argument("--quiet", "-q", action="store_true", help="no per-epoch output")
    train.add_argument("--distributed", action="store_true", help="data-parallel over MPI: run as "
                       "mpiexec -n N fastbp train --distributed ...; --batch-size is the global batch "
                       "(needs fastbp[mpi])")

    evaluate = sub.add_parser("evaluate", help="loss and metrics of a saved model on data")
    evaluate.add_argument("model")
    evaluate.add_argument("data")

    predict = sub.add_parser("predict", help="predictions of a saved model, one per line")
    predict.add_argument("model")
    predict.add_argument("data")
    predict.add_argument("--output", "-o", help="write predictions to this file instead of stdout")
    predict.add_argument("--proba", action="store_true", help="print class probabilities")

    export = sub.add_parser("export", help="write a saved model as an ONNX graph (needs onnx)")
    export.add_argument("model")
    export.add_argument("--output", "-o", help="the .onnx path (default: the model's path with .onnx)")
    export.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="the graph's float type (default: the model's)")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")

    info = sub.add_parser("info", help="versions, BLAS and threads, the compiled-kernel cache, "
                                       "and whether a CUDA GPU is usable")
    info.add_argument("--clear-cache", action="store_true",
                      help="remove fastbp's cached compiled kernels (every version's) first")
    return parser


def _train(args):
    import fastbp
    from fastbp import _first_run, datasets

    if args.threads is not None:
        fastbp.set_num_threads(args.threads)
    comm, say = None, print
    if args.distributed:
        try:
            from mpi4py import MPI
        except ImportError:
            raise SystemExit("fastbp train --distributed needs mpi4py: pip install 'fastbp[mpi]'") from None
        comm = MPI.COMM_WORLD
        if comm.Get_rank() != 0:
            say = _silent  # every rank trains and evaluates; rank 0 alone reports and saves
    dtype = np.dtype(args.dtype)
    X, y = _load_data(args.data, dtype)
    test = _mnist_test(args.data, dtype) if args.data and os.path.isdir(args.data) else None
    y = np.asarray(y)
    integral = y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(y == np.round(y)) and y.ndim == 1)
    loss = args.loss or ("softmax_cross_entropy" if integral else "mse")
    if test is not None:
        X_train, y_train = X, y
        X_test, y_test = test
    else:
        stratify = y if loss == "softmax_cross_entropy" else None
        X_train, X_test, y_train, y_test = datasets.train_test_split(
            X, y, test_size=args.test_size, seed=args.seed, stratify=stratify)
    if loss == "softmax_cross_entropy":
        n_out = int(max(y_train.max(), y_test.max())) + 1
    else:
        n_out = 1 if y.ndim == 1 else y.shape[1]
    sizes = [X.shape[1]] + args.hidden + [n_out]
    layers = []
    norm = {"batch": fastbp.BatchNorm, "layer": fastbp.LayerNorm}.get(args.norm)
    for i, o in zip(sizes[:-2], sizes[1:-1]):
        if norm is None:
            layers.append(fastbp.Dense(i, o, activation=args.activation))
        else:
            # The usual order: the norm takes the pre-activation, and its beta does the bias's job.
            layers += [fastbp.Dense(i, o), norm(o), fastbp.Activation(args.activation)]
        if args.dropout > 0:
            layers.append(fastbp.Dropout(args.dropout))
    layers.append(fastbp.Dense(sizes[-2], sizes[-1]))
    model = fastbp.Sequential(layers, dtype=args.dtype, seed=args.seed, device=args.device)
    if args.optimizer == "sgd":
        momentum = 0.9 if args.momentum is None else args.momentum
        optimizer = fastbp.SGD(lr=args.lr or 0.1, momentum=momentum, weight_decay=args.weight_decay)
    elif args.optimizer == "rmsprop":
        optimizer = fastbp.RMSprop(lr=args.lr or 0.01, momentum=args.momentum or 0.0,
                                   weight_decay=args.weight_decay)
    elif args.optimizer == "adagrad":
        optimizer = fastbp.Adagrad(lr=args.lr or 0.01, weight_decay=args.weight_decay)
    else:
        optimizer = fastbp.Adam(lr=args.lr or 0.001, weight_decay=args.weight_decay,
                                decoupled=args.optimizer == "adamw")
    where = args.data or "bundled UCI digits"
    ranks = f", {comm.Get_size()} ranks (MPI)" if comm is not None else ""
    normed = f", {args.norm}norm" if norm is not None else ""
    say(f"fastbp {fastbp.__version__}: training {'-'.join(map(str, sizes))} ({args.activation}{normed}, {loss}, "
          f"{args.optimizer}) on {where}: {len(X_train)} train / {len(X_test)} test samples, "
          f"{fastbp.get_num_threads()} threads, {args.device}{ranks}")
    start = time.perf_counter()
    with _first_run.announce_always():
        history = model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size, loss=loss,
                            optimizer=optimizer, seed=args.seed, validation_data=(X_test, y_test),
                            verbose=0 if args.quiet else 2, **({"comm": comm} if comm is not None else {}))
    wall = time.perf_counter() - start
    rates = history.history["samples_per_second"]
    train_metrics = model.evaluate(X_train, y_train)
    test_metrics = model.evaluate(X_test, y_test)
    metric = "accuracy" if "accuracy" in test_metrics else "mse"
    say(f"train {metric}: {train_metrics[metric]:.4f}   test {metric}: {test_metrics[metric]:.4f}   "
          f"test loss: {test_metrics['loss']:.4f}")
    say(f"throughput: {np.median(rates[1:] if len(rates) > 1 else rates):,.0f} samples/s (median epoch), "
          f"{wall:.2f} s for {len(rates)} epochs including compilation")
    if args.output and (comm is None or comm.Get_rank() == 0):
        model.save(args.output)
        say(f"saved model to {args.output}")
    return 0


def _silent(*args, **kwargs):
    pass


def _evaluate(args):
    import fastbp

    model = fastbp.load(args.model)
    X, y = _load_data(args.data, model.dtype, "DATA")
    for key, value in model.evaluate(X, y).items():
        print(f"{key}: {value:.6g}")
    return 0


def _predict(args):
    import fastbp

    model = fastbp.load(args.model)
    X, _ = _load_data(args.data, model.dtype, "DATA")
    out = model.predict_proba(X) if args.proba else model.predict(X)
    out = out.reshape(len(out), -1)
    fmt = "%.6g" if out.dtype.kind == "f" else "%d"
    if args.output:
        np.savetxt(args.output, out, fmt=fmt, delimiter=",")
    else:
        np.savetxt(sys.stdout, out, fmt=fmt, delimiter=",")
    return 0


def _export(args):
    import fastbp

    model = fastbp.load(args.model)
    output = args.output or os.path.splitext(args.model)[0] + ".onnx"
    try:
        proto = model.to_onnx(output, dtype=args.dtype, opset=args.opset)
    except ImportError as err:
        print(f"fastbp export: error: {err}", file=sys.stderr)
        return 2
    names = ", ".join(o.name for o in proto.graph.output)
    print(f"wrote {output} (opset {proto.opset_import[0].version}, outputs: {names})")
    return 0


def _products_blas_threads():
    """The thread count of the BLAS that fastbp's products call (SciPy's), or None if none is found."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads it)
    from threadpoolctl import threadpool_info

    folder = os.path.dirname(os.path.realpath(scipy.__file__))
    found = [i for i in threadpool_info() if i["user_api"] == "blas"]
    ours = [i for i in found if os.path.realpath(i["filepath"]).startswith((folder + os.sep, folder + ".libs" + os.sep))]
    chosen = ours or found[:1]
    return chosen[0]["num_threads"] if chosen else None


def _blas_lines():
    """One line per BLAS library in the process, the one that fastbp's products call first.

    The compiled kernels call BLAS through SciPy (``scipy.linalg.cython_blas``), whose
    wheel brings its own copy (in scipy.libs), apart from NumPy's (in numpy.libs);
    importing it here loads it. Elsewhere (conda, a system BLAS) the two share one.
    """
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_info

    def inside(path, module):
        folder = os.path.dirname(os.path.realpath(module.__file__))
        return os.path.realpath(path).startswith((folder + os.sep, folder + ".libs" + os.sep))

    found = [i for i in threadpool_info() if i["user_api"] == "blas"]
    if not found:
        return ["blas: none found by threadpoolctl"]
    lines = []
    for info in sorted(found, key=lambda i: not inside(i["filepath"], scipy)):
        path = info["filepath"]
        if inside(path, scipy) or len(found) == 1:
            owner = "used by fastbp's products" + (" (SciPy's)" if len(found) > 1 else "")
        else:
            owner = "NumPy's" if inside(path, np) else "another library's"
        kernel = info.get("architecture") or info.get("corename") or "not reported"
        lines.append(f"blas: {info['internal_api']} {info.get('version') or '(version unknown)'}, "
                     f"kernel {kernel}, {info['num_threads']} threads "
                     f"({info.get('threading_layer', 'threading unknown')}), {owner}: {path}")
    return lines


def _openmp_line():
    """The OpenMP runtimes loaded in the process: the first one loaded serves every library."""
    from threadpoolctl import threadpool_info

    found = [i for i in threadpool_info() if i["user_api"] == "openmp"]
    if not found:
        return "openmp runtimes loaded: none"
    return "openmp runtimes loaded: " + "; ".join(
        f"{i['prefix']} {i.get('version') or ''} ({i['num_threads']} threads) {i['filepath']}".replace("  ", " ")
        for i in found)


def _cache_lines(clear):
    """Where compiled kernels are cached, and whether this version's are there (a warm start)."""
    from .kernels import _cache

    lines = []
    if clear:
        lines.append(f"cache: cleared {_cache.clear() / 2**20:.1f} MiB")
    state = _cache.info()
    if not state["enabled"]:
        return lines + [f"cache: off ({_cache.OFF_REASON}): kernels compile in every process"]
    warm = (f"warm: {state['indexes']} compiled functions, {state['bytes'] / 2**20:.1f} MiB"
            if state["indexes"] else "cold: the first fit compiles the kernels (about a minute), once")
    read_only = "" if state["writable"] else ", read-only: new kernels are not saved"
    lines.append(f"cache: {state['folder']} ({warm}{read_only})")
    if state["stale_trees"]:
        lines.append(f"cache: {state['stale_trees']} folder(s) of other fastbp versions or sources in "
                     f"{state['root']} (fastbp info --clear-cache removes them)")
    return lines


def _info(args):
    import numba

    import fastbp

    print(f"fastbp {fastbp.__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(f"numpy {np.__version__}, numba {numba.__version__}")
    # ----- threads: what decides training speed on the CPU --------------------------------
    # Both pools: the training loop runs on BLAS's threads, the standalone kernels on numba's,
    # and NUMBA_NUM_THREADS alone leaves BLAS's count as it was.
    blas = _products_blas_threads()
    print(f"threads: numba {fastbp.get_num_threads()} (of {numba.config.NUMBA_NUM_THREADS}; "
          f"NUMBA_NUM_THREADS), BLAS {blas if blas is not None else 'unknown'} (the products' and the "
          f"training loop's; OPENBLAS_NUM_THREADS or OMP_NUM_THREADS); fastbp.set_num_threads sets both")
    print(f"numba threading layer: {numba.threading_layer()} "
          f"(NUMBA_THREADING_LAYER={numba.config.THREADING_LAYER}); it runs fastbp's parallel kernels "
          f"when called on their own, not the training loop")
    for line in _blas_lines():
        print(line)
    print(_openmp_line())
    # ----- the compiled-kernel cache ---------------------------------------------------------
    for line in _cache_lines(args.clear_cache):
        print(line)
    # ----- CUDA ----------------------------------------------------------------------------
    try:
        import numba_cuda  # noqa: F401
        from numba import cuda

        usable = cuda.is_available()
        detail = f"numba-cuda {numba_cuda.__version__}"
        if usable and numba.config.ENABLE_CUDASIM:
            # The simulator's fake device has no name.
            detail += ", the CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run in Python"
        elif usable:
            detail += f", device: {cuda.get_current_device().name}"
    except ImportError:
        usable, detail = False, "numba-cuda not installed (pip install 'fastbp[cuda]')"
    print(f"cuda: {'usable' if usable else 'not usable'} ({detail})")
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    handler = {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export,
               "info": _info}[args.command]
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"fastbp {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
