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

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_fit.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = pytest.mark.parametrize("mode", ["inference", "training"],
                                ids=["inference-attack", "training-attack"])


def run_distributed(*args):
    # The script imports the state contract's model from the tests package.
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True,
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
