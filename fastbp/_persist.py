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
import json
import os
import stat
import tempfile

import numpy as np

from . import losses, optimizers
from .layers import layer_from_config

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
    mid-save can leave its temporary file, ``.<name>.<random>.tmp``, beside the
    target; later saves neither use nor remove it (another process might be
    writing it): delete it by hand.
    """
    from . import __version__

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
    _write_whole(path, lambda fh: np.savez(fh, **arrays))


def _write_whole(path, write):
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
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix="." + name + ".", suffix=".tmp")
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


def load_model(path, model_class):
    """Load a model written by ``Sequential.save`` as a ``model_class`` (Sequential, which
    passes itself, so that this module need not import model.py); it predicts bit for bit
    as saved.

    A file that is not such a model, or a damaged one, raises a ValueError that names it.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{path!r} is not a fastbp model file (not a readable .npz archive: {err})") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not a fastbp model file (a single .npy array, not a .npz archive)")
    with data:
        try:
            # Read every member now: a damaged one (bad CRC, cut short) fails here, with the path.
            arrays = {key: data[key] for key in data.files}
        except Exception as err:
            raise ValueError(f"{path!r} is a damaged .npz archive: {err}") from err
    if "format" not in arrays or str(arrays["format"]) != FORMAT:
        raise ValueError(f"{path!r} is not a fastbp model file (no '{FORMAT}' marker; keys: {sorted(arrays)})")
    missing = [key for key in ("format_version", "architecture", "theta") if key not in arrays]
    if missing:
        raise ValueError(f"{path!r} is corrupt: it lacks the arrays {missing}")
    version = int(arrays["format_version"])
    if version > FORMAT_VERSION:
        raise ValueError(f"{path!r} has model format version {version}; this fastbp reads up to "
                         f"{FORMAT_VERSION}: upgrade fastbp")
    try:
        config = json.loads(str(arrays["architecture"]))
        layers = [layer_from_config(entry["type"], entry["config"]) for entry in config["layers"]]
        model = model_class(layers, dtype=config["dtype"], seed=config.get("seed"))
        # The inputs' standardization and the class labels, saved since the command line
        # standardizes its features: absent from older files, which load without them.
        model._restore_preprocessing(config)
        loss = (losses.from_config(config.get("loss_config") or config["loss"]) if config.get("loss")
                else None)
        optimizer = (optimizers.from_config(config["optimizer"], config["schedule"])
                     if config.get("optimizer") else None)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path!r} has a corrupt architecture record: {err!r}") from err
    theta = arrays["theta"]
    if theta.shape != model.theta.shape or theta.dtype != model.theta.dtype:
        raise ValueError(f"{path!r} is corrupt: its parameters have shape {theta.shape} and dtype "
                         f"{theta.dtype}; the architecture needs {model.theta.shape} {model.theta.dtype}")
    model.theta[...] = theta
    buffers = arrays.get("buffers", np.zeros(0, dtype=model.dtype))
    if buffers.shape != model.buffers.shape or buffers.dtype != model.buffers.dtype:
        raise ValueError(f"{path!r} is corrupt: its running statistics have shape {buffers.shape} and "
                         f"dtype {buffers.dtype}; the architecture needs {model.buffers.shape} "
                         f"{model.buffers.dtype}")
    model.buffers[...] = buffers
    model.batches_tracked = int(config.get("batches_tracked", 0))
    if "rng_state" in arrays:
        try:
            model._rng.bit_generator.state = json.loads(str(arrays["rng_state"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path!r} has a corrupt random-state record: {err!r}") from err
    # A file written before the record existed leaves the generator the constructor made:
    # fresh from the saved seed (past the draws of the initial weights), not where the
    # saved model's was, so training after such a load takes other shuffles and masks.
    model.epochs_trained = config.get("epochs_trained", 0)
    model.loss = loss
    if optimizer is not None:
        model.optimizer = optimizer
        states = [arrays[k] for k in sorted(arrays) if k.startswith("optimizer_state_")]
        if states:
            optimizer.state = states
            optimizer.steps = int(config.get("optimizer_steps", 0))
    return model
