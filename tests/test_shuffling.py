"""Specifications of the seeded epoch order's data, kept between `fit` calls."""

import keras
import numpy as np
import pytest

from robustlab.shuffling import ReusedEpochData
from robustlab.shuffling import epoch_permutation
from robustlab.shuffling import epoch_shuffled_batches

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


@pytest.mark.parametrize("argument, error, match", [
    ({"batch_size": 4.5}, TypeError,
     r"`batch_size` must be an integer >= 1. Received: batch_size=4.5"),
    ({"seed": 0.9}, TypeError, r"`seed` must be an integer >= 0. Received: seed=0.9"),
    ({"seed": False}, TypeError, r"`seed` must be an integer >= 0. Received: seed=False"),
    ({"steps_per_epoch": 3.0}, TypeError,
     r"`steps_per_epoch` must be an integer >= 1. Received: steps_per_epoch=3.0"),
    ({"steps_per_execution": 1.0}, TypeError,
     r"`steps_per_execution` must be an integer >= 1. Received: steps_per_execution=1.0"),
])
def test_a_bad_argument_is_rejected_when_its_data_is_kept(argument, error, match):
    # The kept data was built with the valid values these round to.
    defaults = {"batch_size": 4, "seed": 0, "steps_per_epoch": 3, "steps_per_execution": 1}
    epoch_data = ReusedEpochData()
    epoch_data(X, Y, None, **defaults)
    with pytest.raises(error, match=match):
        epoch_data(X, Y, None, **{**defaults, **argument})


@pytest.mark.parametrize("max_bytes, error", [(-1, ValueError), (1.5, TypeError)])
def test_bad_max_bytes_is_rejected(max_bytes, error):
    with pytest.raises(error, match=rf"`max_bytes`.*Received: max_bytes={max_bytes}"):
        ReusedEpochData(max_bytes=max_bytes)


class _Record(keras.layers.Layer):
    """Writes down the rows (their first feature, an index) of every batch
    the model is called on: the order a fit trains on."""

    def __init__(self, seen):
        super().__init__()
        self._write = seen.append  # (a list attribute would be tracked: copied)

    def call(self, x):
        try:
            rows = keras.ops.convert_to_numpy(x)
        except Exception:  # a symbolic pass (shape inference): nothing to record
            return x
        self._write(np.rint(rows[:, 0]).astype(int).tolist())
        return x

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, x.dtype)


def _recording_model(seen):
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1)(_Record(seen)(inputs)))
    model.compile("sgd", "mse", run_eagerly=True)
    return model


def _batches_of(order, batch_size):
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def test_kept_data_trains_a_plain_keras_model_on_each_calls_epoch():
    # A plain keras.Model does not count the batches it reads from the kept
    # stream, so it must not be handed an iterator it has read from.
    x, y = np.arange(10, dtype="float32")[:, None], np.zeros(10, "float32")
    epoch_data, seen = ReusedEpochData(), []
    model = _recording_model(seen)
    for _ in range(2):
        seen.clear()
        data, callback, steps = epoch_data(x, y, None, 4, seed=7)
        model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[callback],
                  shuffle=False, verbose=0)
        assert seen == _batches_of(epoch_permutation(10, 7)(0), 4)


def test_kept_data_does_not_follow_the_callers_buffer():
    x, y = np.arange(10, dtype="float32")[:, None], np.zeros(10, "float32")
    epoch_data, seen = ReusedEpochData(), []
    epoch_data(x, y, None, 4, seed=0)
    original = x.copy()
    x[:] = -1.0  # the caller reuses its buffer; the same content comes again
    data, callback, steps = epoch_data(original, y, None, 4, seed=0)
    _recording_model(seen).fit(data, epochs=1, steps_per_epoch=steps, callbacks=[callback],
                               shuffle=False, verbose=0)
    assert seen == _batches_of(epoch_permutation(10, 0)(0), 4)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(batch_size=0), ValueError, r"`batch_size` must be an integer >= 1. Received: batch_size=0"),
    (dict(batch_size=2.7), TypeError, r"`batch_size`.*Received: batch_size=2.7"),
    (dict(seed=-1), ValueError, r"`seed`.*Received: seed=-1"),
    (dict(steps_per_execution=0), ValueError, r"Received: steps_per_execution=0"),
    (dict(y=np.arange(9)), ValueError, r"`x` and `y`.*x with 10 and y with 9"),
    (dict(sample_weight=np.ones(11)), ValueError, r"`sample_weight`.*sample_weight with 11"),
    (dict(x=np.zeros((0, 4)), y=np.zeros(0)), ValueError, r"`x` must hold at least one"),
])
def test_bad_epoch_data_arguments_are_named(kwargs, error, match):
    arguments = dict(x=X, y=Y, sample_weight=None, batch_size=4, seed=0)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        epoch_shuffled_batches(**arguments)


@pytest.mark.parametrize("n, seed, name", [
    (-3, 0, "n"), (5, -1, "seed"), (5, 1.5, "seed"), (5, None, "seed"), (2.0, 0, "n")])
def test_epoch_permutation_names_a_bad_size_or_seed(n, seed, name):
    # NumPy named neither, and n = -3 gave an empty order.
    with pytest.raises((ValueError, TypeError), match=rf"`{name}`.*Received: {name}="):
        epoch_permutation(n, seed)


def test_an_epoch_permutation_names_a_negative_epoch():
    with pytest.raises(ValueError, match=r"`epoch`.*Received: epoch=-1"):
        epoch_permutation(5, 0)(-1)
