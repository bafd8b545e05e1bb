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
    """Fail with `message` unless `condition` holds. `condition` is one truth
    value (a bool, or a NumPy or tensor one of one element); an array of
    several (the comparison of a result that should have been one number)
    fails with `message` and a note saying so, not with NumPy's "truth value
    of an array is ambiguous". So does a list or tuple of several, which
    Python would take as true whatever its items (write `all(...)`), and
    one of one item is that item's truth.

    >>> import numpy as np
    >>> from robustlab.course.grading import check
    >>> check(1 + 1 == 2, "arithmetic")
    >>> check(False, "the result must lie inside the eps-ball")
    Traceback (most recent call last):
    ...
    AssertionError: the result must lie inside the eps-ball
    >>> check(np.array([1, 2]) == 1, "select_epoch(...) must be 1; got [1, 2].")
    Traceback (most recent call last):
    ...
    AssertionError: select_epoch(...) must be 1; got [1, 2]. (The check received an array of shape (2,) instead of one True or False: a value that should be one number is an array.)
    >>> check([a == 9 for a in (1, 2)], "every item must be 9")
    Traceback (most recent call last):
    ...
    AssertionError: every item must be 9 (The check received a list of 2 values instead of one True or False: write all(...) or any(...) around them.)
    """
    if isinstance(condition, (list, tuple)):
        # Python's truth of a non-empty list is True, whatever its items.
        if len(condition) != 1:
            raise AssertionError(
                f"{message} (The check received a {type(condition).__name__} of "
                f"{len(condition)} values instead of one True or False: write all(...) or "
                "any(...) around them.)")
        check(condition[0], message)
        return
    shape = getattr(condition, "shape", None)
    if shape is not None:
        try:
            shape = tuple(int(n) for n in tuple(shape))
        except (TypeError, ValueError):  # a symbolic tensor: its size is unknown
            shape = (-1,)
        if math.prod(shape) != 1:
            raise AssertionError(
                f"{message} (The check received an array of shape {shape} instead of one True "
                "or False: a value that should be one number is an array.)")
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
    """Fail unless `actual` has exactly `shape` (a tuple of sizes, or one
    size for a 1-D array)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    actual_shape = np.shape(actual)
    check(tuple(actual_shape) == tuple(shape),
          f"{what}: expected an array of shape {tuple(shape)}, got shape "
          f"{tuple(actual_shape)}.")


def _short_repr(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _real_array(value):
    """`value` as a float64 array, or (None, why not) when it is not real
    numbers: text, True/False, complex numbers or other objects. NumPy
    numbers and arrays and the tensors of keras.ops (TensorFlow, JAX) of an
    integer or floating dtype are real numbers."""
    if isinstance(value, (str, bytes)):
        return None, "text, not a number: return the number itself"
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, OverflowError):  # e.g. items of different shapes
        return None, "not an array of numbers (items of different shapes or types?)"
    kind, name = array.dtype.kind, array.dtype.name
    if kind in "iuf" or (kind == "V" and name.startswith(("bfloat", "float"))):
        return array.astype("float64"), None
    if kind == "b":
        return None, "True/False values, not numbers"
    if kind == "c":
        return None, "complex numbers, not real ones"
    if kind in "US":
        return None, "text, not numbers: return the numbers themselves"
    if isinstance(value, int):
        return None, "an integer too large for a float"
    if isinstance(value, np.ndarray):
        return None, f"an array of dtype {name}, not of numbers"
    return None, "not a number or an array of numbers"


def _tolerance(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"check_close's {name} must be a number >= 0. Received: {name}={value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"check_close's {name} must be a finite number >= 0. "
                         f"Received: {name}={value!r}")
    return float(value)


def check_close(actual, expected, what, *, atol=1e-6, rtol=0.0, hint=None, broadcast=False):
    """Fail unless `actual` equals `expected` within `atol + rtol * |expected|`
    element by element.

    `actual` must have the shape of `expected`; where `expected` is one number
    (0-d), `actual` must be one number too: a Python or NumPy number, a 0-d
    array or tensor, or an array of one element (an array of several, or of
    none, fails). With `broadcast=True` a 0-d `expected` is instead the value
    every element of a non-empty `actual` must have. Only real numbers pass:
    text, True/False, complex numbers (even with a zero imaginary part) and
    other objects fail, whatever they print as. NaN matches only NaN, and an
    infinity only the infinity of the same sign.

    Args:
        actual: what the student's code returned (numbers, NumPy arrays or
            the tensors of keras.ops).
        expected: the right answer (real numbers).
        what: the call or quantity, as the student would write it.
        atol, rtol: the tolerance, finite numbers >= 0.
        hint: an optional sentence on the usual cause of this failure.
        broadcast: compare every element of `actual` with the one number
            `expected`.

    >>> from robustlab.course.grading import check_close
    >>> check_close([0.25, 0.25], 0.25, "pac_bayes_bound(0.1, KL=20, n=1000)")
    Traceback (most recent call last):
    ...
    AssertionError: pac_bayes_bound(0.1, KL=20, n=1000): expected one number (0.25), got an array of shape (2,): [0.25, 0.25].
    >>> check_close("0.25", 0.25, "pac_bayes_bound(0.1, KL=20, n=1000)")
    Traceback (most recent call last):
    ...
    AssertionError: pac_bayes_bound(0.1, KL=20, n=1000): expected one number (0.25), got '0.25' (of type str): text, not a number: return the number itself.
    >>> check_close([1000.5, 1.1], [1000.0, 1.0], "f()", atol=0, rtol=1e-3)
    Traceback (most recent call last):
    ...
    AssertionError: f(): expected [1000, 1], got [1000.5, 1.1]: the difference furthest beyond its tolerance is 0.1 at position (1,), more than its tolerance 0 + 0.001 x |expected| = 0.001.
    """
    atol, rtol = _tolerance("atol", atol), _tolerance("rtol", rtol)
    expected_array, _ = _real_array(expected)
    if expected_array is None:
        raise TypeError(f"check_close's expected must be real numbers. "
                        f"Received: expected={expected!r}")
    one_number = expected_array.ndim == 0
    expected_text = describe(expected_array)  # before any broadcasting
    wanted = f"one number ({expected_text})" if one_number else expected_text
    suffix = f" {hint}" if hint else ""
    if actual is None:
        raise AssertionError(f"{what}: expected {wanted}, got None "
                             f"(did the function forget to `return`?).{suffix}")
    actual_array, why = _real_array(actual)
    if actual_array is None:
        raise AssertionError(
            f"{what}: expected {wanted if one_number else 'numbers'}, got {_short_repr(actual)} "
            f"(of type {type(actual).__name__}): {why}.{suffix}")
    if one_number and broadcast:
        if actual_array.size == 0:
            raise AssertionError(f"{what}: expected {expected_text} in every element, got an "
                                 f"empty array of shape {actual_array.shape}.{suffix}")
        expected_array = np.broadcast_to(expected_array, actual_array.shape)
    elif one_number:
        size = actual_array.size
        if size != 1:
            shown = (" (no number at all)" if size == 0 else f": {describe(actual_array)}"
                     if size <= 8 else describe(actual_array).split(")", 1)[1])
            raise AssertionError(f"{what}: expected {wanted}, got an array of shape "
                                 f"{actual_array.shape}{shown}.{suffix}")
        expected_array = expected_array.reshape(actual_array.shape)
    if actual_array.shape != expected_array.shape:
        raise AssertionError(
            f"{what}: expected shape {expected_array.shape}, got shape "
            f"{actual_array.shape}.{suffix}")
    # NaN matches NaN, an infinity the same infinity (inf - inf would be NaN).
    same = ((np.isnan(actual_array) & np.isnan(expected_array))
            | (np.isinf(actual_array) & (actual_array == expected_array)))
    with np.errstate(invalid="ignore", over="ignore"):
        difference = np.where(same, 0.0, np.abs(actual_array - expected_array))
    difference = np.where(np.isnan(difference), np.inf, difference)
    tolerance = atol + rtol * np.abs(np.where(np.isfinite(expected_array), expected_array, 0.0))
    if np.all(difference <= tolerance):
        return
    excess = difference - tolerance
    index = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.ndim else ()
    several = difference.size > 1
    where = f" at position {tuple(int(i) for i in index)}" if several else ""
    if several and expected_array.size > 8:
        # `describe` shows the first 8 items only: name the two values there.
        expected_there, actual_there = _described_apart(expected_array[index],
                                                        actual_array[index])
        where += f" (expected {expected_there}, got {actual_there} there)"
    found = float(difference[index])
    found_text = "a NaN or infinity" if not math.isfinite(found) else _number(found)
    if not several:
        lead = "the difference is"
    elif not rtol:
        lead = "the largest difference is"
    else:  # the position furthest beyond its own tolerance, maybe not the largest difference
        lead = "the difference furthest beyond its tolerance is"
    if np.isnan(expected_array[index]):
        tol_text = "any tolerance: a NaN is matched only by a NaN"
    elif not np.isfinite(expected_array[index]):
        tol_text = "any tolerance: an infinity is matched only by the same infinity"
    elif not rtol:
        tol_text = f"the tolerance {_number(atol)}"
    else:
        tol_text = (f"{'its' if several else 'the'} tolerance {_number(atol)} + "
                    f"{_number(rtol)} x |expected| = {_number(float(tolerance[index]))}")
    if one_number:
        expected_text, actual_text = _described_apart(expected_array.reshape(-1)[0], actual_array)
        if broadcast:
            expected_text += " in every element"
    else:
        expected_text, actual_text = _described_apart(expected_array, actual_array)
    raise AssertionError(
        f"{what}: expected {expected_text}, got {actual_text}: "
        f"{lead} {found_text}{where}, more than {tol_text}.{suffix}")


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
    """Wrap a function and record the arguments of every call, e.g. to check
    that PGD evaluates the gradient once a step, at the current iterate. The
    wrapper takes what the function takes, by position or by keyword, and
    passes it on unchanged.

    Attributes:
        arguments: one entry per call: a float64 copy of the argument when
            the call had one (`grad_fn(x)` or `grad_fn(z=x)` alike), else the
            pair (positional arguments, dict of keyword arguments), numbers
            copied as float64 arrays.
        calls: the number of calls.

    >>> import numpy as np
    >>> from robustlab.course.grading import CallCounter
    >>> f = CallCounter(lambda z: 2 * z)
    >>> f(np.array([1.0])).tolist(), f(z=np.array([3.0])).tolist(), f.calls
    ([2.0], [6.0], 2)
    >>> [a.tolist() for a in f.arguments]
    [[1.0], [3.0]]
    """

    def __init__(self, function):
        self.function = function
        self.arguments = []

    @property
    def calls(self):
        return len(self.arguments)

    def __call__(self, *args, **kwargs):
        copies = [_copy(a) for a in args] + [_copy(v) for v in kwargs.values()]
        if len(copies) == 1:  # f(x) or f(z=x): the point itself
            self.arguments.append(copies[0])
        else:
            self.arguments.append((tuple(copies[:len(args)]), dict(zip(kwargs, copies[len(args):]))))
        return self.function(*args, **kwargs)


def _copy(value):
    """A float64 copy of real numbers (an array, a tensor), else `value`
    itself (for `check_close` to refuse, if it is compared)."""
    array, _ = _real_array(value)
    return value if array is None else array  # `astype` made a copy


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
