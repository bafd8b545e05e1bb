"""The iterate hand-off of `AdversarialModel`'s compiled training step
(`observe_iterates`) across repeated fits of one model: every step is handed
over whatever train function was built before, and the functions with and
without the hand-off are traced once each, not once a fit."""

import keras
import pytest

import robustlab
from robustlab import backend as _backend
from robustlab.callbacks.posterior_tracker import PosteriorTracker
from robustlab.iterate_observers import IterateObservers

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
N, BATCH = 256, 64  # 4 steps an epoch


def _model():
    model = robustlab.AdversarialModel(
        robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0),
        attack=robustlab.PGD(eps=0.1, steps=2))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    return model


@pytest.fixture
def traces(monkeypatch):
    """One entry each time a compiled function traces the training step
    (Python runs the step only then). Counted in the backend's step, so
    that `model.train_step` stays the bound method jax.jit is given."""
    traced = []
    backend = _backend.get()
    step = backend.adversarial_train_step
    monkeypatch.setattr(backend, "adversarial_train_step",
                        lambda *args: traced.append(1) or step(*args))
    return traced


class CountingObserver(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_begin(self, logs=None):
        assert self.model.observe_iterates(self._observe, self.model.trainable_variables[:1])

    def _observe(self, learning_rate, weights):
        self.steps += 1


def _fit(model, digits, epoch, callbacks=()):
    model.fit(digits.x_train[:N], digits.y_train[:N], batch_size=BATCH, epochs=epoch + 1,
              initial_epoch=epoch, verbose=0, callbacks=list(callbacks))


def test_an_observer_sees_every_step_while_the_previous_train_function_is_referenced(
        digits):
    # On JAX, jax.jit of the rebuilt step handed back the trace cached for
    # the function still referenced, which had no hand-off: 0 steps seen.
    model = _model()
    _fit(model, digits, 0)
    previous = model.train_function  # noqa: F841 (held, as a notebook may hold it)
    observer = CountingObserver()
    _fit(model, digits, 1, [observer])
    assert observer.steps == N // BATCH


def test_fits_with_a_tracker_after_the_first_trace_nothing(digits, traces):
    model = _model()
    _fit(model, digits, 0, [PosteriorTracker()])
    traced_by_the_first = len(traces)
    for epoch in (1, 2):
        _fit(model, digits, epoch, [PosteriorTracker()])
    assert traced_by_the_first > 0 and len(traces) == traced_by_the_first


def test_fits_alternating_with_and_without_a_tracker_trace_nothing_after_one_of_each(
        digits, traces):
    model = _model()
    _fit(model, digits, 0)
    _fit(model, digits, 1, [PosteriorTracker()])
    traced_by_the_first_two = len(traces)
    for epoch, callbacks in enumerate([[], [PosteriorTracker()], []], start=2):
        _fit(model, digits, epoch, callbacks)
    assert traced_by_the_first_two > 0 and len(traces) == traced_by_the_first_two


def test_a_fit_after_a_tracker_fit_makes_no_host_calls(digits, monkeypatch):
    calls = []
    dispatch = IterateObservers.dispatch
    monkeypatch.setattr(IterateObservers, "dispatch",
                        lambda self, *args: calls.append(1) or dispatch(self, *args))
    model = _model()
    _fit(model, digits, 0, [PosteriorTracker()])
    assert len(calls) == N // BATCH
    _fit(model, digits, 1)
    assert len(calls) == N // BATCH


def test_a_tracker_handed_no_iterate_by_a_step_that_ran_names_the_missing_hand_off(
        digits, monkeypatch):
    # A train function traced without the hand-off must not be blamed on
    # the batch size ("Use more batches per epoch").
    monkeypatch.setattr(IterateObservers, "handoff_in_step", lambda self: False)
    model = _model()
    with pytest.raises(RuntimeError, match=r"4 compiled call\(s\) of epoch 0 handed it "
                                           r"none.*without the iterate hand-off"):
        _fit(model, digits, 0, [PosteriorTracker()])
