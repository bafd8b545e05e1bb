"""Summaries of a metric over seeds: the mean and its standard error.

Studies report every finding as a mean over seeds with a standard error, and
the figures draw the same numbers as bands; both read them from here.
"""

import numpy as np

__all__ = [
    "mean_and_stderr",
]


def mean_and_stderr(values, axis=None):
    """Mean and standard error of the mean (ddof=1) of the finite values
    along `axis`; NaN where fewer than one (mean) or two (stderr) are finite.

    >>> import numpy as np
    >>> from robustlab.summary_statistics import mean_and_stderr
    >>> [round(v, 9) for v in mean_and_stderr(np.array([1.0, 2.0, 3.0, np.nan]))]
    [2.0, 0.577350269]
    """
    values = np.asarray(values, dtype="float64")
    finite = np.isfinite(values)
    n = finite.sum(axis=axis)
    filled = np.where(finite, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=axis) / n
        deviation = np.where(finite, values - (mean if axis is None
                                              else np.expand_dims(mean, axis)), 0.0)
        variance = (deviation ** 2).sum(axis=axis) / (n - 1)
        stderr = np.sqrt(variance / n)
    mean = np.where(n >= 1, mean, np.nan)
    stderr = np.where(n >= 2, stderr, np.nan)
    if axis is None:
        return float(mean), float(stderr)
    return mean, stderr
