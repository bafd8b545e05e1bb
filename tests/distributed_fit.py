"""Adversarial training on two logical CPU devices; run as a subprocess by
tests/test_distribution.py (the devices must be set up before the backend
initialises). Prints the final logs as JSON."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
backend = os.environ.get("KERAS_BACKEND", "tensorflow")
if backend == "jax":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import robustlab  # noqa: E402


def build_and_fit(awp):
    """Two epochs without randomness (no random start, fixed batch order),
    so that one device and two must agree up to float rounding."""
    data = robustlab.data.load("digits", train_size=256, seed=0)
    net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=0)
    model = robustlab.AdversarialModel(
        net, attack=robustlab.PGD(eps=0.1, steps=3, random_start=False),
        awp=robustlab.AWP(gamma=0.01) if awp else None,
    )
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(data.x_train, data.y_train, batch_size=64, epochs=2, verbose=0,
                        shuffle=False,
                        validation_data=(data.x_test[:128], data.y_test[:128]))
    history = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    return history, [np.asarray(w) for w in model.model.get_weights()]


def main():
    awp = "--awp" in sys.argv
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            history, weights = build_and_fit(awp)
        replicas = strategy.num_replicas_in_sync
        single_history, single_weights = build_and_fit(awp)
    else:
        import jax

        devices = jax.devices()
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices))
        history, weights = build_and_fit(awp)
        replicas = len(devices)
        keras.distribution.set_distribution(None)
        single_history, single_weights = build_and_fit(awp)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, single_weights))
    print(json.dumps({"replicas": replicas, "history": history,
                      "single_device_history": single_history,
                      "max_weight_difference": difference}))


if __name__ == "__main__":
    main()
