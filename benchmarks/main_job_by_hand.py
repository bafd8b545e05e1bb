"""The README's main job written by hand in Keras + TensorFlow: the baseline
`bench_main_job.py` measures `robustlab train --experiment quick` against.

The same experiment as `robustlab.experiments.QUICK`: the same data
(`robustlab.data.load("digits", ...)`, 20% label noise), the same network
(`robustlab.models.small_cnn`, weight decay through its L2 regularisers),
SGD with momentum 0.9 at 0.2 dropped 10x at epoch 40, PGD-3 training
(random start, eps 0.1, step 2.5 eps / 3) in batches of 64 in a fresh order
every epoch, and after every epoch the clean and PGD-10 (step eps / 4)
accuracy and loss on the 797 test digits and the first 300 training digits
in batches of 256. Everything a user would write with `tf.function` steps
and a Python loop over NumPy batches; no robustlab training code.

Run: `python benchmarks/main_job_by_hand.py [--epochs N] [--out FILE]`
(writes the per-epoch history as JSON to FILE).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from robustlab import data as data_module  # noqa: E402
from robustlab import experiments  # noqa: E402
from robustlab import models  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def pgd(net, x, y, eps, step, steps, seed):
    """L-inf PGD with a uniform random start, clipped to [0, 1]."""
    x_adv = tf.clip_by_value(
        x + tf.random.stateless_uniform(tf.shape(x), seed, -eps, eps), 0.0, 1.0)
    for _ in range(steps):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x_adv)
            loss = LOSS(y, net(x_adv, training=False))
        gradient = tape.gradient(loss, x_adv)
        x_adv = tf.clip_by_value(
            tf.clip_by_value(x_adv + step * tf.sign(gradient), x - eps, x + eps),
            0.0, 1.0)
    return x_adv


def make_steps(net, optimizer, q):
    train_attack, eval_attack = q.train_attack, q.eval_attack
    signature = [tf.TensorSpec([None, 8, 8, 1], tf.float32),
                 tf.TensorSpec([None], tf.int64), tf.TensorSpec([2], tf.int32)]

    @tf.function(input_signature=signature)
    def train_step(x, y, seed):
        x_adv = pgd(net, x, y, train_attack.eps, train_attack.step_size,
                    train_attack.steps, seed)
        with tf.GradientTape() as tape:
            logits = net(x_adv, training=True)
            data_loss = LOSS(y, logits)
            loss = data_loss + tf.add_n(net.losses)
        gradients = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(gradients, net.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.argmax(logits, 1) == y, tf.float32))
        return loss, correct

    @tf.function(input_signature=signature)
    def eval_step(x, y, seed):
        x_adv = pgd(net, x, y, eval_attack.eps, eval_attack.step_size,
                    eval_attack.steps, seed)
        clean, robust = net(x, training=False), net(x_adv, training=False)
        n = tf.cast(tf.shape(x)[0], tf.float32)
        return (LOSS(y, clean) * n, LOSS(y, robust) * n,
                tf.reduce_sum(tf.cast(tf.argmax(clean, 1) == y, tf.float32)),
                tf.reduce_sum(tf.cast(tf.argmax(robust, 1) == y, tf.float32)))

    return train_step, eval_step


def evaluate(eval_step, x, y, batch_size, seed):
    totals = np.zeros(4)
    for i, start in enumerate(range(0, len(x), batch_size)):
        totals += [float(v) for v in eval_step(
            x[start:start + batch_size], y[start:start + batch_size],
            tf.constant([seed, i], tf.int32))]
    clean_loss, robust_loss, clean_correct, robust_correct = totals / len(x)
    return {"clean_loss": clean_loss, "robust_loss": robust_loss,
            "clean_accuracy": clean_correct, "robust_accuracy": robust_correct}


def main_job(epochs):
    q = experiments.QUICK
    dataset = data_module.load(q.dataset, train_size=q.train_size,
                               seed=q.data_seed, label_noise=q.label_noise)
    x_train, y_train = dataset.x_train, dataset.y_train.astype("int64")
    x_test, y_test = dataset.x_test, dataset.y_test.astype("int64")
    net = models.small_cnn(dataset.input_shape, dataset.num_classes, seed=q.seed,
                           weight_decay=q.weight_decay)
    optimizer = keras.optimizers.SGD(q.learning_rate, momentum=q.momentum)
    optimizer.build(net.trainable_variables)
    train_step, eval_step = make_steps(net, optimizer, q)
    n_eval = q.eval_train_examples
    history = {}
    for epoch in range(epochs):
        optimizer.learning_rate.assign(q.schedule(epoch))
        order = np.random.default_rng([q.seed, epoch]).permutation(len(x_train))
        loss_sum = correct = 0.0
        for i, start in enumerate(range(0, len(order), q.batch_size)):
            rows = order[start:start + q.batch_size]
            loss, batch_correct = train_step(
                x_train[rows], y_train[rows], tf.constant([epoch, i], tf.int32))
            loss_sum += float(loss) * len(rows)
            correct += float(batch_correct)
        logs = {"loss": loss_sum / len(order), "robust_accuracy": correct / len(order)}
        for prefix, x, y in (("val_", x_test, y_test),
                             ("train_", x_train[:n_eval], y_train[:n_eval])):
            results = evaluate(eval_step, x, y, q.eval_batch_size, seed=1000 + epoch)
            logs.update({prefix + k: v for k, v in results.items()})
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
    return history


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=experiments.QUICK.epochs)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    history = main_job(args.epochs)
    seconds = time.perf_counter() - start
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"history": history, "seconds": seconds}, f)


if __name__ == "__main__":
    main()
