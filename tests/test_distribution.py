"""Adversarial training (and AWP) under the backends' data parallelism, on two
logical CPU devices, agrees with training on one device, random starts
included, and keeps AdversarialModel's state contract."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import robustlab

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_fit.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = pytest.mark.parametrize("mode", ["inference", "training"],
                                ids=["inference-attack", "training-attack"])


def run_distributed(*args):
    return _run_subprocess([SCRIPT, *args])


def _run_subprocess(args):
    # The script imports the state contract's model from the tests package.
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("awp", [False, True], ids=["pgd", "pgd+awp"])
def test_two_devices_train_like_one_with_random_starts(awp):
    # TensorFlow: tf.distribute.MirroredStrategy; JAX: keras.distribution.DataParallel.
    # The replicas use the noise one device draws for the whole batch, so the
    # runs agree up to float rounding. (Without random starts nothing is
    # drawn: that path is the one a random start takes after its draw.)
    args = (["--awp"] if awp else []) + ["--random-start"]
    result = run_distributed(*args)
    assert result["replicas"] == 2
    assert result["max_weight_difference"] < 1e-4
    for key, values in result["single_device_history"].items():
        np.testing.assert_allclose(result["history"][key], values, rtol=1e-4,
                                   atol=1e-5, err_msg=key)


@pytest.fixture(scope="module")
def contract():
    """One subprocess for all the checks below (each costs tens of seconds):
    a BatchNorm + Dropout classifier with random starts on two devices."""
    result = run_distributed("--state-contract")
    assert result["replicas"] == 2
    return result


@pytest.mark.slow
@MODES
def test_crafting_on_two_devices_changes_no_variable_but_the_attack_seed(
        contract, mode):
    assert contract[mode]["train_crafting_changed"] == ["train_attack_seed"]
    assert contract[mode]["eval_crafting_changed"] == ["eval_attack_seed"]


@pytest.mark.slow
@MODES
def test_evaluate_on_two_devices_changes_no_variable_but_the_evaluation_seed(
        contract, mode):
    assert contract[mode]["evaluate_changed"] == ["eval_attack_seed"]


@pytest.mark.slow
@MODES
def test_a_step_on_two_devices_moves_the_state_as_one_forward_pass_at_its_batch(
        contract, mode):
    # On each device (TensorFlow's replicas keep their own BatchNorm
    # statistics and Dropout seed, as Keras does under tf.distribute).
    assert contract[mode]["step_against_forward_pass"] < 1e-5
    moved = contract[mode]["forward_pass_moved"]
    assert any("moving_mean" in p for p in moved)
    assert any("seed_generator" in p for p in moved)  # Dropout drew once


@pytest.mark.slow
@MODES
def test_the_attack_seeds_advance_on_every_device_as_on_one(contract, mode):
    assert contract[mode]["seeds_differing_between_devices"] == []
    assert contract[mode]["seeds_as_on_one_device"]


@pytest.mark.slow
def test_two_devices_start_from_the_noise_one_device_draws(contract):
    # Identical starts on the two halves of the batch would differ from one
    # device's by up to 2 eps (0.2 here).
    assert contract["inference"]["train_adversarial_difference"] < 1e-5
    assert contract["inference"]["eval_adversarial_difference"] < 1e-5


@pytest.mark.slow
def test_an_l2_attack_on_an_uneven_split_starts_from_one_devices_noise(contract):
    # JAX shards an array only in equal parts.
    expected = [16, 15] if keras.backend.backend() == "tensorflow" else [16, 16]
    assert contract["l2_split"] == expected
    assert contract["l2_adversarial_difference"] < 1e-5


# -- sample-weighted metrics and iterate observers on two devices -------------


def weighted_batch():
    """One batch of 16 examples of 3 classes whose first half (the first
    replica's shard on two devices) weighs 5, the second 0.2: a mean of the
    replicas' weighted ratios differs from the weighted mean of the batch."""
    x = np.random.default_rng(0).random((16, 4, 4, 1), dtype="float32")
    y = (np.arange(16) % 3).astype("int32")
    weights = np.where(np.arange(16) < 8, 5.0, 0.2).astype("float32")
    return x, y, weights


def weighted_model(awp):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    model = robustlab.AdversarialModel(
        net, attack=robustlab.PGD(0.05, steps=2),
        awp=robustlab.AWP(gamma=0.01) if awp else None)
    model.compile(optimizer="sgd", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def weighted_numbers():
    """fit's robust accuracy (without AWP) and evaluate's clean accuracy
    (with AWP) of one weighted batch."""
    x, y, weights = weighted_batch()
    history = weighted_model(awp=False).fit(
        x, y, sample_weight=weights, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model = weighted_model(awp=True)
    model.fit(x, y, sample_weight=weights, batch_size=16, epochs=1, shuffle=False,
              verbose=0)
    logs = model.evaluate(x, y, sample_weight=weights, batch_size=16, verbose=0,
                          return_dict=True)
    return {"fit_robust_accuracy": history.history["robust_accuracy"][0],
            "awp_evaluate_clean_accuracy": logs["clean_accuracy"]}


class CountObservedSteps(keras.callbacks.Callback):
    def __init__(self, model):
        super().__init__()
        self.adversarial_model = model
        self.registered = None
        self.calls = 0

    def on_train_begin(self, logs=None):
        model = self.adversarial_model
        self.registered = model.observe_iterates(self.observe, model.trainable_variables)

    def observe(self, learning_rate, weights):
        self.calls += 1


def observed_steps_fit_outside_the_scope(distributed):
    """On TensorFlow: a model compiled inside `strategy.scope()` and fitted
    outside it, as Keras's guides do, for 4 steps."""
    x, y, _ = weighted_batch()
    with distributed():
        model = weighted_model(awp=False)
    counter = CountObservedSteps(model)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[counter])
    return {"registered": counter.registered, "calls": counter.calls}


def two_devices_worker():
    """Run in a subprocess by the fixture `two_devices`: prints its results
    as JSON."""
    from tests.distributed_fit import two_devices

    distributed, replicas = two_devices()
    with distributed():
        two = weighted_numbers()
    result = {"replicas": replicas, "two_devices": two, "one_device": weighted_numbers()}
    if keras.backend.backend() == "tensorflow":
        result["observed"] = observed_steps_fit_outside_the_scope(distributed)
    print(json.dumps(result))


# One subprocess for the tests of `two_devices` under pytest-xdist too.
TWO_DEVICES_GROUP = pytest.mark.xdist_group("tests/test_distribution.py:two_devices")


@pytest.fixture(scope="module")
def two_devices():
    # distributed_fit sets up JAX's two devices before Keras imports JAX.
    result = _run_subprocess([
        "-c", "import tests.distributed_fit; "
        "from tests.test_distribution import two_devices_worker; two_devices_worker()"])
    assert result["replicas"] == 2
    return result


# The weighted accuracies of the batch on one device, as fractions of its
# total weight 41.6 (the attack's random starts differ between the backends'
# generators): the examples counted right weigh 15 on TensorFlow, 10.4
# (fit) and 15.4 (evaluate) on JAX.
ONE_DEVICE_ACCURACY = {
    "tensorflow": {"fit_robust_accuracy": 15 / 41.6, "awp_evaluate_clean_accuracy": 15 / 41.6},
    "jax": {"fit_robust_accuracy": 10.4 / 41.6, "awp_evaluate_clean_accuracy": 15.4 / 41.6},
}


@pytest.mark.slow
@TWO_DEVICES_GROUP
def test_fit_logs_the_weighted_accuracy_of_the_whole_batch_on_two_devices(two_devices):
    # Not the mean of the replicas' weighted ratios (0.1875 on TensorFlow).
    expected = ONE_DEVICE_ACCURACY[keras.backend.backend()]["fit_robust_accuracy"]
    assert two_devices["one_device"]["fit_robust_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert two_devices["two_devices"]["fit_robust_accuracy"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
@TWO_DEVICES_GROUP
def test_evaluate_with_awp_gives_the_weighted_accuracy_of_the_whole_batch_on_two_devices(
        two_devices):
    # AWP's tracker, which evaluation does not log, made Keras keep the last
    # step's logs there too.
    expected = ONE_DEVICE_ACCURACY[keras.backend.backend()]["awp_evaluate_clean_accuracy"]
    assert two_devices["one_device"]["awp_evaluate_clean_accuracy"] == pytest.approx(
        expected, abs=1e-6)
    assert two_devices["two_devices"]["awp_evaluate_clean_accuracy"] == pytest.approx(
        expected, abs=1e-6)


@pytest.mark.slow
@TWO_DEVICES_GROUP
@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.distribute: each replica runs the step itself")
def test_observe_iterates_refuses_a_model_of_a_strategy_fitted_outside_its_scope(
        two_devices):
    # Each replica would hand over its own copy of every step.
    assert two_devices["observed"] == {"registered": False, "calls": 0}
