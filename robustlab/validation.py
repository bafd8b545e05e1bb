"""Argument checks shared by the public entry points.

Every check raises `ValueError` (or `TypeError` for a wrong type) that names the
argument and the allowed range and ends, as Keras's own errors do, with
"Received: name=value". Nothing is clamped or silently fixed.

The checks here need only NumPy (the maths modules use them without
importing a framework); those that need Keras, of a classifier and of
`tf.data` inputs, are in `robustlab.model_validation`.

The private array checks at the end are shared by the NumPy maths modules
(`robustlab.heavy_ball`, `robustlab.iterate_statistics`, `robustlab.bounds`),
so that all of them speak with one voice; for arrays they quote the first
offending entry with its index, so a bad direction among 10^5 can be found.
"""

import math
import numbers
import os

import numpy as np

__all__ = [
    "MAX_SEED",
    "check_bool",
    "check_broadcast",
    "check_distinct",
    "check_finite_at_least",
    "check_finite_in",
    "check_finite_positive",
    "check_folder",
    "check_inputs",
    "check_int_at_least",
    "check_int_in_range",
    "check_labels",
    "check_seed",
    "check_value_range",
    "check_verbose",
]


def _received(name, value):
    return f"Received: {name}={value!r}"


def _is_real_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _real_scalar(name, value, requirement):
    """`value` as a real number (a 0-d NumPy array of one included); a
    TypeError naming the requirement for anything else."""
    if (isinstance(value, np.ndarray) and value.ndim == 0
            and value.dtype.kind in "iuf"):
        value = value.item()
    if not _is_real_number(value):
        raise TypeError(f"Argument `{name}` must be {requirement}. "
                        + _received(name, value))
    return value


def _is_finite(value):
    """Whether the real number `value` is finite as a float: an integer too
    large for a float (10**400) is not, where `math.isfinite` and `float`
    would raise OverflowError."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_finite_at_least(name, value, minimum):
    requirement = f"a finite number >= {minimum:g}"
    value = _real_scalar(name, value, requirement)
    if not _is_finite(value) or value < minimum:
        raise ValueError(f"Argument `{name}` must be {requirement}. "
                         + _received(name, value))
    return float(value)


def check_finite_positive(name, value):
    requirement = "a finite number > 0"
    value = _real_scalar(name, value, requirement)
    if not _is_finite(value) or value <= 0:
        raise ValueError(f"Argument `{name}` must be {requirement}. "
                         + _received(name, value))
    return float(value)


def check_finite_in(name, value, low, high=math.inf, *, include_low=False,
                    include_high=False, why=""):
    """`value` as a float in the interval from `low` to `high` (open ends
    unless included; `high=inf` reads "> low"), the whole interval named in
    the error, with `why` (a parenthesis, say) after it."""
    if high == math.inf:
        requirement = f"a finite number {'>=' if include_low else '>'} {low:g}"
    else:
        requirement = (f"a finite number in {'[' if include_low else '('}{low:g}, "
                       f"{high:g}{']' if include_high else ')'}")
    requirement += why
    value = _real_scalar(name, value, requirement)
    inside = (_is_finite(value)
              and (low <= value if include_low else low < value)
              and (value <= high if include_high else value < high))
    if not inside:
        raise ValueError(f"Argument `{name}` must be {requirement}. " + _received(name, value))
    return float(value)


def check_int_at_least(name, value, minimum):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(
            f"Argument `{name}` must be an integer >= {minimum}. "
            + _received(name, value)
        )
    if value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. "
            + _received(name, value)
        )
    return int(value)


def check_int_in_range(name, value, minimum, maximum):
    """`value` as a Python int in [minimum, maximum] (the whole interval
    named in the error, below it too)."""
    requirement = f"Argument `{name}` must be an integer in [{minimum}, {maximum}]. "
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(requirement + _received(name, value))
    if not minimum <= value <= maximum:
        raise ValueError(requirement + _received(name, value))
    return int(value)


MAX_SEED = 2**31 - 1
"""The largest seed accepted: every backend takes it (JAX's keys are 32-bit
unsigned, and robustlab derives a few seeds from a given one by adding
small offsets)."""


def check_seed(name, value):
    """`value` as a Python int in [0, MAX_SEED] (NumPy integers included:
    Keras's seed generators refuse them, so they are converted here)."""
    value = check_int_at_least(name, value, 0)
    if value > MAX_SEED:
        raise ValueError(
            f"Argument `{name}` must be an integer in [0, {MAX_SEED}]. "
            + _received(name, value)
        )
    return value


def check_distinct(name, values):
    """`values` as a list, none of them repeated."""
    values = list(values)
    if len(set(values)) != len(values):
        raise ValueError(f"Argument `{name}` must not repeat a value. "
                         + _received(name, values))
    return values


def check_folder(name, path):
    """`path`, where a folder is or can be made: nothing but folders on the
    way to it (a folder that does not exist yet is made later). An empty
    path is refused, not taken for the current folder."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        # os.fspath's TypeError named no argument.
        raise TypeError(f"Argument `{name}` must be a path (a str or os.PathLike). "
                        + _received(name, path))
    if os.fspath(path) in ("", b""):
        raise ValueError(
            f"Argument `{name}` must be a folder, or a path where one can be "
            "made; an empty path names none. " + _received(name, path))
    existing = os.path.abspath(path)
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        there = "a file is there" if existing == os.path.abspath(path) else (
            f"{existing!r} is a file")
        raise ValueError(
            f"Argument `{name}` must be a folder, or a path where one can be "
            f"made; {there}. " + _received(name, path))
    # The nearest existing folder must take new files (and folders); a
    # read-only one would fail only when the first result is written.
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"Argument `{name}` must be a folder this process can write in; "
            f"{existing!r} is not writable. " + _received(name, path))
    return path


def check_verbose(verbose):
    """`verbose` as 0 (silent) or 1 (a bool is taken as 0 or 1)."""
    if isinstance(verbose, numbers.Integral) and verbose in (0, 1):
        return int(verbose)
    raise ValueError("Argument `verbose` must be 0 (silent) or 1 (progress and "
                     "tables). " + _received("verbose", verbose))


def check_bool(name, value):
    """`value` as a bool (True, False, or the integers 1 and 0); a TypeError
    for anything else (`bool("no")` is True, so a string must not pass as a
    flag)."""
    if not (isinstance(value, (bool, np.bool_))
            or (isinstance(value, numbers.Integral) and value in (0, 1))):
        raise TypeError(f"Argument `{name}` must be True or False. "
                        + _received(name, value))
    return bool(value)


def check_value_range(value_range):
    if value_range is None:
        return None
    if isinstance(value_range, (str, bytes)):
        # ("0", "1") from "01" would pass the float conversion below.
        raise ValueError(
            "Argument `value_range` must be None or a pair (low, high) of "
            "finite numbers with low < high. " + _received("value_range", value_range))
    try:
        if len(value_range) != 2 or not all(map(_is_real_number, value_range)):
            # float("1") and float(True) would pass as numbers.
            raise TypeError
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError, OverflowError):  # 10**400: too large a float
        raise ValueError(
            "Argument `value_range` must be None or a pair (low, high) of "
            "finite numbers with low < high. " + _received("value_range", value_range)
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            "Argument `value_range` must be None or a pair (low, high) of "
            "finite numbers with low < high. " + _received("value_range", value_range)
        )
    return (low, high)


def check_inputs(x, value_range, name="x", *, floating=False):
    """Inputs must be numbers, finite and, when a value range is declared,
    inside it. bfloat16 (ml_dtypes, what a mixed-precision array converts to)
    counts as a floating type. With `floating`, integer and boolean inputs are
    refused: an attack moves inputs by fractions of a unit, and a result typed
    like integer inputs would truncate it."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(
            f"Argument `{name}` must be a batch of examples (an array whose "
            f"first axis indexes them). Received: {name}={x!r}")
    if x.size == 0:
        raise ValueError(
            f"Argument `{name}` must hold at least one example. "
            f"Received: {name} with shape {x.shape}"
        )
    if x.dtype.kind == "V":
        try:
            x = x.astype(np.float32)
        except (TypeError, ValueError):
            pass
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(
            f"Argument `{name}` must be numeric. Received: {name} of dtype {x.dtype}"
        )
    if floating and not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"Argument `{name}` must hold floating-point inputs; convert them "
            f"first, e.g. {name}.astype('float32') (and scale them to "
            f"`value_range`). Received: {name} of dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"Argument `{name}` must be finite (no NaN or inf). "
            f"Received: {name} with {int(np.sum(~np.isfinite(x)))} non-finite values"
        )
    if value_range is not None:
        low, high = value_range
        x_min, x_max = float(np.min(x)), float(np.max(x))
        if x_min < low or x_max > high:
            raise ValueError(
                f"Argument `{name}` must lie inside value_range=({low:g}, "
                f"{high:g}); scale the data or declare its range with "
                f"`value_range=`. Received: {name} with values in "
                f"[{x_min:g}, {x_max:g}]"
            )


def check_labels(y, num_classes, num_examples, name="y"):
    """Labels must be class indices in [0, num_classes) or one-hot rows.

    Returns:
        True when the labels are sparse class indices, False when one-hot.
    """
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != num_examples:
        raise ValueError(
            f"Argument `{name}` must have one label per input ({num_examples}). "
            f"Received: {name}={y!r}" if y.ndim == 0 else
            f"Argument `{name}` must have one label per input ({num_examples}). "
            f"Received: {name} with shape {y.shape}"
        )
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        if not np.issubdtype(y.dtype, np.number):
            raise TypeError(
                f"One-hot labels `{name}` must be numbers. "
                f"Received: {name} of dtype {y.dtype}")
        if not np.all(np.isfinite(y)):
            raise ValueError(
                f"One-hot labels `{name}` must be finite. Received: {name} with "
                f"{int(np.sum(~np.isfinite(y)))} non-finite values")
        if np.any(y < 0):
            raise ValueError(
                f"One-hot labels `{name}` must be non-negative. "
                f"Received: {name} with min {float(np.min(y)):g}"
            )
        if not np.allclose(y.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError(
                f"One-hot labels `{name}` must sum to 1 along the class axis. "
                f"Received: {name} with row sums in "
                f"[{float(y.sum(1).min()):g}, {float(y.sum(1).max()):g}]"
            )
        return False
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be class indices of shape (n,) or (n, 1), "
            f"or one-hot of shape (n, {num_classes}) to fit the model's "
            f"{num_classes} outputs. Received: {name} with shape {y.shape}"
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(
                f"Class-index labels `{name}` must be whole numbers. "
                f"Received: {name} with non-integer values"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise TypeError(
            f"Labels `{name}` must be integers or one-hot floats. "
            f"Received: {name} of dtype {y.dtype}"
        )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"Labels `{name}` must be class indices in [0, {num_classes - 1}] to "
            f"fit the model's {num_classes} outputs. Received: {name} with "
            f"values in [{y.min()}, {y.max()}]"
        )
    return True


# ---------------------------------------------------------------------------
# Array arguments: a real number or an array of them, checked entry by entry,
# and weights given as one array or as a list of per-layer arrays.
# ---------------------------------------------------------------------------


def _float_array(name, value):
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, np.ndarray) and value.dtype == bool
    ):
        raise _booleans_refused(name, value)
    # None would become NaN and "0.1" 0.1: neither is a number handed over.
    not_numbers = value is None or isinstance(value, (str, bytes))
    try:
        raw = None if not_numbers else np.asarray(value)
    except (TypeError, ValueError):
        raw = None
    # Kind "V" covers ml_dtypes' bfloat16 (what a mixed-precision JAX array
    # converts to); what does not convert to float64 is refused below.
    if raw is not None and raw.dtype.kind in "iufV":
        try:
            array = raw.astype(np.float64, copy=False)
        except (TypeError, ValueError):
            array = None
        if array is not None:
            # NumPy reads a boolean among numbers as 1 or 0 ([0.5, True] is
            # [0.5, 1.0]); only lists and tuples can mix them. The walk over
            # the elements is needed only where a 0 or a 1 came out.
            if (isinstance(value, (list, tuple))
                    and np.any((array == 0) | (array == 1)) and _holds_bool(value)):
                raise _booleans_refused(name, value)
            return array
    raise TypeError(
        f"Argument `{name}` must be a real number or an array of real "
        f"numbers. " + _received(name, value)
    )


def _booleans_refused(name, value):
    return TypeError(
        f"Argument `{name}` must be a real number or an array of real "
        f"numbers, not booleans. " + _received(name, value)
    )


def _holds_bool(values):
    """Whether nested lists or tuples hold a boolean or an array of them."""
    for value in values:
        kind = type(value)
        if kind is float or kind is int:
            continue
        if kind is bool or kind is np.bool_:
            return True
        if isinstance(value, np.generic):  # another NumPy scalar
            continue
        if isinstance(value, (list, tuple)):
            if _holds_bool(value):
                return True
            continue
        # NumPy and JAX arrays (a NumPy dtype), TensorFlow tensors (a DType).
        dtype = getattr(value, "dtype", None)
        if getattr(dtype, "kind", None) == "b" or getattr(dtype, "is_bool", False):
            return True
    return False


def check_broadcast(**arrays):
    """The shape the named arrays broadcast to; a ValueError naming them
    and their shapes when they do not."""
    try:
        return np.broadcast_shapes(*(np.shape(a) for a in arrays.values()))
    except ValueError:
        names = ", ".join(f"`{name}`" for name in arrays)
        shapes = ", ".join(f"{name}={np.shape(a)}" for name, a in arrays.items())
        raise ValueError(
            f"Arguments {names} must broadcast to one shape. Received: shapes "
            f"{shapes}") from None


def _require(name, array, ok, requirement):
    """Raise a ValueError quoting the first entry of `array` where not `ok`."""
    ok = np.broadcast_to(ok, np.shape(array))
    if np.all(ok):
        return
    array = np.asarray(array)
    if array.ndim == 0:
        received = f"{name}={array.item()!r}"
    else:
        index = tuple(int(i) for i in np.argwhere(~ok)[0])
        label = ", ".join(str(i) for i in index)
        received = f"{name}[{label}]={array[index].item()!r}"
    raise ValueError(f"Argument `{name}` must be {requirement}. Received: {received}")


def _finite(name, value):
    array = _float_array(name, value)
    _require(name, array, np.isfinite(array), "finite (no NaN or inf)")
    return array


def _finite_nonnegative(name, value):
    array = _finite(name, value)
    _require(name, array, array >= 0, "finite and >= 0")
    return array


def _as_scalar_if_0d(array):
    # Scalar in, scalar (np.float64 / np.bool_) out; arrays stay arrays.
    return array[()] if isinstance(array, np.ndarray) and array.ndim == 0 else array


def _is_layer_list(value):
    """A list of per-layer arrays, as opposed to a flat list of numbers."""
    return isinstance(value, (list, tuple)) and any(np.ndim(v) > 0 for v in value)


def _flatten_weights(name, weights):
    """One flat float64 vector from an array or a list of per-layer arrays."""
    if _is_layer_list(weights):
        parts = [_float_array(name, w).ravel() for w in weights]
        return np.concatenate(parts) if parts else np.zeros(0)
    return _float_array(name, weights).ravel()
