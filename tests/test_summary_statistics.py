"""Specification of `robustlab.summary_statistics.mean_and_stderr`."""

import math

import numpy as np
import pytest

from robustlab.summary_statistics import mean_and_stderr


def test_mean_and_stderr_by_hand():
    # Mean 2; deviations -1, 0, 1: variance (ddof=1) 1, stderr sqrt(1 / 3).
    mean, stderr = mean_and_stderr([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert stderr == pytest.approx(math.sqrt(1 / 3), rel=1e-15)


def test_nan_is_left_out():
    # A seed without the figure is NaN: the others are summarised.
    assert mean_and_stderr([1.0, np.nan, 3.0]) == (2.0, 1.0)


def test_masked_entries_are_left_out_as_nan_is():
    # np.asarray drops the mask: the masked 100 was summarised as a seed.
    values = np.ma.masked_array([1.0, 2.0, 100.0, 3.0], mask=[0, 0, 1, 0])
    assert mean_and_stderr(values) == mean_and_stderr([1.0, 2.0, 3.0])
    mean, stderr = mean_and_stderr(
        np.ma.masked_array([[1.0, 5.0], [3.0, 100.0]], mask=[[0, 0], [0, 1]]), axis=0)
    np.testing.assert_array_equal(mean, [2.0, 5.0])
    np.testing.assert_array_equal(stderr, [1.0, np.nan])


@pytest.mark.parametrize("values, mean", [
    ([1.0, np.nan, 3.0, np.inf], np.inf),
    ([-np.inf, 1.0], -np.inf),
    ([np.inf], np.inf),
    ([np.inf, -np.inf, 2.0], np.nan),
])
def test_an_infinity_is_not_left_out(values, mean):
    # A diverged seed must not be summarised away as if it lacked the figure.
    got_mean, stderr = mean_and_stderr(values)
    np.testing.assert_equal(got_mean, mean)
    assert math.isnan(stderr)


def test_an_infinity_affects_only_its_own_summary_along_an_axis():
    values = np.array([[1.0, np.inf], [3.0, 5.0]])
    mean, stderr = mean_and_stderr(values, axis=0)
    np.testing.assert_equal(mean, [2.0, np.inf])
    np.testing.assert_equal(stderr, [1.0, np.nan])


@pytest.mark.parametrize("values, mean, stderr", [
    ([1e200, 1.0], 5e199, 5e199),
    ([1e308, 1e308, 1e308], 1e308, 0.0),
    ([-1e308, 1e308], 0.0, 1e308),
])
def test_huge_finite_values_do_not_overflow(values, mean, stderr):
    # The sum and the squared deviations overflowed to inf; the values are
    # finite, and so are their mean and standard error.
    got_mean, got_stderr = mean_and_stderr(values)
    assert got_mean == pytest.approx(mean, rel=1e-15)
    assert got_stderr == pytest.approx(stderr, rel=1e-15)


def test_too_few_finite_values_give_nan():
    mean, stderr = mean_and_stderr([5.0, np.nan])
    assert mean == 5.0 and math.isnan(stderr)
    assert all(math.isnan(v) for v in mean_and_stderr([]))


def test_an_axis_or_a_tuple_of_axes_summarises_along_them_only():
    values = np.array([[1.0, 2.0, np.nan], [3.0, 5.0, 7.0]])
    mean, stderr = mean_and_stderr(values, axis=1)
    np.testing.assert_allclose(mean, [1.5, 5.0], rtol=1e-15)
    # [1, 2]: variance 1/2 over 2; [3, 5, 7]: variance 4 over 3.
    np.testing.assert_allclose(stderr, [0.5, math.sqrt(4 / 3)], rtol=1e-15)
    mean, stderr = mean_and_stderr(np.arange(8.0).reshape(2, 2, 2), axis=(0, -1))
    # Axes 0 and 2 hold {0, 1, 4, 5} and {2, 3, 6, 7}: deviations -5/2, -3/2,
    # 3/2, 5/2, variance 17/3, over 4.
    np.testing.assert_allclose(mean, [2.5, 4.5], rtol=1e-15)
    np.testing.assert_allclose(stderr, [math.sqrt(17 / 12)] * 2, rtol=1e-15)


@pytest.mark.parametrize("values", [
    ["a", "b"],
    "1.5",
    [1.0, None],
    [True, False],
    [1.0 + 2.0j],
])
def test_values_that_are_not_real_numbers_raise(values):
    # "1.5" would be read as 1.5 and None as a missing seed.
    with pytest.raises(TypeError, match=r"`values` must be a real number or an "
                                        r"array of real numbers. Received: values="):
        mean_and_stderr(values)


@pytest.mark.parametrize("values", [
    [0.5, True],
    [[0.5, 0.7], [0.6, False]],
    [np.float64(0.5), np.True_],
    [np.array([0.5, 0.7]), np.array([True, False])],
    np.array([0.5, 0.9]) > 0.7,
])
def test_a_boolean_among_numbers_raises(values):
    # NumPy would read it as 1.0 or 0.0, and summarise it with the numbers.
    with pytest.raises(TypeError, match=r"`values` must be a real number or an "
                                        r"array of real numbers, not booleans\. "
                                        r"Received: values="):
        mean_and_stderr(values)


@pytest.mark.parametrize("axis", [2, -3, True, 1.0, "0", [0], (0, -2)])
def test_an_axis_that_is_not_one_of_the_values_raises(axis):
    with pytest.raises(ValueError, match=r"`axis` must be None, an axis of the 2-D "
                                         r"`values` or a tuple of distinct such "
                                         r"axes. Received: axis="):
        mean_and_stderr(np.ones((2, 3)), axis=axis)
