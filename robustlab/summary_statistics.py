"""Summaries of a metric over seeds: the mean and its standard error.

Studies report every finding as a mean over seeds with a standard error, and
the figures draw the same numbers as bands; both read them from here.
"""

import numbers

import numpy as np

from robustlab import validation

__all__ = [
    "mean_and_stderr",
]


def _check_axis(axis, ndim):
    """`axis` as None or a tuple of ints (what NumPy's reductions take)."""
    if axis is None:
        return None
    axes = axis if isinstance(axis, tuple) else (axis,)
    valid = all(isinstance(a, numbers.Integral) and not isinstance(a, bool)
                and -ndim <= a < ndim for a in axes)
    # Only valid axes reach the modulo (a 0-D array has none).
    if not valid or len({int(a) % ndim for a in axes}) != len(axes):
        raise ValueError(
            f"Argument `axis` must be None, an axis of the {ndim}-D `values` "
            f"or a tuple of distinct such axes. Received: axis={axis!r}")
    return tuple(int(a) for a in axes)


def mean_and_stderr(values, axis=None):
    """Mean and standard error of the mean (ddof=1) of the values along
    `axis`, NaN left out (a seed that lacks the figure), and so are the
    masked entries of a NumPy masked array.

    An infinity is not left out, since dropping it would summarise a
    diverged seed away: the mean is that infinity (NaN where both signs
    occur) and the standard error NaN. NaN also where fewer than one (mean)
    or two (stderr) values are not NaN.

    Args:
        values: real numbers, an array or nested lists of them; anything
            that is not a number (None, a string, a boolean) is a TypeError.
        axis: None (default) summarises all values into two floats; an axis
            of `values`, or a tuple of distinct axes, gives two arrays.

    >>> import numpy as np
    >>> from robustlab.summary_statistics import mean_and_stderr
    >>> [round(v, 9) for v in mean_and_stderr(np.array([1.0, 2.0, 3.0, np.nan]))]
    [2.0, 0.577350269]
    >>> mean_and_stderr([1.0, 2.0, np.inf])
    (inf, nan)
    """
    # np.asarray(..., "float64") would read "1.5" as 1.5 and None as NaN,
    # a missing seed, and then summarise whatever was left.
    masked = None
    if np.ma.isMaskedArray(values):
        masked, values = np.ma.getmaskarray(values), np.ma.getdata(values)
    values = validation._float_array("values", values)
    if masked is not None:
        # np.asarray drops a masked array's mask: its masked entries, a
        # common way to mark a missing seed, would be summarised as data.
        values = np.where(masked, np.nan, values)
    axis = _check_axis(axis, values.ndim)
    finite = np.isfinite(values)
    n = finite.sum(axis=axis, keepdims=True)
    filled = np.where(finite, values, 0.0)
    # Huge finite values (1e200 and up) overflowed the sum and the squares
    # to inf. Dividing by a power of two is exact, so the sums run on values
    # below 2 in size and give the same bits as unscaled ones wherever those
    # did not overflow.
    _, exponent = np.frexp(np.max(np.abs(filled), axis=axis, keepdims=True,
                                  initial=0.0))
    scale = np.ldexp(1.0, exponent - 1)
    scaled = filled / scale
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = scaled.sum(axis=axis, keepdims=True) / n
        deviation = np.where(finite, scaled - mean, 0.0)
        variance = (deviation ** 2).sum(axis=axis, keepdims=True) / (n - 1)
        stderr = np.sqrt(variance / n) * scale
        mean = mean * scale
    n, mean, stderr = (np.squeeze(a, axis=axis) for a in (n, mean, stderr))
    mean = np.where(n >= 1, mean, np.nan)
    stderr = np.where(n >= 2, stderr, np.nan)
    positive = (values == np.inf).any(axis=axis)
    negative = (values == -np.inf).any(axis=axis)
    mean = np.where(positive & negative, np.nan,
                    np.where(positive, np.inf, np.where(negative, -np.inf, mean)))
    stderr = np.where(positive | negative, np.nan, stderr)
    if axis is None:
        return float(mean), float(stderr)
    return mean, stderr
