"""The state contract of AdversarialModel (see its docstring), with a
BatchNorm + Dropout classifier in both attack modes, on the active backend,
and the agreement of TensorFlow and JAX."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.state_contract_numbers import batch_norm_dropout_model
from tests.state_contract_numbers import data
from tests.state_contract_numbers import numbers

MODES = pytest.mark.parametrize("attack_training_mode", [False, True],
                                ids=["inference-attack", "training-attack"])


def snapshot(model):
    """Every variable of the model (weights, moving statistics, seed states,
    AWP's gamma), by path."""
    return {v.path: np.array(v) for v in model.variables}


def restore(model, values):
    for v in model.variables:
        v.assign(values[v.path])


def changed(before, after):
    return sorted(p for p in before if not np.array_equal(before[p], after[p]))


def seed_paths(model):
    return {v.path for v in model.attack_seed_variables}


@MODES
def test_crafting_changes_no_variable_but_the_attack_seed(attack_training_mode):
    x, y = data(32)
    model = batch_norm_dropout_model(attack_training_mode)
    train_seed, eval_seed = (v.path for v in model.attack_seed_variables)
    before = snapshot(model)
    model.craft_adversarial_batch(x, y)
    assert changed(before, snapshot(model)) == [train_seed]
    before = snapshot(model)
    model.craft_adversarial_batch(x, y, training_attack=False)
    assert changed(before, snapshot(model)) == [eval_seed]


@MODES
def test_evaluate_changes_no_variable_but_the_evaluation_attack_seed(
        attack_training_mode):
    x, y = data()
    model = batch_norm_dropout_model(attack_training_mode)
    model.train_on_batch(x[:32], y[:32])  # moving statistics away from 0 and 1
    before = snapshot(model)
    model.evaluate(x, y, batch_size=32, verbose=0)
    _, eval_seed = (v.path for v in model.attack_seed_variables)
    # Metric variables are not the model's state: evaluate resets them first.
    model_paths = {v.path for v in model.variables} - {
        v.path for v in model.metrics_variables}
    after = snapshot(model)
    assert [p for p in changed(before, after) if p in model_paths] == [eval_seed]


@MODES
def test_a_training_step_moves_the_state_as_one_forward_pass_at_the_pgd_batch(
        attack_training_mode):
    x, y = data(32)
    model = batch_norm_dropout_model(attack_training_mode)
    model.train_on_batch(x, y)  # builds the optimizer and moves the statistics
    before = snapshot(model)
    x_adv = model.craft_adversarial_batch(x, y)
    restore(model, before)
    model.model(x_adv, training=True)
    expected = snapshot(model)
    restore(model, before)
    model.train_on_batch(x, y)
    after = snapshot(model)
    for variable in model.model.non_trainable_variables:
        # The step crafts in its compiled function, the reference eagerly:
        # the same operations, up to float rounding.
        np.testing.assert_allclose(after[variable.path], expected[variable.path],
                                   rtol=1e-5, atol=1e-6, err_msg=variable.path)
    moved = [p for p in changed(before, expected) if p in after]
    assert any("moving_mean" in p for p in moved)
    assert any("seed_generator" in p for p in moved)  # Dropout drew once


@MODES
def test_a_batch_norm_dropout_classifier_fits_and_evaluates(attack_training_mode):
    x, y = data(128)
    model = batch_norm_dropout_model(attack_training_mode)
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                        validation_data=(x[:64], y[:64])).history
    assert sorted(history) == sorted([
        "loss", "robust_loss", "robust_accuracy", "val_loss", "val_robust_loss",
        "val_robust_accuracy", "val_clean_loss", "val_clean_accuracy"])
    assert all(np.isfinite(v).all() for v in history.values())
    assert all(np.isfinite(w).all() for w in model.get_weights())
    again = batch_norm_dropout_model(attack_training_mode)
    assert again.fit(x, y, batch_size=32, epochs=2, verbose=0,
                     validation_data=(x[:64], y[:64])).history == history


def _other_backend_numbers(modes):
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    script = os.path.join(os.path.dirname(__file__), "state_contract_numbers.py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND=other,
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, script, *modes], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_close(a, b, path=""):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}/{key}")
    else:
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=path)


@pytest.mark.slow
def test_tensorflow_and_jax_agree():
    # Both backends are computed here (the other in a subprocess): the
    # comparison runs once, with the TensorFlow suite.
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compared from the TensorFlow suite")
    other = _other_backend_numbers(["inference", "training"])
    for mode in ("inference", "training"):
        _assert_close(numbers(mode == "training"), other[mode], mode)
