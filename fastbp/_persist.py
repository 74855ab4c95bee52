"""Saving and loading a Sequential: one .npz file that NumPy reads without pickle.

The file holds the architecture, loss, optimizer and schedule as a JSON record,
the flat parameter vector ``theta`` and the optimizer's state arrays.
``Sequential.save`` and ``fastbp.load`` are these functions.
"""
import json

import numpy as np

from . import losses, optimizers
from .layers import layer_from_config

FORMAT = "fastbp-model"
FORMAT_VERSION = 1


def save_model(model, path):
    """Write ``model`` to one .npz file: architecture as JSON, parameters, optimizer state."""
    from . import __version__

    arrays = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "fastbp_version": np.array(__version__),
        "architecture": np.array(json.dumps(model.get_config())),
        "theta": model.theta,
    }
    if model.optimizer is not None and model.optimizer.state is not None:
        for i, s in enumerate(model.optimizer.state):
            arrays[f"optimizer_state_{i}"] = s
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_model(path):
    """Load a model written by ``Sequential.save``; it predicts bit for bit as saved.

    A file that is not such a model, or a damaged one, raises a ValueError that names it.
    """
    # model.py imports this module (Sequential.save, fastbp.load): import it here, not at the top.
    from .model import Sequential

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
        model = Sequential(layers, dtype=config["dtype"], seed=config.get("seed"))
        loss = losses.get(config["loss"]) if config.get("loss") else None
        optimizer = (optimizers.from_config(config["optimizer"], config["schedule"])
                     if config.get("optimizer") else None)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path!r} has a corrupt architecture record: {err!r}") from err
    theta = arrays["theta"]
    if theta.shape != model.theta.shape or theta.dtype != model.theta.dtype:
        raise ValueError(f"{path!r} is corrupt: its parameters have shape {theta.shape} and dtype "
                         f"{theta.dtype}; the architecture needs {model.theta.shape} {model.theta.dtype}")
    model.theta[...] = theta
    model.epochs_trained = config.get("epochs_trained", 0)
    model.loss = loss
    if optimizer is not None:
        model.optimizer = optimizer
        states = [arrays[k] for k in sorted(arrays) if k.startswith("optimizer_state_")]
        if states:
            optimizer.state = states
            optimizer.steps = int(config.get("optimizer_steps", 0))
    return model
