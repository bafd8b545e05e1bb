"""Specifications of the seeded epoch order's data, kept between `fit` calls."""

import numpy as np
import pytest

from robustlab.shuffling import ReusedEpochData

X = np.arange(40, dtype="float32").reshape(10, 4) / 40.0
Y = np.arange(10) % 3


def test_arrays_equal_in_content_get_the_data_built_before():
    epoch_data = ReusedEpochData()
    first = epoch_data(X, Y, None, 4, seed=0)
    assert epoch_data(X.copy(), Y.copy(), None, 4, seed=0) is first


@pytest.mark.parametrize("change", ["value", "shape", "dtype", "labels", "sample_weight"])
def test_arrays_that_differ_get_new_data(change):
    epoch_data = ReusedEpochData()
    x, y, weights = X.copy(), Y.copy(), None
    first = epoch_data(x, y, weights, 4, seed=0)
    if change == "value":
        x[3, 1] += 0.5  # in place: the same array object
    elif change == "shape":
        x = x.reshape(10, 2, 2)
    elif change == "dtype":
        x = x.astype("float64")
    elif change == "labels":
        y[0] = 2
    else:
        weights = np.ones(10, "float32")
    assert epoch_data(x, y, weights, 4, seed=0) is not first


@pytest.mark.parametrize("argument", [
    {"batch_size": 5}, {"seed": 1}, {"steps_per_epoch": 2}, {"steps_per_execution": 3}])
def test_other_arguments_get_new_data(argument):
    defaults = {"batch_size": 4, "seed": 0, "steps_per_epoch": None, "steps_per_execution": 1}
    epoch_data = ReusedEpochData()
    first = epoch_data(X, Y, None, **defaults)
    assert epoch_data(X, Y, None, **{**defaults, **argument}) is not first


def test_only_the_last_data_is_kept():
    epoch_data = ReusedEpochData()
    first = epoch_data(X, Y, None, 4, seed=0)
    epoch_data(X, Y, None, 4, seed=1)
    assert epoch_data(X, Y, None, 4, seed=0) is not first


def test_arrays_over_max_bytes_are_not_kept():
    size = X.nbytes + Y.nbytes
    kept, not_kept = ReusedEpochData(max_bytes=size), ReusedEpochData(max_bytes=size - 1)
    assert kept(X, Y, None, 4, seed=0) is kept(X, Y, None, 4, seed=0)
    assert not_kept(X, Y, None, 4, seed=0) is not not_kept(X, Y, None, 4, seed=0)


def test_a_bad_steps_per_epoch_is_rejected_every_time():
    epoch_data = ReusedEpochData()
    for _ in range(2):
        with pytest.raises(ValueError, match=r"Received: steps_per_epoch=4"):
            epoch_data(X, Y, None, 4, seed=0, steps_per_epoch=4)


@pytest.mark.parametrize("max_bytes, error", [(-1, ValueError), (1.5, TypeError)])
def test_bad_max_bytes_is_rejected(max_bytes, error):
    with pytest.raises(error, match=rf"`max_bytes`.*Received: max_bytes={max_bytes}"):
        ReusedEpochData(max_bytes=max_bytes)
