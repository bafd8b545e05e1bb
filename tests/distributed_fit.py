"""Adversarial training on two logical CPU devices; run as a subprocess by
tests/test_distribution.py (the devices must be set up before the backend
initialises). Prints its results as JSON.

    distributed_fit.py [--awp] [--random-start]   fit on two devices and one
    distributed_fit.py --state-contract           the state contract on two
"""

import contextlib
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
from tests.state_contract_numbers import batch_norm_dropout_model  # noqa: E402
from tests.state_contract_numbers import batch_norm_dropout_net  # noqa: E402
from tests.state_contract_numbers import data  # noqa: E402
from tests.state_contract_numbers import LOSS  # noqa: E402


def build_and_fit(awp, random_start):
    """Two epochs in a fixed batch order, so that one device and two must
    agree up to float rounding (with random starts too: the replicas draw
    the noise one device draws for the whole batch)."""
    data = robustlab.data.load("digits", train_size=256, seed=0)
    net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=0)
    model = robustlab.AdversarialModel(
        net, attack=robustlab.PGD(eps=0.1, steps=3, random_start=random_start),
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


# -- the backends' data parallelism -------------------------------------------


def two_devices():
    """A context in which models are built and run on two devices, and the
    number of replicas."""
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        return strategy.scope, strategy.num_replicas_in_sync
    import jax

    devices = jax.devices()

    @contextlib.contextmanager
    def data_parallel():
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=devices))
        try:
            yield
        finally:
            keras.distribution.set_distribution(None)

    return data_parallel, len(devices)


def split_over_devices(x, y):
    """The batch `(x, y)` split over the devices as a training or test step
    splits it, and the number of examples on each device."""
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        batch = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
        x, y = next(iter(strategy.experimental_distribute_dataset(batch)))
        sizes = [int(t.shape[0]) for t in strategy.experimental_local_results(x)]
        return x, y, sizes
    distribution = keras.distribution.distribution()
    x, y = (keras.distribution.distribute_tensor(
        a, distribution.get_data_layout(a.shape)) for a in (x, y))
    return x, y, [s.data.shape[0] for s in x.addressable_shards]


def craft_on_replicas(model, x, y, training_attack=True):
    """`model.craft_adversarial_batch` on the batch split over the devices;
    the global adversarial batch."""
    x, y, _ = split_over_devices(x, y)
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()

        @tf.function
        def craft(x, y):
            return strategy.run(
                lambda a, b: model.craft_adversarial_batch(a, b, training_attack),
                args=(x, y))

        return np.asarray(strategy.gather(craft(x, y), axis=0))
    return np.asarray(model.craft_adversarial_batch(x, y, training_attack))


def forward_on_replicas(model, x):
    """One training forward pass of the network at the batch `x`, split over
    the devices as a training step splits it."""
    x, _, _ = split_over_devices(x, np.zeros(len(x), "int64"))
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()

        @tf.function
        def forward(x):
            return strategy.run(lambda a: model.model(a, training=True), args=(x,))

        forward(x)
    else:
        model.model(x, training=True)


def replica_copies(variable):
    """The values of `variable` on each device."""
    value = variable.value
    if backend == "tensorflow":
        return [np.asarray(c) for c in getattr(value, "values", [value])]
    return [np.asarray(s.data) for s in value.addressable_shards]


# -- the state contract -----------------------------------------------------------


def snapshot(model):
    """Every variable of the model but the metrics', with its value on each
    device, by name (the attack seeds by their role: paths depend on how
    many models were built)."""
    names = {id(model._train_seed.state): "train_attack_seed",
             id(model._eval_seed.state): "eval_attack_seed"}
    metrics = {id(v) for v in model.metrics_variables}
    return {names.get(id(v), v.path): np.stack(replica_copies(v))
            for v in model.variables if id(v) not in metrics}


def restore(model, values):
    """Give every variable of `model` the values `snapshot` took, on each
    device (on TensorFlow a replica's copy of a BatchNorm statistic is its
    own)."""
    metrics = {id(v) for v in model.metrics_variables}
    names = {id(model._train_seed.state): "train_attack_seed",
             id(model._eval_seed.state): "eval_attack_seed"}
    for v in model.variables:
        if id(v) in metrics:
            continue
        copies = values[names.get(id(v), v.path)]
        parts = getattr(v.value, "values", None) if backend == "tensorflow" else None
        if parts is None:
            v.assign(copies[0])
        else:
            for part, copy in zip(parts, copies):
                part.assign(copy)


def step_against_forward_pass(model, x, y):
    """The largest difference, over every device's copy of every
    non-trainable variable of the network, between one training step and
    one training forward pass at the step's adversarial batch, and the
    variables that pass moved."""
    model.train_on_batch(x, y)  # builds the optimizer, moves the statistics
    before = snapshot(model)
    x_adv = craft_on_replicas(model, x, y)
    restore(model, before)
    forward_on_replicas(model, x_adv)
    expected = snapshot(model)
    restore(model, before)
    # A one-step fit, not train_on_batch: on TensorFlow, train_on_batch hands
    # every replica the whole batch, fit splits it as a distributed step does.
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    after = snapshot(model)
    paths = [v.path for v in model.model.non_trainable_variables]
    difference = max(float(np.max(np.abs(after[p] - expected[p]))) for p in paths)
    return difference, changed({p: before[p] for p in paths}, expected)


def changed(before, after):
    return sorted(p for p in before if not np.array_equal(before[p], after[p]))


def contract_steps(model, craft, x, y):
    """Craft for training, craft for evaluation, one training step, then
    evaluate: what each changed, the adversarial batches and the seeds."""
    result = {}
    before = snapshot(model)
    x_train_adv = craft(model, x[:32], y[:32])
    result["train_crafting_changed"] = changed(before, snapshot(model))
    before = snapshot(model)
    x_eval_adv = craft(model, x[:32], y[:32], training_attack=False)
    result["eval_crafting_changed"] = changed(before, snapshot(model))
    model.train_on_batch(x[:32], y[:32])  # moving statistics away from 0 and 1
    before = snapshot(model)
    model.evaluate(x, y, batch_size=32, verbose=0)
    after = snapshot(model)
    result["evaluate_changed"] = changed(before, after)
    seeds = {k: after[k].tolist() for k in ("train_attack_seed", "eval_attack_seed")}
    return result, seeds, x_train_adv, x_eval_adv


def seeds_differing_between_devices(seeds):
    return sorted(k for k, copies in seeds.items()
                  if any(c != copies[0] for c in copies))


def l2_model():
    model = robustlab.AdversarialModel(
        batch_norm_dropout_net(), attack=robustlab.PGD(1.0, steps=2, norm="l2"))
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    return model


def state_contract(distributed, replicas):
    """The state contract under the backend's data parallelism, in both
    attack modes, with random starts and an active Dropout; the seeds, and
    the adversarial batches of the inference-mode attack, compared with one
    device's. (In training mode the attack's forward passes normalise with
    each replica's batch statistics and draw Dropout masks per replica on
    TensorFlow, Keras's behaviour under tf.distribute, so its batches differ
    from one device's there.)"""
    x, y = data(64)
    # An odd batch splits unevenly over TensorFlow's replicas; JAX shards an
    # array only in equal parts.
    n = 31 if backend == "tensorflow" else 32
    result = {"replicas": replicas}
    for mode in ("inference", "training"):
        with distributed():
            model = batch_norm_dropout_model(mode == "training")
            report, seeds, x_train_adv, x_eval_adv = contract_steps(
                model, craft_on_replicas, x, y)
        one_device = batch_norm_dropout_model(mode == "training")
        _, one_seeds, one_train_adv, one_eval_adv = contract_steps(
            one_device, lambda m, *a, **k: np.asarray(m.craft_adversarial_batch(*a, **k)),
            x, y)
        report["seeds_differing_between_devices"] = seeds_differing_between_devices(
            seeds)
        report["seeds_as_on_one_device"] = all(
            copy == one_seeds[k][0] for k, copies in seeds.items() for copy in copies)
        with distributed():
            report["step_against_forward_pass"], report["forward_pass_moved"] = (
                step_against_forward_pass(batch_norm_dropout_model(mode == "training"),
                                          x[:32], y[:32]))
        if mode == "inference":
            report["train_adversarial_difference"] = float(
                np.max(np.abs(x_train_adv - one_train_adv)))
            report["eval_adversarial_difference"] = float(
                np.max(np.abs(x_eval_adv - one_eval_adv)))
        result[mode] = report
    with distributed():
        x_l2 = craft_on_replicas(l2_model(), x[:n], y[:n])
        result["l2_split"] = split_over_devices(x[:n], y[:n])[2]
    one_l2 = np.asarray(l2_model().craft_adversarial_batch(x[:n], y[:n]))
    result["l2_adversarial_difference"] = float(np.max(np.abs(x_l2 - one_l2)))
    return result


def fit_on_two_devices_and_one(distributed, replicas):
    awp = "--awp" in sys.argv
    random_start = "--random-start" in sys.argv
    with distributed():
        history, weights = build_and_fit(awp, random_start)
    single_history, single_weights = build_and_fit(awp, random_start)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, single_weights))
    return {"replicas": replicas, "history": history,
            "single_device_history": single_history,
            "max_weight_difference": difference}


def main():
    distributed, replicas = two_devices()
    if "--state-contract" in sys.argv:
        result = state_contract(distributed, replicas)
    else:
        result = fit_on_two_devices_and_one(distributed, replicas)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
