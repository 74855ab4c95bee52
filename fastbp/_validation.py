"""Input checks at the public boundary: once per call, with messages that name the argument,
what it must be and what it is.

One policy for every public entry point (layers, optimizers, schedules, datasets, the model,
the estimators, the command line): a TypeError for a value of the wrong type (a str where a
number belongs, a float where an integer does; bool is not a number here), a ValueError for a
value of the right type outside its range.
"""
import math
import numbers

import numpy as np

# Elements per block of the finiteness check of the input (256 KiB of float32).
_FINITE_BLOCK = 1 << 16


def _all_finite(flat):
    """No NaN or inf in ``flat``: NumPy over blocks, no temporary the size of X. Not the loop's
    compiled ``all_finite`` (the same test): a process's first compiled call sets up numba's
    target context (0.4-0.5 s), which a cold fit's compile workers need not wait for
    (``backends/_kernel_tables.py``, ``_compile_ahead``)."""
    return all(np.isfinite(flat[i:i + _FINITE_BLOCK]).all() for i in range(0, flat.size, _FINITE_BLOCK))


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
    first = len(arr) * part[0] // part[1]
    block = arr[first:len(arr) * (part[0] + 1) // part[1]]
    if not _all_finite(block.ravel()):
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


def describe(value):
    """What a message says was given: ``str 'x'``, ``float 2.5``, ``float32 array of shape (3,)``."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return f"{type(value).__name__} {value!r}"


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def check_real(value, argument):
    """``value`` as a float; TypeError unless it is a real number (bool is not)."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a number; got {describe(value)}")
    return float(value)


def check_int(value, argument, minimum=1):
    """``value`` as an int; TypeError unless it is an integer (bool is not), ValueError below ``minimum``."""
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argument} must be an integer; got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{argument} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_bool(value, argument):
    """``value`` as a bool; TypeError unless it is True or False (NumPy's bools included)."""
    if not _is_bool(value):
        raise TypeError(f"{argument} must be True or False; got {describe(value)}")
    return bool(value)


def check_finite(value, argument):
    """``value`` as a float, a finite number."""
    number = check_real(value, argument)
    if not math.isfinite(number):
        raise ValueError(f"{argument} must be a finite number; got {value!r}")
    return number


def check_nonnegative(value, argument):
    """``value`` as a float, a finite number >= 0."""
    number = check_real(value, argument)
    if not (number >= 0 and math.isfinite(number)):
        raise ValueError(f"{argument} must be a finite number >= 0; got {value!r}")
    return number


def check_positive(value, argument):
    """``value`` as a float, a finite number > 0."""
    number = check_real(value, argument)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{argument} must be a finite number > 0; got {value!r}")
    return number


def check_fraction(value, argument, low=0.0, high=1.0):
    """``value`` as a float in [low, high)."""
    number = check_real(value, argument)
    if not low <= number < high:
        raise ValueError(f"{argument} must be a number in [{low}, {high}); got {value!r}")
    return number


def check_in_range(value, argument, low, high, low_open=False, high_open=False):
    """``value`` as a finite float in [low, high], each end open where asked."""
    number = check_real(value, argument)
    inside = (math.isfinite(number) and (number > low if low_open else number >= low)
              and (number < high if high_open else number <= high))
    if not inside:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{argument} must be in {span}, finite; got {number!r}")
    return number


def check_seed(seed, argument="seed", random_state=False):
    """``seed`` checked, as given: None, an int >= 0 (as an int) or a numpy.random.Generator, and
    with ``random_state`` a numpy.random.RandomState too (scikit-learn's kind, which fit takes)."""
    generators = (np.random.Generator, np.random.RandomState) if random_state else (np.random.Generator,)
    if seed is None or isinstance(seed, generators):
        return seed
    if _is_bool(seed) or not isinstance(seed, numbers.Integral):
        kinds = "a numpy.random.Generator or RandomState" if random_state else "a numpy.random.Generator"
        raise TypeError(f"{argument} must be None, an int >= 0 or {kinds}; got {describe(seed)}")
    if seed < 0:
        raise ValueError(f"{argument} must be >= 0; got {seed}")
    return int(seed)


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
