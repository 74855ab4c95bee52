"""The ``fastbp`` command line: train, evaluate, predict, export, compile, info.

``fastbp train`` with no arguments trains a 64-256-10 ReLU network (dropout 0.2) on the
bundled UCI digits and reports train and test accuracy and throughput.
"""
import argparse
import math
import os
import platform
import sys
import time

import numpy as np

from ._validation import check_in_range, check_int
from .datasets import is_number


# A header column of one of these names is the target when --target does not say.
_TARGET_NAMES = ("label", "labels", "target", "class", "y")


class _Table:
    """A data file read for the command line: features, the target column (if any) and where it was."""

    def __init__(self, X, y, header=None, target=None):
        self.X, self.y, self.header, self.target = X, y, header, target

    def where(self):
        """Words for the line that starts training: which column is the target."""
        if self.target is None:
            return ""
        index, name = self.target
        n = self.X.shape[1] + 1
        return f", target column {name!r} ({index + 1} of {n})" if name else f", target column {index + 1} of {n}"


def _read_csv_rows(path):
    """(header or None, rows of strings): a header is a first row with a name where the second
    row has a number (string labels leave a data row's label column a non-number too)."""
    import csv

    from . import datasets

    with datasets.open_text(path) as f:
        rows = [row for row in csv.reader(f) if row and any(field.strip() for field in row)]
    if not rows:
        raise ValueError(f"{path!r} has no data rows: the file is empty or blank")
    first = rows[0]
    if len(rows) == 1:
        is_header = not any(map(is_number, first))
    else:
        is_header = any(not is_number(a) and is_number(b) for a, b in zip(first, rows[1]))
    header = [name.strip() for name in first] if is_header else None
    rows = rows[1:] if is_header else rows
    if not rows:
        raise ValueError(f"{path!r} has a header and no data rows")
    width = len(header) if header else len(rows[0])
    for number, row in enumerate(rows, 2 if is_header else 1):
        if len(row) != width:
            raise ValueError(f"{path!r}: row {number} has {len(row)} fields, the first has {width}")
    return header, rows


def _target_index(spec, header, n_columns, path, default):
    """The target column's index for --target NAME|INDEX (None: a header's label/target/... column,
    else ``default``)."""
    if spec is None:
        if header:
            named = [i for i, name in enumerate(header) if name.lower() in _TARGET_NAMES]
            if len(named) == 1:
                return named[0]
        return default % n_columns
    try:
        index = int(spec)
    except ValueError:
        if not header:
            raise ValueError(f"--target {spec!r} names a column, but {path!r} has no header row; give the "
                             f"column's index (0 to {n_columns - 1}, or -1 for the last)") from None
        if spec not in header:
            raise ValueError(f"--target {spec!r} is not a column of {path!r}; its columns are {header}") from None
        return header.index(spec)
    if not -n_columns <= index < n_columns:
        raise ValueError(f"--target {index} is outside the {n_columns} columns of {path!r} "
                         f"(0 to {n_columns - 1}, or negative from the end)")
    return index % n_columns


def _labels(fields):
    """A label column: numbers when every field is one (int64 when all are whole), else strings."""
    fields = np.array([f.strip() for f in fields])
    if all(map(is_number, fields)):
        values = fields.astype(np.float64)
        if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            return values.astype(np.int64)
        return values
    return fields


def _read_csv(path, target, dtype, model=None):
    """A _Table from a CSV file: a header row when there is one, the target column by --target.

    For a trained ``model`` (evaluate, predict), a file with exactly its number of
    features is features only; otherwise the target is the column of the name it was
    trained with, when the file has a header, or of the same index.
    """
    header, rows = _read_csv_rows(path)
    n_columns = len(rows[0])
    fmt = (model.data_format or {}) if model is not None else {}
    if target is None and header and fmt.get("target_name") in header:
        target = fmt["target_name"]
    if model is not None and n_columns == model.n_features and (header is None or target not in header):
        index = None
    else:
        index = _target_index(target, header, n_columns, path, fmt.get("target_index", -1))
    keep = [j for j in range(n_columns) if j != index]
    try:
        X = np.array([[row[j] for j in keep] for row in rows], dtype=np.float64)
    except ValueError:
        for number, row in enumerate(rows, 2 if header else 1):
            for j in keep:
                if not is_number(row[j]):
                    column = f"{header[j]!r}" if header else str(j)
                    raise ValueError(f"{path!r}: row {number}, column {column} is {row[j]!r}, not a number; "
                                     f"only the target column (--target) may hold text") from None
        raise
    y = None if index is None else _labels([row[index] for row in rows])
    where = None if index is None else (index, header[index] if header else None)
    return _Table(X.astype(dtype), y, header, where)


def _load_data(path, dtype, argument="--data", target=None, model=None):
    """A _Table from a .npz (arrays X and y), a .csv or an MNIST IDX folder.

    ``model``: a trained model reading data for evaluate or predict, whose saved
    data_format says where its target column was.
    """
    from . import datasets

    if path is None:
        X, y = datasets.load_digits(dtype=dtype)
        return _Table(X, y)
    if os.path.isdir(path):
        X, y = datasets.load_mnist(path, kind="train", dtype=dtype)
        return _Table(X, y)
    if not os.path.exists(path):
        raise SystemExit(f"fastbp: {argument} {path!r} does not exist")
    lower = path.lower()
    if lower.endswith(".npz"):
        if model is not None:
            with np.load(path, allow_pickle=False) as data:
                if "X" not in data.files:
                    raise ValueError(f"{path!r} has no array X (it has {data.files})")
                return _Table(np.asarray(data["X"], dtype=dtype), data["y"] if "y" in data.files else None)
        X, y = datasets.load_npz(path)
        return _Table(np.asarray(X, dtype=dtype), np.asarray(y))
    if lower.endswith((".csv", ".csv.gz", ".txt")):
        return _read_csv(path, target, dtype, model)
    raise SystemExit(f"fastbp: {argument} {path!r}: expected a .npz file with arrays X and y, "
                     f"a .csv file (a header row is optional; --target picks the label column, the last by "
                     f"default), or a folder of MNIST IDX files")


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
    try:
        return [check_int(size, "a layer size") for size in sizes]
    except ValueError:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive; got {text!r}") from None


def _positive_int(text):
    """An argparse type: a whole number >= 1 (``check_int``'s rule, on the text's number)."""
    try:
        return check_int(int(text), "the value")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; got {text!r}") from None


def _number(low, high=None, low_open=False):
    """An argparse type: a finite float in [low, high) (or (low, high) with low_open)
    (``check_in_range``'s rule, on the text's number)."""

    def parse(text):
        try:
            return check_in_range(float(text), "the value", low, math.inf if high is None else high, low_open,
                                  high_open=True)
        except ValueError:
            bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"expected a number {bounds}; got {text!r}") from None

    return parse


def _output_path(path, argument, extensions=None):
    """Check an output path before any work: not a folder, in a folder that exists and is
    writable, and (``extensions``) with a fitting extension; SystemExit naming the problem."""
    if path is None:
        return None
    if os.path.isdir(path):
        raise SystemExit(f"fastbp: {argument} {path!r} is a folder; give a file name in it, such as "
                         f"{os.path.join(path, 'model.npz')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SystemExit(f"fastbp: {argument} {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise SystemExit(f"fastbp: {argument} {path!r}: the folder {folder!r} is not writable")
    if extensions == "model":
        from ._persist import check_save_path

        try:
            check_save_path(path)
        except ValueError as err:
            raise SystemExit(f"fastbp: {argument}: {err}") from None
    return path


def _parser():
    """The command line's parser: a subcommand each for train, evaluate, predict, export, compile and info."""
    parser = argparse.ArgumentParser(prog="fastbp", description="Train dense networks with hand-derived, "
                                     "numba-compiled backpropagation.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a network (default: the bundled 8x8 digits)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _train_data_options(train)
    _train_network_options(train)
    _train_fit_options(train)
    _evaluate_options(sub.add_parser("evaluate", help="loss and metrics of a saved model on data"))
    _predict_options(sub.add_parser("predict", help="predictions of a saved model, one per line"))
    _export_options(sub.add_parser("export", help="write a saved model as an ONNX graph (needs onnx)"))
    _compile_options(sub.add_parser(
        "compile", help="compile the kernels ahead into the cache (for container images and CI caches)",
        description="Compile what fits can reach into fastbp's compiled-kernel cache, so that the first fit "
                    "starts warm: in a Dockerfile, RUN fastbp compile; in CI, before caching the folder "
                    "(fastbp info names it)."))
    _info_options(sub.add_parser("info", help="versions, BLAS and threads, the compiled-kernel cache, "
                                              "and whether a CUDA GPU is usable"))
    return parser


def _train_data_options(train):
    """fastbp train's options for its data: where, which column is the target, standardizing."""
    train.add_argument("--data", help="a .npz (X, y), a .csv (a header row optional; the target column by "
                       "--target) or an MNIST IDX folder; default: the bundled UCI digits")
    train.add_argument("--target", help="the CSV's target column, by header name or index (negative from "
                       "the end); default: a column named label, target, class or y, else the last")
    train.add_argument("--no-scale", action="store_true", help="train on the features as they are; by "
                       "default each feature of a .npz or .csv is standardized with the training part's mean "
                       "and standard deviation, saved with the model and applied by evaluate, predict and "
                       "export (the bundled digits and MNIST folders, pixels already in [0, 1], are not)")


def _train_network_options(train):
    """fastbp train's options for the network's layers."""
    train.add_argument("--hidden", type=_sizes, default=[256], help="hidden layer sizes, e.g. 256,128")
    train.add_argument("--activation", default="relu", help="hidden activation")
    train.add_argument("--dropout", type=_number(0.0, 1.0), default=0.2,
                       help="dropout rate after each hidden layer (0 for none)")
    train.add_argument("--norm", choices=["none", "batch", "layer"], default="none",
                       help="normalize each hidden layer before its activation: Dense -> BatchNorm or "
                       "LayerNorm -> activation")


def _train_fit_options(train):
    """fastbp train's options for the training run: loss, optimizer, epochs, split, seed, where, output."""
    train.add_argument("--loss", default=None, help="softmax_cross_entropy (default for class labels: whole "
                       "numbers or text), binary_cross_entropy, mse (default for real targets), mae, huber or "
                       "poisson")
    train.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "rmsprop", "adagrad"], default="sgd",
                       help="the optimizer")
    train.add_argument("--lr", type=_number(0.0, low_open=True), default=None,
                       help="learning rate (default: 0.1 for sgd, 0.001 for adam and adamw, 0.01 for rmsprop "
                       "and adagrad)")
    train.add_argument("--momentum", type=_number(0.0, 1.0), default=None, help="momentum of sgd "
                       "(default: 0.9) and rmsprop (default: 0)")
    train.add_argument("--weight-decay", type=_number(0.0), default=0.0, help="L2 weight decay")
    train.add_argument("--epochs", type=_positive_int, default=30, help="passes over the training data")
    train.add_argument("--batch-size", type=_positive_int, default=32, help="samples per gradient step")
    train.add_argument("--test-size", type=_number(0.0, 1.0, low_open=True), default=0.2,
                       help="held-out fraction when the data has no test part")
    train.add_argument("--seed", type=int, default=0, help="seed of the weights, split and shuffles")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="parameter dtype")
    train.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: all)")
    train.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train")
    train.add_argument("--output", "-o", help="save the trained model to this .npz path (checked before "
                       "training)")
    train.add_argument("--quiet", "-q", action="store_true", help="no per-epoch output")
    train.add_argument("--distributed", action="store_true", help="data-parallel over MPI: run as "
                       "mpiexec -n N fastbp train --distributed ...; --batch-size is the global batch "
                       "(needs fastbp[mpi])")


def _evaluate_options(evaluate):
    """fastbp evaluate's arguments."""
    evaluate.add_argument("model")
    evaluate.add_argument("data", help="a .npz (X, y) or a .csv with the target column the model was "
                          "trained with (by name when both have a header row)")
    evaluate.add_argument("--target", help="the CSV's target column, by header name or index "
                          "(default: the one the model was trained with)")


def _predict_options(predict):
    """fastbp predict's arguments."""
    predict.add_argument("model")
    predict.add_argument("data", help="a .npz (X) or a .csv: with exactly the model's number of columns "
                         "it is features only; with one more, that column is the target and is left out")
    predict.add_argument("--target", help="the CSV's target column to leave out, by header name or index "
                         "(default: the one the model was trained with)")
    predict.add_argument("--output", "-o", help="write predictions to this file instead of stdout")
    predict.add_argument("--proba", action="store_true", help="print class probabilities (one column per "
                         "class, in the order of the model's classes)")


def _export_options(export):
    """fastbp export's arguments."""
    export.add_argument("model")
    export.add_argument("--output", "-o", help="the .onnx path (default: the model's path with .onnx)")
    export.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="the graph's float type (default: the model's)")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")


def _compile_options(compile_):
    """fastbp compile's options: what to compile, for which CPU, with how many workers."""
    compile_.add_argument("--dtype", type=_choices(_precompile_names("DTYPES")), default="float32",
                          help="comma-separated dtypes of the parameters: float32, float64 (default: float32)")
    compile_.add_argument("--losses", type=_choices(_precompile_names("LOSSES")), default="all",
                          help="comma-separated losses, or all (default: all)")
    compile_.add_argument("--optimizers", type=_choices(_precompile_names("OPTIMIZERS")), default="all",
                          help="comma-separated optimizers: sgd, adam (adamw too), rmsprop, adagrad; or all "
                               "(default: all)")
    compile_.add_argument("--norms", type=_choices(_precompile_names("NORMS"), allow_none=True), default="all",
                          help="norm layers: batchnorm, layernorm, all or none (default: all)")
    compile_.add_argument("--activations", type=_choices(_precompile_names("ACTIVATIONS")), default="all",
                          help="activations of the Activation layers and of the norm layers' fused activation, "
                               "each compiled on its own: comma-separated names (identity for a norm layer "
                               "without one), or all (default: all). Dense layers' activations need none: all are built")
    compile_.add_argument("--cpu", default=None,
                          help="compile for this CPU instead of this machine's, an LLVM CPU name such as "
                               "x86-64-v3; processes load it with NUMBA_CPU_NAME set to it and NUMBA_CPU_FEATURES "
                               "set empty (default: this machine's CPU)")
    compile_.add_argument("--jobs", "-j", type=_positive_int, default=None,
                          help="worker processes (default: the CPUs this process may use)")
    compile_.add_argument("--quiet", action="store_true", help="no progress bar")


def _info_options(info):
    """fastbp info's options."""
    info.add_argument("--clear-cache", action="store_true",
                      help="remove fastbp's cached compiled kernels (every version's) first")


def _precompile_names(table):
    from . import _precompile

    return tuple(getattr(_precompile, table))


def _choices(known, allow_none=False):
    """An argparse type: a comma-separated subset of ``known``, "all", or (where allowed) "none"."""
    def parse(text):
        words = [w.strip() for w in text.split(",") if w.strip()]
        words = ["adam" if w == "adamw" else w for w in words]
        if words == ["all"]:
            return tuple(known)
        if allow_none and words == ["none"]:
            return ()
        unknown = [w for w in words if w not in known]
        if unknown or not words:
            extra = ", none" if allow_none else ""
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(known)} (or all{extra}); "
                                             f"got {text!r}")
        return tuple(dict.fromkeys(words))
    return parse


def _compile(args):
    from . import _precompile
    from ._progress import counter

    found = _precompile.units(args.dtype, args.losses, args.optimizers, args.norms, args.activations)
    target = f" for CPU {args.cpu}" if args.cpu else ""
    print(f"fastbp compile: {len(found)} compile units{target} into {_cache_folder()}", flush=True)
    start = time.perf_counter()
    with counter(len(found), "compiling", enabled=not args.quiet) as step:
        _precompile.precompile(args.dtype, args.losses, args.optimizers, args.norms, jobs=args.jobs, cpu=args.cpu,
                               progress=lambda unit: step(_precompile.describe(unit)), activations=args.activations)
    print(f"fastbp compile: done in {time.perf_counter() - start:.1f} s", flush=True)
    if args.cpu:
        print(f"fastbp compile: processes load these kernels when their environment has "
              f"NUMBA_CPU_NAME={args.cpu} and NUMBA_CPU_FEATURES= (empty), e.g. in a Dockerfile:\n"
              f"  ENV NUMBA_CPU_NAME={args.cpu} NUMBA_CPU_FEATURES=", flush=True)
    return 0


def _cache_folder():
    from .kernels import _cache

    return _cache.FOLDER or "(no cache)"


def _train(args):
    """fastbp train: read the data, build the model, fit it, report the result, save it."""
    import fastbp

    if args.threads is not None:
        fastbp.set_num_threads(args.threads)
    comm, say = _communicator(args)
    if comm is None or comm.Get_rank() == 0:
        _output_path(args.output, "--output", "model")
    data = _training_data(args)
    sizes = [data.n_features] + args.hidden + [data.n_outputs]
    model = _training_model(args, data, sizes)
    optimizer = _training_optimizer(args)
    say(_training_line(args, data, sizes, comm))
    history, wall = _fit_model(args, model, data, optimizer, comm)
    _report(say, model, data, history, wall)
    if args.output and (comm is None or comm.Get_rank() == 0):
        model.save(args.output)
        say(f"saved model to {args.output}")
    return 0


def _communicator(args):
    """(MPI communicator or None, the function that reports): with --distributed, every rank
    trains and evaluates, and rank 0 alone reports and saves."""
    if not args.distributed:
        return None, print
    try:
        from mpi4py import MPI
    except ImportError:
        raise SystemExit("fastbp train --distributed needs mpi4py: pip install 'fastbp[mpi]'") from None
    comm = MPI.COMM_WORLD
    return comm, (print if comm.Get_rank() == 0 else _silent)


class _TrainingData:
    """What fastbp train trains and tests on: the table read, the loss it implies, the classes
    (None for regression), and the train and test parts as the model takes them."""

    def __init__(self, table, loss, classes, train, test, n_outputs):
        self.table, self.loss, self.classes, self.n_outputs = table, loss, classes, n_outputs
        (self.X_train, self.y_train), (self.X_test, self.y_test) = train, test
        self.n_features = table.X.shape[1]


def _training_data(args):
    """The _TrainingData of --data: the MNIST folder's own test part, else a --test-size split
    (stratified for class labels)."""
    import fastbp
    from fastbp import datasets

    dtype = np.dtype(args.dtype)
    table = _load_data(args.data, dtype, target=args.target)
    X, y = table.X, np.asarray(table.y)
    test = _mnist_test(args.data, dtype) if args.data and os.path.isdir(args.data) else None
    integral = y.dtype.kind in "iu" or (y.dtype.kind == "f" and y.ndim == 1 and np.all(y == np.round(y)))
    loss = fastbp.losses.get(args.loss).name if args.loss else (
        "softmax_cross_entropy" if y.dtype.kind in "USO" or integral else "mse")
    classes, y, test = _class_indices_of(loss, y, test)
    if test is None:
        stratify = y if classes is not None and y.ndim == 1 else None
        X_train, X_test, y_train, y_test = datasets.train_test_split(
            X, y, test_size=args.test_size, seed=args.seed, stratify=stratify)
        train, test = (X_train, y_train), (X_test, y_test)
    else:
        train = (X, y)
    n_outputs = len(classes) if loss == "softmax_cross_entropy" else (1 if y.ndim == 1 else y.shape[1])
    return _TrainingData(table, loss, classes, train, test, n_outputs)


def _class_indices_of(loss, y, test):
    """(classes, y, test) for a classification loss, the labels as class indices; (None, y, test)
    otherwise, where text labels are a ValueError."""
    if loss not in ("softmax_cross_entropy", "binary_cross_entropy"):
        if y.dtype.kind in "USO":
            raise ValueError(f"--loss {loss} needs numeric targets; the target column holds text such as "
                             f"{y[0]!r}")
        return None, y, test
    # Any labels, as the estimators take them: the sorted distinct values are the classes,
    # trained as their indices 0..K-1 and written back as themselves.
    labels = y if test is None else np.concatenate([y, test[1]])
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"the target column holds one class only ({classes[0]!r}): nothing to classify")
    if loss == "binary_cross_entropy" and len(classes) != 2:
        raise ValueError(f"binary_cross_entropy takes two classes; the target holds {len(classes)}: use "
                         f"softmax_cross_entropy")
    if test is not None:
        test = (test[0], np.searchsorted(classes, test[1]))
    return classes, np.searchsorted(classes, y), test


def _standardizes(args):
    """Whether fastbp train standardizes the features."""
    # Pixels (the bundled digits, an MNIST folder) come scaled to [0, 1] by their loaders, and
    # standardizing them divides a pixel lit in a few training images by a tiny deviation: the
    # digits' test images then feed the network values up to about 90, and SGD swings (96.9%
    # test accuracy instead of 98.9%). Tabular data (.npz, .csv), whose features come in any
    # units, is standardized.
    return not args.no_scale and args.data is not None and not os.path.isdir(args.data)


def _training_model(args, data, sizes):
    """The Sequential of the options' layers, with what it needs to read its data again: the
    inputs' standardization, the classes, where the target column was."""
    import fastbp

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
    if _standardizes(args):
        # Standardized with the training part's statistics only; a constant feature keeps scale 1.
        std = data.X_train.std(axis=0, dtype=np.float64)
        model.set_input_scaling(data.X_train.mean(axis=0, dtype=np.float64), np.where(std > 0, std, 1.0))
    if data.classes is not None:
        model.classes = data.classes
    if data.table.target is not None:
        model.data_format = {"target_index": int(data.table.target[0]), "target_name": data.table.target[1],
                             "n_columns": int(data.n_features + 1)}
    return model


def _training_optimizer(args):
    """The optimizer of --optimizer, --lr, --momentum and --weight-decay."""
    import fastbp

    lr = {"sgd": 0.1, "adam": 0.001, "adamw": 0.001}.get(args.optimizer, 0.01) if args.lr is None else args.lr
    if args.optimizer == "sgd":
        momentum = 0.9 if args.momentum is None else args.momentum
        return fastbp.SGD(lr=lr, momentum=momentum, weight_decay=args.weight_decay)
    if args.optimizer == "rmsprop":
        return fastbp.RMSprop(lr=lr, momentum=args.momentum or 0.0, weight_decay=args.weight_decay)
    if args.optimizer == "adagrad":
        return fastbp.Adagrad(lr=lr, weight_decay=args.weight_decay)
    return fastbp.Adam(lr=lr, weight_decay=args.weight_decay, decoupled=args.optimizer == "adamw")


def _training_line(args, data, sizes, comm):
    """The line that starts training: the network, the data, the threads and the device."""
    import fastbp

    where = args.data or "bundled UCI digits"
    ranks = f", {comm.Get_size()} ranks (MPI)" if comm is not None else ""
    normed = f", {args.norm}norm" if args.norm != "none" else ""
    return (f"fastbp {fastbp.__version__}: training {'-'.join(map(str, sizes))} ({args.activation}{normed}, "
            f"{data.loss}, {args.optimizer}) on {where}: {len(data.X_train)} train / {len(data.X_test)} test "
            f"samples, {fastbp.get_num_threads()} threads, {args.device}{ranks}{data.table.where()}"
            f"{', features standardized' if _standardizes(args) else ''}")


def _fit_model(args, model, data, optimizer, comm):
    """(History, wall seconds) of the model's fit on the training part, validated on the test part."""
    from fastbp import _first_run

    start = time.perf_counter()
    with _first_run.announce_always():
        history = model.fit(data.X_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size,
                            loss=data.loss, optimizer=optimizer, seed=args.seed,
                            validation_data=(data.X_test, data.y_test), verbose=0 if args.quiet else 2,
                            **({"comm": comm} if comm is not None else {}))
    return history, time.perf_counter() - start


def _report(say, model, data, history, wall):
    """The trained model's train and test metric, its test loss and the training's throughput."""
    rates = history.history["samples_per_second"]
    train_metrics = model.evaluate(data.X_train, data.y_train)
    test_metrics = model.evaluate(data.X_test, data.y_test)
    metric = next(m for m in ("accuracy", "mse", "mae") if m in test_metrics)
    say(f"train {metric}: {train_metrics[metric]:.4f}   test {metric}: {test_metrics[metric]:.4f}   "
        f"test loss: {test_metrics['loss']:.4f}")
    say(f"throughput: {np.median(rates[1:] if len(rates) > 1 else rates):,.0f} samples/s (median epoch), "
        f"{wall:.2f} s for {len(rates)} epochs including compilation")


def _silent(*args, **kwargs):
    pass


def _load_model(path):
    import fastbp

    if not os.path.exists(path):
        raise SystemExit(f"fastbp: MODEL {path!r} does not exist")
    return fastbp.load(path)


def _class_indices(model, y, path):
    """A data file's labels as the model's class indices (its saved classes), or as they are."""
    if model.classes is None or y is None:
        return y
    classes = model.classes
    if classes.dtype.kind in "USO":
        y = np.asarray(y).astype(str)
    unknown = ~np.isin(y, classes)
    if np.any(unknown):
        raise ValueError(f"{path!r} holds the label {np.asarray(y)[unknown][0]!r}, which is not one of the model's "
                         f"classes {classes.tolist()}")
    return np.searchsorted(classes, y)


def _evaluate(args):
    model = _load_model(args.model)
    table = _load_data(args.data, model.dtype, "DATA", target=args.target, model=model)
    if table.y is None:
        raise ValueError(f"{args.data!r} has no target column: it has exactly the model's {model.n_features} "
                         f"features; evaluate needs one more column, the target")
    for key, value in model.evaluate(table.X, _class_indices(model, table.y, args.data)).items():
        print(f"{key}: {value:.6g}")
    return 0


def _predict(args):
    model = _load_model(args.model)
    _output_path(args.output, "--output")
    table = _load_data(args.data, model.dtype, "DATA", target=args.target, model=model)
    out = model.predict_proba(table.X) if args.proba else model.predict(table.X)
    if model.classes is not None and not args.proba:
        out = model.classes[out.reshape(-1)]  # the labels the model was trained on
    out = out.reshape(len(out), -1)
    fmt = "%.6g" if out.dtype.kind == "f" else ("%s" if out.dtype.kind in "USO" else "%d")
    np.savetxt(args.output or sys.stdout, out, fmt=fmt, delimiter=",")
    return 0


def _export(args):
    model = _load_model(args.model)
    output = args.output or os.path.splitext(args.model)[0] + ".onnx"
    _output_path(output, "--output")
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
               "compile": _compile, "info": _info}[args.command]
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (fastbp predict ... | head): the rest of the output has nowhere to go.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"fastbp {args.command}: error: {err}", file=sys.stderr)
        return 2


def _flushed():
    """Whether stdout and stderr took all their buffered output (a stream that is gone, pythonw's,
    has nothing to take)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            return False
    return True


def _may_end_at_once():
    """Whether nothing but the interpreter's teardown is left to happen at exit: no thread of another
    library still running (the usual exit waits for it), no tracer or profiler (coverage, cProfile
    write their data at exit), no MPI (mpi4py finalizes it in the interpreter's own exit hook, which
    ``os._exit`` skips: Open MPI then fails the job), no interactive prompt to come (``python -i``),
    and CPython's call of the ``atexit`` handlers at hand."""
    import atexit
    import threading

    return (not any(not thread.daemon for thread in threading.enumerate() if thread is not threading.current_thread())
            and sys.gettrace() is None and sys.getprofile() is None and "mpi4py.MPI" not in sys.modules
            and not sys.flags.inspect and hasattr(atexit, "_run_exitfuncs"))


def run(own_process=True):
    """The ``fastbp`` command (its console script, and ``python -m fastbp``): ``main``, then the end
    of the process.

    The interpreter's teardown after a run is skipped (``os._exit``, once output is flushed and the
    ``atexit`` handlers have run): it collects numba's and LLVM's objects and clears every module,
    0.3 s of a 1.15 s ``fastbp train`` on a warm cache (2026-12-07). Everything the command writes
    is closed by the time ``main`` returns. The process ends the usual way (``sys.exit``) where
    anything else may still need the teardown (``_may_end_at_once``), where the output cannot be
    flushed (the usual exit then reports it, status 120), and where ``own_process`` is False: the
    module run by another program's ``runpy`` call.
    """
    import atexit

    code = main()
    if not (own_process and _may_end_at_once() and _flushed()):
        sys.exit(code)
    atexit._run_exitfuncs()  # CPython's own call at exit; it clears the handlers it ran
    if not _flushed():  # what the handlers wrote
        sys.exit(code)
    os._exit(code or 0)


if __name__ == "__main__":
    run()
