"""Saving and loading a Sequential: one .npz file that NumPy reads without pickle.

The file holds the architecture, loss, optimizer and schedule as a JSON record,
the flat parameter vector ``theta``, BatchNorm's running statistics
(``buffers``), the optimizer's state arrays and the state of the model's random
generator (JSON). A reader ignores arrays it does not know, so
the random state, a later addition, needed no new format version: files without
it load, and a reader from before it reads files with it.
``Sequential.save`` and ``fastbp.load`` are these functions.
"""
import contextlib
import dataclasses
import json
import math
import os
import socket
import stat
import tempfile
import time
import zipfile
import zlib

import numpy as np

from . import losses, optimizers
from ._validation import first_nonfinite
from ._version import __version__
from .layers import Dense, layer_from_config
from .lowering import named_views, norm_layout

FORMAT = "fastbp-model"
FORMAT_VERSION = 1


def save_model(model, path):
    """Write ``model`` to one .npz file: architecture as JSON, parameters, optimizer state,
    random state.

    The file gets exactly the name given (NumPy's ".npz" suffix is not added).
    It is written whole under a temporary name in the same folder and then
    renamed over ``path``, so a crash, a kill or a full disk during a save
    leaves the file that was there before intact, never half a file. A failed
    save raises an OSError that names the path and the cause. A process killed
    mid-save can leave its temporary file, ``.<name>.fastbp-tmp-<host>-<pid>-<random>``,
    beside the target; the next save to the same path removes those of processes
    on this host that have ended, and any that has not been written to for an hour,
    never one that a live save is writing.
    """
    arrays = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "fastbp_version": np.array(__version__),
        "architecture": np.array(json.dumps(model.get_config())),
        "theta": model.theta,
        # BatchNorm's running statistics, bit for bit (empty without BatchNorm).
        "buffers": model.buffers,
        # The generator that shuffles and seeds dropout in fit, so that training goes on
        # after a load as it would have without one. Its state is a dict of ints: JSON.
        "rng_state": np.array(json.dumps(model._rng.bit_generator.state)),
    }
    if model.optimizer is not None and model.optimizer.state is not None:
        for i, s in enumerate(model.optimizer.state):
            arrays[f"optimizer_state_{i}"] = s
    write_whole(path, lambda fh: np.savez(fh, **arrays))


# Formats of other frameworks: a model saved under such a name would be an .npz that the
# name promises to be something else.
FOREIGN_EXTENSIONS = {".h5": "Keras/HDF5", ".hdf5": "HDF5", ".keras": "Keras", ".pt": "PyTorch",
                      ".pth": "PyTorch", ".ckpt": "a checkpoint format", ".pkl": "pickle",
                      ".pickle": "pickle", ".joblib": "joblib", ".onnx": "ONNX",
                      ".safetensors": "safetensors", ".pb": "TensorFlow", ".json": "JSON",
                      ".npy": "a single NumPy array"}


def check_save_path(path):
    """TypeError unless ``path`` is a str, bytes or os.PathLike; ValueError for the extension of
    another format, which save would write .npz under (``Sequential.save``, ``fastbp train``)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    name = os.fsdecode(os.fspath(path))
    extension = os.path.splitext(name)[1].lower()
    if extension in FOREIGN_EXTENSIONS:
        hint = " (model.to_onnx writes ONNX)" if extension == ".onnx" else (
            " (model.to_torch() gives a torch module to save with torch.save)" if extension in (".pt", ".pth")
            else "")
        raise ValueError(f"path {name!r} has the extension {extension!r} of {FOREIGN_EXTENSIONS[extension]}, "
                         f"but save writes fastbp's .npz format: name it "
                         f"{os.path.splitext(name)[0] + '.npz'!r}{hint}")


def write_whole(path, write):
    """Call ``write(fh)`` on a temporary file beside ``path``, make it durable, then rename
    it over ``path``. Until the rename, a reader of ``path`` sees the old file, whole."""
    # Through a symbolic link, as open(path, "wb") would write: replace the file it
    # points to, not the link.
    target = os.path.realpath(os.fsdecode(os.fspath(path)))
    folder, name = os.path.split(target)
    try:
        # The new file keeps the permissions of the one it replaces, as writing in place did.
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    _remove_stale_temporaries(folder, name)
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f"{_temporary_prefix(name)}{_HOST}-{os.getpid()}-")
    except OSError as err:
        raise _save_error(path, folder, err) from err
    renamed = False
    try:
        with open(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # Best effort: a file system without Unix permissions (FAT, some network mounts)
        # refuses chmod, and that is no reason to fail the save.
        with contextlib.suppress(OSError):
            os.chmod(temporary, mode)
        os.replace(temporary, target)
        renamed = True
    except OSError as err:
        raise _save_error(path, folder, err) from err
    finally:
        # Any failure, KeyboardInterrupt included, removes the temporary file.
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    _fsync_folder(folder)


# A temporary file's name says whose it is: the host and the pid of the saving process
# (mkstemp's random tail has no "-"), so that a later save can tell a dead process's
# leftover from a live save's file.
_HOST = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32] or "host"
# A live save writes its temporary file from start to end, so one untouched this long is
# no save in progress: its process ended on another host, or its pid was taken by another.
_STALE_SECONDS = 3600


def _temporary_prefix(name):
    return f".{name}.fastbp-tmp-"


def _process_ended(pid):
    """True where no process ``pid`` runs on this host. Windows has no signal 0 (os.kill
    would end the process), so there every pid counts as running and only age decides."""
    if os.name == "nt" or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: another user's live process
        return False
    return False


def _remove_stale_temporaries(folder, name):
    """Remove the temporary files that killed saves to ``folder/name`` left behind: those of
    ended processes on this host, and those not written to for ``_STALE_SECONDS``."""
    prefix = _temporary_prefix(name)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return  # the save itself reports a folder it cannot use
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        parts = entry.name[len(prefix):].rsplit("-", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue  # not a name this module makes: not ours to remove
        host, pid = parts[0], int(parts[1])
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            idle = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        ended = host == _HOST and pid != os.getpid() and _process_ended(pid)
        if ended or idle > _STALE_SECONDS:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _save_error(path, folder, err):
    cause = err.strerror or str(err)
    if isinstance(err, FileNotFoundError) and not os.path.isdir(folder):
        cause = f"the folder {folder!r} does not exist"
    message = f"could not save the model to {os.fsdecode(path)!r}: {cause}; a file already there is left as it was"
    # OSError(errno, message) is the errno's subclass: PermissionError, FileNotFoundError, ...
    return OSError(err.errno, message) if err.errno is not None else OSError(message)


def _umask():
    # os.umask reads the mask only by setting it; it is set back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder):
    """Make the rename durable too. Windows cannot open a folder for this, and some file
    systems refuse it: the save has happened by then, so neither is an error."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# The JSON records and marks of a file: 0-d strings (the architecture of a large network is
# some kilobytes; 4 Mi characters, 16 MiB in NumPy's UTF-32, leaves room and bounds the read).
_RECORDS = ("format", "fastbp_version", "architecture", "rng_state")
_MAX_RECORD_CHARS = 1 << 22


def _headers(path, data):
    """{key: (shape, dtype)} of every member, from its .npy header alone: no data is read."""
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    headers = {}
    for key in data.files:
        name = key + ".npy"
        try:
            info = data.zip.getinfo(name)
            with data.zip.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version not in read:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, _, dtype = read[version](fh)
                offset = fh.tell()
        except KeyError:
            raise ValueError(f"{path!r} is corrupt: its member {key!r} is not a .npy array") from None
        except Exception as err:
            raise ValueError(f"{path!r} is a damaged .npz archive: member {key!r}: {err}") from err
        if dtype.hasobject:
            raise ValueError(f"{path!r} is corrupt: its array {key!r} holds Python objects "
                             f"(dtype {dtype}); a model file holds numbers and strings only")
        # A header that promises more (or fewer) bytes than the member holds is refused here,
        # before anything is allocated for it.
        if offset + math.prod(shape) * dtype.itemsize != info.file_size:
            raise ValueError(f"{path!r} is corrupt: its array {key!r} declares shape {shape} of "
                             f"{dtype}, {math.prod(shape) * dtype.itemsize} bytes, but the member "
                             f"holds {info.file_size - offset}")
        headers[key] = (shape, dtype)
    return headers


def _record(path, data, headers, key):
    """The 0-d string ``key``, checked by its header before it is read."""
    shape, dtype = headers[key]
    if shape != () or dtype.kind != "U" or dtype.itemsize // 4 > _MAX_RECORD_CHARS:
        raise ValueError(f"{path!r} is corrupt: its {key!r} must be one string (of at most "
                         f"{_MAX_RECORD_CHARS} characters); got shape {shape}, dtype {dtype}")
    return str(data[key])


def _json(path, text, key):
    """json.loads(text), or a ValueError naming the file and the record (deep nesting included:
    the parser raises RecursionError on it)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path!r} has a corrupt {key} record: {err!r}") from err


def _count(path, config, key, limit=2**63 - 1):
    """config[key] (0 when absent) as a non-negative int, or a ValueError naming the file and the field."""
    value = config.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"{path!r} has a corrupt architecture record: {key!r} must be an integer "
                         f">= 0; got {value!r}")
    return value


def _expect(path, headers, key, shape, dtype, what):
    """ValueError naming the file and the array unless its header declares ``shape`` and ``dtype``."""
    got_shape, got_dtype = headers[key]
    if got_shape != shape or got_dtype != dtype:
        raise ValueError(f"{path!r} is corrupt: {what} have shape {got_shape} and dtype {got_dtype}; "
                         f"the architecture needs {shape} {dtype} (array {key!r})")


def load_model(path, model_class):
    """Load a model written by ``Sequential.save`` as a ``model_class`` (Sequential, which
    passes itself, so that this module need not import model.py); it predicts bit for bit
    as saved.

    A file that is not such a model, or a damaged one, raises a ValueError that names it.
    Nothing in the file is trusted: every array's count, shape and dtype is checked against
    the architecture and optimizer the file declares, from the arrays' headers, before
    anything the size of the network is allocated or read; then every value is checked to be
    finite (and the running variances and second moments >= 0).
    """
    source, path = path, (os.fsdecode(os.fspath(path)) if isinstance(path, (str, bytes, os.PathLike))
                          else path)  # the name messages show; a file object stays as it is
    try:
        data = np.load(source, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{path!r} is not a fastbp model file (not a readable .npz archive: {err})") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not a fastbp model file (a single .npy array, not a .npz archive)")
    with data:
        headers = _headers(path, data)
        try:
            return _load(path, data, headers, model_class)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            # A member whose header read well but whose data is damaged (bad CRC, cut short).
            if isinstance(err, FileNotFoundError):
                raise
            raise ValueError(f"{path!r} is a damaged .npz archive: {err}") from err


def _load(path, data, headers, model_class):
    """The model in an opened file, in stages: its format marks, its architecture record, the
    arrays' headers against what that record declares, then the model built from it and
    filled with the arrays' checked values."""
    _check_format(path, data, headers)
    declared = _read_architecture(path, data, headers)
    state_keys = _check_declared_sizes(path, headers, declared)
    rng_state = (_json(path, _record(path, data, headers, "rng_state"), "random-state")
                 if "rng_state" in headers else None)
    model = _build(path, declared, model_class)
    states = _fill(path, data, headers, model, state_keys, declared.optimizer)
    model.batches_tracked = declared.batches_tracked
    if "rng_state" in headers:
        try:
            model._rng.bit_generator.state = rng_state
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise ValueError(f"{path!r} has a corrupt random-state record: {err!r}") from err
    # A file written before the record existed leaves the generator the constructor made:
    # fresh from the saved seed (past the draws of the initial weights), not where the
    # saved model's was, so training after such a load takes other shuffles and masks.
    model.epochs_trained = declared.epochs_trained
    model.loss = declared.loss
    if declared.optimizer is not None:
        model.optimizer = declared.optimizer
        if states:
            declared.optimizer.state = states
            declared.optimizer.steps = declared.optimizer_steps
    return model


def _check_format(path, data, headers):
    """ValueError unless the file carries fastbp's marker, the arrays every model has, and a
    format version this fastbp reads."""
    if "format" not in headers or headers["format"][1].kind != "U" or \
            _record(path, data, headers, "format") != FORMAT:
        raise ValueError(f"{path!r} is not a fastbp model file (no '{FORMAT}' marker; keys: {sorted(headers)})")
    missing = [key for key in ("format_version", "architecture", "theta") if key not in headers]
    if missing:
        raise ValueError(f"{path!r} is corrupt: it lacks the arrays {missing}")
    shape, dtype = headers["format_version"]
    if shape != () or dtype.kind not in "iu":
        raise ValueError(f"{path!r} is corrupt: its 'format_version' must be one integer; got shape "
                         f"{shape}, dtype {dtype}")
    version = int(data["format_version"])
    if version > FORMAT_VERSION:
        raise ValueError(f"{path!r} has model format version {version}; this fastbp reads up to "
                         f"{FORMAT_VERSION}: upgrade fastbp")
    if version < 1:
        raise ValueError(f"{path!r} is corrupt: its 'format_version' is {version}; versions start at 1")


@dataclasses.dataclass(frozen=True)
class _Declared:
    """What a file's architecture record declares, each part checked, before anything is built."""

    config: dict
    dtype: np.dtype
    layers: list
    loss: object  # a Loss, or None for a model saved before compile
    optimizer: object  # an Optimizer, or None
    epochs_trained: int
    batches_tracked: int
    optimizer_steps: int


def _read_architecture(path, data, headers):
    """The file's architecture record as a _Declared; ValueError naming the file where it is corrupt."""
    config = _json(path, _record(path, data, headers, "architecture"), "architecture")
    try:
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError("not a JSON object with a 'layers' list")
        if config.get("dtype") not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {config.get('dtype')!r}")
        dtype = np.dtype(config["dtype"])
        layers = [layer_from_config(entry["type"], entry["config"]) for entry in config["layers"]]
        loss = (losses.from_config(config.get("loss_config") or config["loss"]) if config.get("loss")
                else None)
        optimizer = (optimizers.from_config(config["optimizer"], config["schedule"])
                     if config.get("optimizer") else None)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as err:
        raise ValueError(f"{path!r} has a corrupt architecture record: {err!r}") from err
    return _Declared(config, dtype, layers, loss, optimizer, _count(path, config, "epochs_trained"),
                     _count(path, config, "batches_tracked"), _count(path, config, "optimizer_steps"))


def _check_declared_sizes(path, headers, declared):
    """ValueError unless the arrays' headers hold the sizes the architecture declares (checked
    before the model, the size of the network, is built); returns the optimizer state's keys."""
    dense = [(layer.in_features, layer.out_features) for layer in declared.layers if isinstance(layer, Dense)]
    layout = norm_layout(declared.layers, dense)
    _expect(path, headers, "theta", (layout.n_parameters,), declared.dtype, "its parameters")
    if "buffers" in headers:
        _expect(path, headers, "buffers", (layout.n_buffers,), declared.dtype, "its running statistics")
    elif layout.n_buffers:
        raise ValueError(f"{path!r} is corrupt: it lacks the arrays ['buffers'] (BatchNorm's running "
                         f"statistics)")
    optimizer = declared.optimizer
    state_keys = sorted((k for k in headers if k.startswith("optimizer_state_")),
                        key=lambda k: (len(k), k))
    lengths = optimizer.state_lengths(layout.n_parameters) if optimizer is not None else []
    expected_keys = [f"optimizer_state_{i}" for i in range(len(lengths))]
    if state_keys and state_keys != expected_keys:
        declared_state = (f"{type(optimizer).__name__} keeps {expected_keys}" if optimizer is not None
                          else "it declares no optimizer")
        raise ValueError(f"{path!r} is corrupt: it holds the optimizer state arrays {state_keys}; "
                         f"{declared_state}")
    for key, length in zip(state_keys, lengths):
        _expect(path, headers, key, (length,), declared.dtype, "its optimizer state")
    return state_keys


def _build(path, declared, model_class):
    """A new model_class of the declared layers, dtype and seed, its preprocessing restored."""
    config = declared.config
    try:
        model = model_class(declared.layers, dtype=config["dtype"], seed=config.get("seed"))
        # The inputs' standardization and the class labels, saved since the command line
        # standardizes its features: absent from older files, which load without them.
        model._restore_preprocessing(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path!r} has a corrupt architecture record: {err!r}") from err
    return model


def _fill(path, data, headers, model, state_keys, optimizer):
    """Read theta and the buffers into the model; returns the optimizer's state arrays. ValueError
    where a value is not finite, or a variance or second moment is negative."""
    model.theta[...] = data["theta"]
    if "buffers" in headers:
        model.buffers[...] = data["buffers"]
    states = [np.ascontiguousarray(data[key]) for key in state_keys]
    named = named_views(model.theta, model.buffers, model.layers, model._shapes)
    named += [(key, array) for key, array in zip(state_keys, states)]
    bad = first_nonfinite(named)
    if bad is not None:
        raise ValueError(f"{path!r} is corrupt: {bad}; a model's parameters, statistics and optimizer "
                         f"state are finite")
    negative = [(name, array) for name, array in named if name.endswith(".running_var")]
    if optimizer is not None and states:
        negative += [(state_keys[i], states[i]) for i in optimizer.nonnegative_states]
    for name, array in negative:
        if np.any(array < 0):
            at = int(np.argmax(array < 0))
            raise ValueError(f"{path!r} is corrupt: {name} holds {array[at].item()!r} at index {at}; it "
                             f"must be >= 0 (a variance)")
    return states
