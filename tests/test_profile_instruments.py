"""The instruments' profile (`benchmarks/profile_instruments.py`) times
every part it names and only reads the clock: a run under its timers logs
what a run without them logs, and leaves the callbacks as they were."""

import math

import pytest

from robustlab import experiments
from robustlab.callbacks.posterior_tracker import PosteriorTracker
from tests import benchmark_scripts

TINY = experiments.get("quick").replace(train_size=128, epochs=3)


@pytest.fixture(scope="module")
def profile():
    return benchmark_scripts.load("profile_instruments")


def _history(experiment):
    history, _ = experiments.run(experiment, None, probe_every=1, verbose=0)
    return history.history if hasattr(history, "history") else history


def test_a_run_under_the_timers_logs_what_it_logs_without_them(profile):
    plain = _history(TINY)
    hooks = dict(vars(PosteriorTracker))
    with profile.timers() as (totals, counts):
        timed = _history(TINY)
    assert dict(vars(PosteriorTracker)) == hooks  # restored
    assert timed.keys() == plain.keys()
    for key in plain:
        assert all(a == b or (math.isnan(a) and math.isnan(b))
                   for a, b in zip(timed[key], plain[key], strict=True)), key
    # Each named part ran: the probe, the evaluation and the bound at each
    # epoch's end, the noise in each window with a direction (epochs 1, 2),
    # the weight cloud at each of the 2 steps of the 3 epochs.
    assert {label: counts[label] for label in profile.PARTS} == {
        "RobustEvaluation.on_epoch_end": 3, "HessianProbe.on_epoch_end": 3,
        "PosteriorTracker.on_epoch_begin": 3, "PosteriorTracker._noise_along": 2,
        "PosteriorTracker.on_epoch_end": 3, "PosteriorTracker._observe": 6,
        "PosteriorTracker._predict": 2, "BoundTracker.on_epoch_end": 3}
    assert all(totals[label] > 0 for label in profile.PARTS)
