"""The numbers of the state contract's cross-backend check: run in-process by
tests/test_state_contract.py on its own backend and as a subprocess on the
other one. Prints them as JSON.

Keras draws random numbers with backend-specific generators (Philox on
TensorFlow, threefry on JAX), so the same seed gives other draws on the two
backends; this check therefore runs without random starts and with a dropout
rate of 0 (the layer stays in the model). The contract's other parts hold
with random starts and an active Dropout, and are tested on each backend.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import robustlab  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def batch_norm_dropout_net(dropout=0.5, seed=0):
    """A small classifier with BatchNorm (moving statistics) and Dropout (a
    seed generator): both kinds of state a forward pass writes."""
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, kernel_initializer=init, name="conv"),
        keras.layers.BatchNormalization(momentum=0.5, name="bn"),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dropout(dropout, seed=seed, name="dropout"),
        keras.layers.Dense(10, kernel_initializer=init, name="logits"),
    ])


def batch_norm_dropout_model(attack_training_mode, dropout=0.5, random_start=True,
                             seed=0):
    model = robustlab.AdversarialModel(
        batch_norm_dropout_net(dropout, seed),
        attack=robustlab.PGD(0.1, steps=3, random_start=random_start),
        eval_attack=robustlab.PGD(0.1, steps=4, random_start=random_start),
        seed=seed, attack_training_mode=attack_training_mode)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS, metrics=["accuracy"])
    return model


def data(n=64):
    digits = robustlab.data.load("digits", train_size=200, seed=0)
    return digits.x_train[:n], digits.y_train[:n]


def numbers(attack_training_mode):
    """Evaluate, two training steps, evaluate: logs, weights and moving
    statistics, without randomness (see the module docstring)."""
    x, y = data()
    model = batch_norm_dropout_model(attack_training_mode, dropout=0.0,
                                     random_start=False)
    # Keras initialisers draw backend-specific numbers too.
    rng = np.random.default_rng(0)
    for variable in model.model.trainable_variables:
        if "kernel" in variable.path:
            scale = 1.0 / np.sqrt(np.prod(variable.shape[:-1]))
            variable.assign(rng.normal(0.0, scale, variable.shape).astype("float32"))
    result = {"evaluate_before": model.evaluate(x, y, batch_size=32, verbose=0,
                                                return_dict=True)}
    result["x_adv"] = np.asarray(model.craft_adversarial_batch(x[:32], y[:32]))
    for _ in range(2):
        model.train_on_batch(x[:32], y[:32])
        model.train_on_batch(x[32:], y[32:])
    result["evaluate_after"] = model.evaluate(x, y, batch_size=32, verbose=0,
                                              return_dict=True)
    # Keyed by layer and name: the model's own name depends on how many
    # models the process built before.
    result["variables"] = {v.path.split("/", 1)[1]: np.asarray(v)
                           for v in model.model.variables
                           if "seed_generator" not in v.path}
    return _plain(result)


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return np.asarray(value, np.float64).tolist()


if __name__ == "__main__":
    print(json.dumps({mode: numbers(mode == "training") for mode in sys.argv[1:]}))
