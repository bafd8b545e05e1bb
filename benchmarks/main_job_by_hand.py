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

With `--instruments`, also the measurements the main job makes (what
`robustlab.experiments.instruments` adds to `robustlab train`), written by
hand the way a user who knows TensorFlow would:

- every 5 epochs (at the end of epochs 4, 9, ...) the top Hessian eigenvalue
  of the robust loss: PGD-10 adversarial examples of the first 256 training
  digits (seed: the epoch), then power iteration with double-backprop
  Hessian-vector products in one `tf.function` (at most 20 steps, stop
  when the Rayleigh quotient moves by at most 1e-3 of itself, warm-started
  from the previous eigenvector; stopped at the cap, one product more for
  the quotient of the vector returned, as robustlab's probe does);
- every epoch, the weight cloud: the running (Welford) mean and variance of
  every weight over the epoch's iterates, updated inside the compiled
  training step in TensorFlow variables (nothing leaves the graph but the
  projection u . w on the last eigenvector u, in float64), and, once a
  direction exists, the minibatch noise along u at the window's start
  (PGD-3 examples of the 256 digits, per-example directional derivatives
  from one `tf.autodiff.ForwardAccumulator` pass) and the heavy-ball
  prediction of the variance along u;
- every epoch, the PAC-Bayes bound of the diagonal Gaussian cloud around the
  weights against the prior N(w_0, 1e-2 I) at the robust error of the 300
  training digits.

The closed-form arithmetic of the prediction and the bound (microseconds to
milliseconds an epoch: `robustlab.heavy_ball`, `robustlab.bounds`, and the
window formula of the tracker) is imported rather than copied; everything
that costs time is written here.

Run: `python benchmarks/main_job_by_hand.py [--epochs N] [--instruments]
[--out FILE]` (writes the per-epoch history as JSON to FILE).
"""

import argparse
import json
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from robustlab import bounds  # noqa: E402
from robustlab import data as data_module  # noqa: E402
from robustlab import experiments  # noqa: E402
from robustlab import heavy_ball  # noqa: E402
from robustlab import models  # noqa: E402
from robustlab.callbacks.posterior_tracker import expected_window_variance  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
PER_EXAMPLE_LOSS = keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, reduction=None)
PROBE_EXAMPLES = 256
PROBE_EVERY = 5
POWER_ITERATIONS = 20
POWER_TOL = 1e-3
PRIOR_VARIANCE = 1e-2
VARIANCE_FLOOR = 1e-12 * PRIOR_VARIANCE
DELTA = 0.05


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


class WeightCloud:
    """The epoch's weight cloud, kept in TensorFlow variables: Welford's
    running mean and sum of squared deviations (M2) of every trainable
    weight, updated inside the compiled training step after each optimizer
    step, and the projection u . w of the new weights on a direction u
    (float64), returned by the step."""

    def __init__(self, net):
        self.variables = list(net.trainable_variables)
        self.count = tf.Variable(0.0, trainable=False)
        self.mean = [tf.Variable(tf.zeros(v.shape), trainable=False)
                     for v in self.variables]
        self.m2 = [tf.Variable(tf.zeros(v.shape), trainable=False)
                   for v in self.variables]
        self.direction = [tf.Variable(tf.zeros(v.shape, tf.float64), trainable=False)
                          for v in self.variables]
        self.size = sum(int(np.prod(v.shape)) for v in self.variables)

    def reset(self, direction=None):
        self.count.assign(0.0)
        for mean, m2 in zip(self.mean, self.m2):
            mean.assign(tf.zeros_like(mean))
            m2.assign(tf.zeros_like(m2))
        if direction is not None:
            for variable, part in zip(self.direction, direction):
                variable.assign(part)

    def update(self):
        """Graph code: add the current weights; returns u . w (float64)."""
        count = self.count.assign_add(1.0)
        projection = []
        for variable, mean, m2, u in zip(self.variables, self.mean, self.m2,
                                         self.direction):
            w = variable.value
            delta = w - mean
            new_mean = mean + delta / count
            mean.assign(new_mean)
            m2.assign_add(delta * (w - new_mean))
            projection.append(tf.reduce_sum(tf.cast(w, tf.float64) * u))
        return tf.add_n(projection)

    def variances(self):
        """Per-weight variance of the window's iterates (ddof=0), float64."""
        count = float(self.count.numpy())
        return [m2.numpy().astype(np.float64) / count for m2 in self.m2]


def flat(arrays):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def unflat(vector, variables, dtype):
    parts, start = [], 0
    for v in variables:
        size = int(np.prod(v.shape))
        parts.append(vector[start:start + size].reshape(v.shape).astype(dtype))
        start += size
    return parts


def make_instruments(net, q):
    """The compiled pieces of the instruments: the two attacks on the probe
    set, the Hessian-vector product of the mean loss, and the per-example
    directional derivatives."""
    variables = list(net.trainable_variables)
    signature = [tf.TensorSpec([None, 8, 8, 1], tf.float32),
                 tf.TensorSpec([None], tf.int64), tf.TensorSpec([2], tf.int32)]
    tangents = [tf.TensorSpec(v.shape, tf.float32) for v in variables]

    def attack(spec):
        @tf.function(input_signature=signature)
        def run(x, y, seed):
            return pgd(net, x, y, spec.eps, spec.step_size, spec.steps, seed)
        return run

    @tf.function(input_signature=signature[:2] + [tangents])
    def hessian_vector_product(x, y, tangent):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = LOSS(y, net(x, training=False))
            gradients = inner.gradient(loss, variables)
            directional = tf.add_n([tf.reduce_sum(g * t)
                                    for g, t in zip(gradients, tangent)])
        return outer.gradient(directional, variables)

    @tf.function(input_signature=signature[:2] + [tangents])
    def directional_derivatives(x, y, tangent):
        primals = [v.value for v in variables]
        with tf.autodiff.ForwardAccumulator(primals, tangent) as accumulator:
            losses = PER_EXAMPLE_LOSS(y, net(x, training=False))
        return accumulator.jvp(losses, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return {"probe_attack": attack(q.eval_attack), "noise_attack": attack(q.train_attack),
            "hvp": hessian_vector_product, "directional": directional_derivatives}


def top_eigenpair(hvp, variables, x, y, initial):
    """Power iteration: at most POWER_ITERATIONS steps, stop when the
    Rayleigh quotient moves by at most POWER_TOL of itself. Returns the
    eigenvalue, the unit vector and the number of products."""
    def product(v):
        return flat(t.numpy() for t in hvp(x, y, unflat(v, variables, np.float32)))

    v = initial / np.linalg.norm(initial)
    eigenvalue, previous = 0.0, None
    for step in range(1, POWER_ITERATIONS + 1):
        w = product(v)
        eigenvalue = float(v @ w)
        if previous is not None and abs(eigenvalue - previous) <= POWER_TOL * abs(eigenvalue):
            return eigenvalue, v, step
        previous, v = eigenvalue, w / np.linalg.norm(w)
    # At the cap robustlab's probe takes one more product, for the Rayleigh
    # quotient of the vector it returns (robustlab/spectral.py): the baseline
    # does the same work and returns the same pair.
    return float(v @ product(v)), v, POWER_ITERATIONS + 1


def regularization_curvature(variables, u_parts):
    """2 l ||u_v||^2 summed over the variables with an L2(l) regulariser."""
    total = 0.0
    for variable, part in zip(variables, u_parts):
        l2 = getattr(getattr(variable, "regularizer", None), "l2", None)
        if l2:
            total += 2.0 * float(l2) * float(part.ravel() @ part.ravel())
    return total


def window_prediction(q, epoch, steps, n, eigenvalue, regularization, noise_variance):
    """The heavy-ball prediction of the window's variance along u, and the
    stationary variance, at the epoch's rate (NaN where unstable)."""
    lr, beta = float(q.schedule(epoch)), q.momentum
    start_lr = float(q.schedule(epoch - 1)) if epoch else lr
    lam = eigenvalue + regularization
    if not lam > 0 or max(lr, start_lr) * lam >= 2.0 * (1.0 + beta):
        return math.nan, math.nan
    sizes = np.full(steps, q.batch_size)
    if steps == math.ceil(n / q.batch_size) and n % q.batch_size:
        sizes[-1] = n - (steps - 1) * q.batch_size
    noise = noise_variance / sizes * (n - sizes) / (n - 1)
    initial = heavy_ball.stationary_covariance(start_lr, beta, lam, noise[0], 1)
    predicted = expected_window_variance(np.full(steps, lr), beta, lam, noise,
                                         initial=initial)
    stationary = heavy_ball.stationary_variance(lr, beta, lam, noise[0], 1)
    return float(predicted), float(stationary)


def make_steps(net, optimizer, q, cloud=None):
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
        if cloud is None:
            return loss, correct
        return loss, correct, cloud.update()

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


def main_job(epochs, instruments=False):
    q = experiments.QUICK
    dataset = data_module.load(q.dataset, train_size=q.train_size,
                               seed=q.data_seed, label_noise=q.label_noise)
    x_train, y_train = dataset.x_train, dataset.y_train.astype("int64")
    x_test, y_test = dataset.x_test, dataset.y_test.astype("int64")
    net = models.small_cnn(dataset.input_shape, dataset.num_classes, seed=q.seed,
                           weight_decay=q.weight_decay)
    optimizer = keras.optimizers.SGD(q.learning_rate, momentum=q.momentum)
    optimizer.build(net.trainable_variables)
    cloud = WeightCloud(net) if instruments else None
    train_step, eval_step = make_steps(net, optimizer, q, cloud)
    if instruments:
        compiled = make_instruments(net, q)
        variables = list(net.trainable_variables)
        x_probe, y_probe = x_train[:PROBE_EXAMPLES], y_train[:PROBE_EXAMPLES]
        initial_weights = flat(v.numpy() for v in variables)
        eigenpair = None  # (epoch, eigenvalue, flat unit eigenvector)
    n_eval = q.eval_train_examples
    history = {}
    for epoch in range(epochs):
        optimizer.learning_rate.assign(q.schedule(epoch))
        logs = {}
        if instruments:
            window = None
            if eigenpair is None:
                cloud.reset()
            else:
                u_parts = unflat(eigenpair[2], variables, np.float64)
                cloud.reset(u_parts)
                x_noise = compiled["noise_attack"](
                    x_probe, y_probe, tf.constant([3000 + epoch, 0], tf.int32))
                derivatives = compiled["directional"](
                    x_noise, y_probe, unflat(eigenpair[2], variables, np.float32))
                window = (eigenpair[1], regularization_curvature(variables, u_parts),
                          float(np.var(derivatives.numpy().astype(np.float64))))
            projections = []
        order = np.random.default_rng([q.seed, epoch]).permutation(len(x_train))
        loss_sum = correct = 0.0
        for i, start in enumerate(range(0, len(order), q.batch_size)):
            rows = order[start:start + q.batch_size]
            outputs = train_step(
                x_train[rows], y_train[rows], tf.constant([epoch, i], tf.int32))
            loss_sum += float(outputs[0]) * len(rows)
            correct += float(outputs[1])
            if instruments:
                projections.append(float(outputs[2]))
        logs.update(loss=loss_sum / len(order), robust_accuracy=correct / len(order))
        for prefix, x, y in (("val_", x_test, y_test),
                             ("train_", x_train[:n_eval], y_train[:n_eval])):
            results = evaluate(eval_step, x, y, q.eval_batch_size, seed=1000 + epoch)
            logs.update({prefix + k: v for k, v in results.items()})
        if instruments:
            logs.update(measure_epoch(
                q, epoch, net, cloud, window, projections, initial_weights,
                logs["train_robust_accuracy"], len(x_train)))
            if (epoch + 1) % PROBE_EVERY == 0:
                x_adv = compiled["probe_attack"](
                    x_probe, y_probe, tf.constant([2000 + epoch, 0], tf.int32))
                start = (eigenpair[2] if eigenpair is not None else
                         np.random.default_rng(epoch).standard_normal(cloud.size))
                eigenvalue, vector, products = top_eigenpair(
                    compiled["hvp"], variables, x_adv, y_probe, start)
                eigenpair = (epoch, eigenvalue, vector)
                logs.update(hessian_top_eig=eigenvalue, hessian_iterations=products)
            else:
                logs.update(hessian_top_eig=math.nan, hessian_iterations=math.nan)
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
    return history


def measure_epoch(q, epoch, net, cloud, window, projections, initial_weights,
                  train_robust_accuracy, n):
    """The window's cloud (overall, along u, predicted) and the bound."""
    variances = cloud.variances()
    values = {"posterior_var": float(sum(v.sum() for v in variances) / cloud.size),
              "posterior_var_top": math.nan, "posterior_var_top_predicted": math.nan,
              "posterior_var_top_stationary": math.nan, "posterior_noise_top": math.nan}
    if window is not None:
        eigenvalue, regularization, noise_variance = window
        predicted, stationary = window_prediction(
            q, epoch, len(projections), n, eigenvalue, regularization, noise_variance)
        values.update(posterior_var_top=float(np.var(projections)),
                      posterior_var_top_predicted=predicted,
                      posterior_var_top_stationary=stationary,
                      posterior_noise_top=noise_variance)
    risk = min(max(1.0 - train_robust_accuracy, 0.0), 1.0)
    kl = float(bounds.gaussian_kl(
        flat(v.numpy() for v in net.trainable_variables),
        np.maximum(flat(variances), VARIANCE_FLOOR), initial_weights, PRIOR_VARIANCE))
    values.update(pac_bayes_kl=kl,
                  pac_bayes_bound=float(bounds.seeger_bound(risk, kl, n, DELTA)))
    return values


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=experiments.QUICK.epochs)
    parser.add_argument("--instruments", action="store_true",
                        help="also the main job's measurements, written by hand")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    history = main_job(args.epochs, args.instruments)
    seconds = time.perf_counter() - start
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"history": history, "seconds": seconds}, f)


if __name__ == "__main__":
    main()
