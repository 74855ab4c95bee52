"""Input checks at the public boundary: once per call, with messages that name the argument."""
import numbers

import numpy as np

from .kernels.cpu._finite import all_finite


def reject_sparse(X, argument="X"):
    """A TypeError for a SciPy sparse matrix or array, which NumPy would wrap as one object."""
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{argument} is a SciPy sparse {type(X).__name__} of shape {X.shape}; Sequential "
                        f"takes dense arrays: pass {argument}.toarray() (fastbp.MLPClassifier and "
                        f"MLPRegressor accept sparse CSR and CSC input as they are)")


def check_features(X, n_features, dtype, argument="X", part=(0, 1)):
    """X as a C-contiguous (n_samples, n_features) array of ``dtype``, finite and non-empty.

    ``part`` = (k, parts) checks the finiteness of the k-th of ``parts`` blocks of rows only:
    each rank of a data-parallel fit checks its block, so that none reads a memory-mapped X
    through.
    """
    if hasattr(X, "__cuda_array_interface__") and not isinstance(X, np.ndarray):
        raise TypeError(f"{argument} must be host data (a NumPy array or array-like); got a device "
                        f"array of type {type(X).__name__}: copy it to the host first")
    reject_sparse(X, argument)
    try:
        arr = np.asarray(X)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{argument} must be a 2-D numeric array; could not convert: {err}") from err
    if arr.dtype.kind not in "iufb":
        raise ValueError(f"{argument} must be numeric; got dtype {arr.dtype}")
    if arr.ndim == 1 and n_features == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{argument} must be 2-D of shape (n_samples, {n_features}); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{argument} is empty: it has 0 samples (shape {arr.shape})")
    if arr.shape[1] != n_features:
        raise ValueError(f"{argument} must have {n_features} features (columns) for this model; "
                         f"got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    # The compiled check of the training loop: one pass, no temporary array.
    first = len(arr) * part[0] // part[1]
    block = arr[first:len(arr) * (part[0] + 1) // part[1]]
    if not all_finite(block.ravel()):
        bad = np.argwhere(~np.isfinite(block))[0]
        raise ValueError(f"{argument} contains NaN or inf (first at row {first + bad[0]}, column {bad[1]})")
    return arr


def check_sample_weight(sample_weight, n_samples, dtype, argument="sample_weight"):
    """A (n_samples,) array of finite non-negative weights with a positive sum, or an empty one."""
    if sample_weight is None:
        return np.empty(0, dtype=dtype)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"{argument} must have shape ({n_samples},), one weight per sample; "
                         f"got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{argument} must be finite and non-negative")
    if not w.sum() > 0:
        raise ValueError(f"{argument} must have a positive sum; got all zeros")
    return np.ascontiguousarray(w, dtype=dtype)


def check_dtype(dtype, argument="dtype"):
    """np.dtype('float32') or np.dtype('float64') from a name or anything np.dtype takes."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in ("float32", "float64"):
        raise ValueError(f"{argument} must be 'float32' or 'float64'; got {dtype!r}")
    return np.dtype(name)


def check_int(value, argument, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{argument} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_fraction(value, argument, low=0.0, high=1.0):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value < high:
        raise ValueError(f"{argument} must be a number in [{low}, {high}); got {value!r}")
    return float(value)


def check_same_length(X, y, x_name="X", y_name="y"):
    if len(X) != len(y):
        raise ValueError(f"{x_name} and {y_name} must have the same number of samples; got "
                         f"{len(X)} and {len(y)}")


def first_nonfinite(named):
    """'<name> holds <value> at index <i>' for the first non-finite entry of [(name, array)], or None."""
    for name, array in named:
        array = np.asarray(array)
        if array.dtype.kind in "fc" and array.size and not np.all(np.isfinite(array)):
            at = np.unravel_index(int(np.argmin(np.isfinite(array).ravel())), array.shape)
            index = at[0] if len(at) == 1 else tuple(int(i) for i in at)
            return f"{name} holds {array[at].item()!r} at index {index}"
    return None


def check_weight_values(array, name, variance=False):
    """TypeError unless ``array`` holds real numbers, ValueError naming ``name`` and the entry
    unless they are finite (and >= 0 for a ``variance``): what any array that becomes a
    parameter or a running statistic must pass."""
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers; got dtype {array.dtype}")
    bad = first_nonfinite([(name, array)])
    if bad is not None:
        raise ValueError(bad)
    if variance and np.any(array < 0):
        at = np.unravel_index(int(np.argmax(array < 0)), array.shape)
        index = at[0] if len(at) == 1 else tuple(int(i) for i in at)
        raise ValueError(f"{name} holds {array[at].item()!r} at index {index}; it must be >= 0 (a variance)")
