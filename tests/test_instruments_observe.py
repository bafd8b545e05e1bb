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
