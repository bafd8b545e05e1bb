"""Checks for the course's test cells, with failure messages a student can
act on.

Every check raises `AssertionError` (so nbgrader counts the test cell as
failed) with a message that says, in words, which property failed and by how
much: never a bare `assert`. `reference_for` lets the test of one exercise
run on the course's own implementation of the exercises it builds on, so one
mistake costs one exercise.

Example:

>>> from robustlab.course.grading import check_close
>>> check_close([0.5, 0.2], [0.5, 0.25], "project_linf(x_adv, x, eps=0.1)",
...             atol=1e-6)
Traceback (most recent call last):
...
AssertionError: project_linf(x_adv, x, eps=0.1): expected [0.5, 0.25], got [0.5, 0.2]: the largest difference is 0.05 at position (1,), more than the tolerance 1e-06.
"""

import contextlib
import math

import numpy as np

from robustlab.course import exercises

__all__ = [
    "CallCounter",
    "check",
    "check_close",
    "check_shape",
    "describe",
    "reference_for",
    "student_call",
]


def check(condition, message):
    """Fail with `message` unless `condition` holds.

    >>> from robustlab.course.grading import check
    >>> check(1 + 1 == 2, "arithmetic")
    >>> check(False, "the result must lie inside the eps-ball")
    Traceback (most recent call last):
    ...
    AssertionError: the result must lie inside the eps-ball
    """
    if not bool(condition):
        raise AssertionError(message)


def describe(value, max_items=8, digits=6):
    """A short printable form of a number or an array (its first items and
    its shape when it is long), floats to `digits` significant digits."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # e.g. a tuple of a number and an array
        array = np.empty(0, dtype=object)
    if array.dtype == object:
        if isinstance(value, (tuple, list)):
            items = ", ".join(describe(v, max_items, digits) for v in value)
            return f"({items})" if isinstance(value, tuple) else f"[{items}]"
        return repr(value)
    if array.ndim == 0:
        return _number(array.item(), digits)
    flat = array.reshape(-1)
    if flat.size <= max_items:
        return _nested(array, digits)
    head = ", ".join(_number(v, digits) for v in flat[:max_items].tolist())
    return f"array of shape {array.shape} starting [{head}, ...]"


def _number(v, digits=6):
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _nested(array, digits=6):
    if array.ndim == 0:
        return _number(array.item(), digits)
    return "[" + ", ".join(_nested(a, digits) for a in array) + "]"


def _described_apart(expected, actual):
    """`describe` of both, with as many digits as it takes (up to 17) for
    two different values not to print alike ("expected 1, got 1"). Arrays of
    more than 8 items keep 6 digits: their first items are only a glimpse
    (`check_close` names the values where they differ)."""
    if max(np.size(expected), np.size(actual)) > 8:
        return describe(expected), describe(actual)
    for digits in (6, 9, 12, 17):
        pair = describe(expected, digits=digits), describe(actual, digits=digits)
        if pair[0] != pair[1]:
            return pair
    return pair


def check_shape(actual, shape, what):
    """Fail unless `actual` has exactly `shape`."""
    actual_shape = np.shape(actual)
    check(tuple(actual_shape) == tuple(shape),
          f"{what}: expected an array of shape {tuple(shape)}, got shape "
          f"{tuple(actual_shape)}.")


def check_close(actual, expected, what, *, atol=1e-6, rtol=0.0, hint=None):
    """Fail unless `actual` equals `expected` within `atol + rtol * |expected|`
    element by element (same shape, or one expected number for every
    element; NaN only where NaN is expected).

    Args:
        actual: what the student's code returned.
        expected: the right answer.
        what: the call or quantity, as the student would write it.
        atol, rtol: the tolerance.
        hint: an optional sentence on the usual cause of this failure.
    """
    suffix = f" {hint}" if hint else ""
    if actual is None:
        raise AssertionError(f"{what}: expected {describe(expected)}, got None "
                             f"(did the function forget to `return`?).{suffix}")
    try:
        actual_array = np.asarray(actual, dtype="float64")
    except (TypeError, ValueError):
        raise AssertionError(f"{what}: expected numbers, got {actual!r}.{suffix}") from None
    expected_array = np.asarray(expected, dtype="float64")
    if expected_array.ndim == 0:  # one number: expected everywhere
        expected_array = np.broadcast_to(expected_array, actual_array.shape)
    if actual_array.shape != expected_array.shape:
        raise AssertionError(
            f"{what}: expected shape {expected_array.shape}, got shape "
            f"{actual_array.shape}.{suffix}")
    both_nan = np.isnan(actual_array) & np.isnan(expected_array)
    difference = np.where(both_nan, 0.0, np.abs(actual_array - expected_array))
    difference = np.where(np.isnan(difference), np.inf, difference)
    tolerance = atol + rtol * np.abs(np.nan_to_num(expected_array))
    if np.all(difference <= tolerance):
        return
    excess = difference - tolerance
    index = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.ndim else ()
    tol_text = _number(float(atol)) if not rtol else (
        f"{_number(float(atol))} + {_number(float(rtol))} x |expected|")
    where = f" at position {tuple(int(i) for i in index)}" if index != () else ""
    if index != () and expected_array.size > 8:
        # `describe` shows the first 8 items only: name the two values there.
        expected_there, actual_there = _described_apart(expected_array[index],
                                                        actual_array[index])
        where += f" (expected {expected_there}, got {actual_there} there)"
    largest = difference[index] if index != () else float(difference)
    largest_text = "a NaN or infinity" if not math.isfinite(largest) else _number(float(largest))
    expected_text, actual_text = _described_apart(expected_array, actual_array)
    raise AssertionError(
        f"{what}: expected {expected_text}, got {actual_text}: "
        f"the largest difference is {largest_text}{where}, more than the "
        f"tolerance {tol_text}.{suffix}")


def student_call(function, *args, name=None, allow_none=False, **kwargs):
    """Call a student's function and return its result; a
    `NotImplementedError` (the stub the student has not replaced yet) becomes
    a failure that says so, and so does a result of None (a forgotten
    `return`) unless `allow_none`.

    >>> from robustlab.course.grading import student_call
    >>> student_call(lambda x: 2 * x, 3)
    6
    >>> def project_linf(x_adv, x, eps):
    ...     clipped = min(max(x_adv, x - eps), x + eps)
    >>> student_call(project_linf, 0.9, 0.5, 0.1)
    Traceback (most recent call last):
    ...
    AssertionError: `project_linf` returned None: did the function forget to `return` its result?
    """
    name = name or getattr(function, "__name__", "the function")
    try:
        result = function(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(
            f"`{name}` is not written yet: replace `raise NotImplementedError()` "
            "in its cell with your code, run that cell, then this one.") from None
    if result is None and not allow_none:
        raise AssertionError(
            f"`{name}` returned None: did the function forget to `return` its result?")
    return result


class CallCounter:
    """Wrap a function and record the arguments of every call (copies of
    arrays), e.g. to check that PGD evaluates the gradient once a step, at
    the current iterate.

    >>> import numpy as np
    >>> from robustlab.course.grading import CallCounter
    >>> f = CallCounter(lambda x: 2 * x)
    >>> f(np.array([1.0])).tolist(), f.calls
    ([2.0], 1)
    """

    def __init__(self, function):
        self.function = function
        self.arguments = []

    @property
    def calls(self):
        return len(self.arguments)

    def __call__(self, x):
        self.arguments.append(np.array(x, dtype="float64", copy=True))
        return self.function(x)


@contextlib.contextmanager
def reference_for(namespace, *names):
    """Temporarily replace the functions `names` in `namespace` (a
    notebook's `globals()`) by the course's reference implementations, so a
    student function that calls them is graded on its own code alone.

    >>> from robustlab.course import exercises
    >>> from robustlab.course.grading import reference_for
    >>> ns = {"project_linf": None}
    >>> with reference_for(ns, "project_linf"):
    ...     ns["project_linf"] is exercises.project_linf
    True
    >>> ns["project_linf"] is None
    True
    """
    missing = [n for n in names if not hasattr(exercises, n)]
    if missing:
        raise ValueError(f"The course has no reference implementation of "
                         f"{missing}. Received: names={names}")
    saved = {n: namespace[n] for n in names if n in namespace}
    try:
        for n in names:
            namespace[n] = getattr(exercises, n)
        yield
    finally:
        for n in names:
            if n in saved:
                namespace[n] = saved[n]
            else:
                namespace.pop(n, None)
