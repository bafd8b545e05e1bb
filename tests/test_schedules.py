"""Specifications of learning-rate schedules in epochs."""

import numpy as np
import pytest

from robustlab.schedules import PiecewiseConstant


def test_each_drop_multiplies_the_rate_by_the_factor_from_its_epoch_on():
    schedule = PiecewiseConstant(0.1, drop_epochs=(100, 150), factor=0.1)
    assert [schedule(e) for e in (0, 99, 100, 149, 150, 199)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_per_step_repeats_each_epoch_rate_once_per_step():
    schedule = PiecewiseConstant(0.2, drop_epochs=(1,), factor=0.5)
    np.testing.assert_allclose(schedule.per_step(steps_per_epoch=3, epochs=2),
                               [0.2, 0.2, 0.2, 0.1, 0.1, 0.1])


def test_the_callback_sets_the_optimizer_rate_each_epoch():
    import keras

    schedule = PiecewiseConstant(0.2, drop_epochs=(1,), factor=0.1)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(1.0), "mse")
    history = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=2, verbose=0,
                        callbacks=[schedule.callback()])
    np.testing.assert_allclose(history.history["learning_rate"], [0.2, 0.02], rtol=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"initial": -0.1}, ValueError, r"`initial`.*> 0.*Received: initial=-0.1"),
    ({"initial": 0.1, "drop_epochs": (5, 3)}, ValueError, r"strictly increasing"),
    ({"initial": 0.1, "drop_epochs": (0,)}, ValueError, r"`drop_epochs`.*>= 1"),
    ({"initial": 0.1, "factor": 2.0}, ValueError, r"`factor`.*\(0, 1\].*Received: factor=2.0"),
    # It said "> 0" below the interval.
    ({"initial": 0.1, "factor": -0.1}, ValueError,
     r"`factor` must be a finite number in \(0, 1\]\. Received: factor=-0.1"),
    ({"initial": 0.1, "drop_epochs": (1.5,)}, TypeError, r"`drop_epochs`.*integer"),
    # A 0-d array has __iter__ but cannot be iterated: it raised NumPy's
    # "iteration over a 0-d array".
    ({"initial": 0.1, "drop_epochs": np.array(40)}, TypeError,
     r"`drop_epochs` must be a sequence of epochs.*Received: drop_epochs=array\(40\)"),
])
def test_bad_schedules_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        PiecewiseConstant(**kwargs)


def test_the_schedule_as_an_optimizers_learning_rate_says_to_use_its_callback():
    # A Keras optimizer calls a plain callable rate with no argument; it
    # failed at the first step with "missing 1 required positional argument".
    import keras

    schedule = PiecewiseConstant(0.2, drop_epochs=(1,), factor=0.1)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate=schedule), "mse")
    with pytest.raises(TypeError, match=r"schedule in epochs: pass `schedule.callback\(\)`"
                       r".*Received: a call with no epoch"):  # (JAX appends a note)
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), verbose=0)


def test_an_epoch_may_be_a_numpy_number_or_a_fraction():
    # np.arange and array indexing hand out NumPy integers; a fractional
    # epoch is a point within one.
    schedule = PiecewiseConstant(0.1, drop_epochs=(100,), factor=0.5)
    assert schedule(np.int64(100)) == 0.05
    assert schedule(np.int32(99)) == 0.1
    assert schedule(99.5) == 0.1
    assert schedule(np.float32(100.0)) == 0.05


@pytest.mark.parametrize("epoch, error, match", [
    (-1, ValueError, r"`epoch` must be a finite number >= 0. Received: epoch=-1$"),
    (float("nan"), ValueError, r"Received: epoch=nan$"),
    (float("inf"), ValueError, r"Received: epoch=inf$"),
    (True, TypeError, r"`epoch` must be a finite number >= 0. Received: epoch=True$"),
    ("3", TypeError, r"Received: epoch='3'$"),
    (None, TypeError, r"Received: epoch=None$"),
])
def test_an_epoch_that_is_not_a_finite_number_at_least_zero_raises(epoch, error, match):
    # Unchecked, -1 and NaN fell below every drop and True counted as epoch 1.
    schedule = PiecewiseConstant(0.1, drop_epochs=(1,), factor=0.5)
    with pytest.raises(error, match=match):
        schedule(epoch)
