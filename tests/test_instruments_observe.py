"""Instruments observe only: with or without any robustlab callback, a seeded
fit gives identical weights (and statistics, and attack seeds) and identical
values of every key the bare fit logs. Checked with a BatchNorm + Dropout
classifier in both attack modes, on the active backend."""

import numpy as np
import pytest

import robustlab
from robustlab.callbacks import BoundTracker
from robustlab.callbacks import HessianProbe
from robustlab.callbacks import PosteriorTracker
from robustlab.callbacks import RobustEvaluation
from robustlab.callbacks import StopOnNonFiniteLoss
from tests.state_contract_numbers import batch_norm_dropout_model
from tests.state_contract_numbers import data

N, BATCH, EPOCHS = 96, 32, 2
SCHEDULE = robustlab.schedules.PiecewiseConstant(0.1, drop_epochs=(1,))
CALLBACKS = ["RobustEvaluation", "HessianProbe", "PosteriorTracker", "BoundTracker",
             "StopOnNonFiniteLoss"]


def instruments(name, x, y):
    probe = HessianProbe(x[:32], y[:32], every=1, clean=True, iterations=3,
                         trace_probes=2, batch_size=32)
    tracker = PosteriorTracker(probe, batch_size=BATCH, train_size=N,
                               schedule=SCHEDULE, per_layer=True)
    return {
        "RobustEvaluation": lambda: [RobustEvaluation(x[:32], y[:32],
                                                      batch_size=16)],
        "HessianProbe": lambda: [probe],
        "PosteriorTracker": lambda: [probe, tracker],
        "BoundTracker": lambda: [probe, tracker, BoundTracker(
            N, prior_variance=1e-2, tracker=tracker, accuracy_key="robust_accuracy")],
        "StopOnNonFiniteLoss": lambda: [StopOnNonFiniteLoss()],
    }[name]()


def seeded_fit(attack_training_mode, *callbacks):
    x, y = data(N + 32)
    model = batch_norm_dropout_model(attack_training_mode)
    history = model.fit(x[:N], y[:N], batch_size=BATCH, epochs=EPOCHS, verbose=0,
                        validation_data=(x[N:], y[N:]),
                        callbacks=[SCHEDULE.callback(), *callbacks]).history
    # Keyed by position: seed generators get numbered paths per instance.
    variables = list(model.model.variables) + list(model.attack_seed_variables)
    state = {f"{i}:{v.name}": np.array(v) for i, v in enumerate(variables)}
    # What Keras reports after fit: the last validation pass's numbers.
    state.update({f"metric:{k}": np.array(v) for k, v in model.get_metrics_result().items()})
    return history, state


@pytest.fixture(scope="module", params=[False, True],
                ids=["inference-attack", "training-attack"])
def bare_fit(request):
    return request.param, seeded_fit(request.param)


@pytest.mark.parametrize("name", CALLBACKS)
def test_a_robustlab_callback_changes_no_weight_and_no_other_logged_number(
        bare_fit, name):
    attack_training_mode, (bare_history, bare_state) = bare_fit
    x, y = data(N)
    history, state = seeded_fit(attack_training_mode, *instruments(name, x, y))
    for key, values in bare_history.items():
        np.testing.assert_array_equal(history[key], values,
                                      err_msg=f"{name} changed the logged {key!r}")
    assert sorted(state) == sorted(bare_state)
    for path, value in bare_state.items():
        np.testing.assert_array_equal(state[path], value,
                                      err_msg=f"{name} changed {path}")


class ForkAtEpochEnd(__import__("keras").callbacks.Callback):
    """Forks the model from inside its fit, at the end of one epoch."""

    def __init__(self, epoch, x, y):
        super().__init__()
        self.epoch, self.x, self.y = epoch, x, y

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            robustlab.forks.fork(self.model, self.x, self.y, batch_size=BATCH,
                                 learning_rate=0.01, replicas=2, steps=2,
                                 probe_examples=16, lanczos_iterations=4, seed=3)


@pytest.mark.parametrize("fork_epoch", [0, EPOCHS - 1])
def test_a_fork_from_a_callback_changes_no_number_the_tracker_logs(fork_epoch):
    # The fork's replicas train in a fit inside the outer fit: the tracker of
    # the outer fit must not see their steps, and must see the outer steps
    # after it as before.
    x, y = data(N)

    def tracked(*extra):
        probe = HessianProbe(x[:32], y[:32], every=1, iterations=3, batch_size=32)
        tracker = PosteriorTracker(probe, batch_size=BATCH, train_size=N, schedule=SCHEDULE)
        model = batch_norm_dropout_model(False)
        return model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0,
                         callbacks=[SCHEDULE.callback(), *extra, probe, tracker]).history

    bare = tracked()
    forked = tracked(ForkAtEpochEnd(fork_epoch, x, y))
    for key, values in bare.items():
        np.testing.assert_array_equal(forked[key], values,
                                      err_msg=f"a fork changed the logged {key!r}")


def test_a_fork_puts_back_the_metrics_and_the_models_history():
    x, y = data(N)
    model = batch_norm_dropout_model(False)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    metrics = {k: float(v) for k, v in model.get_metrics_result().items()}
    robustlab.forks.fork(model, x, y, batch_size=BATCH, learning_rate=0.01, replicas=2,
                         steps=2, probe_examples=16, lanczos_iterations=4, seed=3)
    assert {k: float(v) for k, v in model.get_metrics_result().items()} == metrics
    assert model.history is history


def test_an_unseeded_attack_leaves_pythons_random_untouched():
    import random

    x, y = data(8)
    model = batch_norm_dropout_model(False)
    random.seed(0)
    expected = random.random()
    random.seed(0)
    robustlab.attacks.pgd(model.model, x, y, eps=0.1, steps=1, seed=None)
    assert random.random() == expected
