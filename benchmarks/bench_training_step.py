"""Cost of a PGD-k adversarial training step (and of AWP) over a clean step.

Everything is measured in one process, side by side, after warm-up, as the
median over repeats of `fit` on the same batch (so per-step overhead of the
training loop is included, as users pay it):

- clean: `CleanStep(model).fit`, robustlab's `AdversarialModel` with the
  crafting skipped (it trains on the clean batch): the same `fit`, data
  handling, metrics and compiled step as the PGD-k rows, so that their
  ratio is the cost of the attack alone. (A plain Keras `model.fit` runs
  Keras's own loop, whose per-call and per-step costs differ from
  robustlab's: over it PGD-1 came out cheaper than a clean step.)
- pgd-k: `robustlab.AdversarialModel(model, PGD(steps=k)).fit`;
- awp: the same with `AWP(gamma=0.01)`;
- hand: a hand-written compiled PGD-k step on the same model
  (`tf.function` with tapes and the same `jit_compile` / `jax.jit` over
  `stateless_call`), looped in Python: what "adversarial training inside
  fit" is compared against (its ratio column: fit's step over this one).
  Its attack loop is unrolled where robustlab's is (on JAX on the CPU:
  XLA:CPU runs the convolutions of a rolled loop on a slow path), one
  step without a loop. It
  differentiates max pooling with JAX's own rule; robustlab's `fit` on JAX
  on the CPU uses one select per window, which is faster: there the row is
  labelled "(JAX's pool rule)" and fit/hand below 1 is that rule, not the
  loop.

The limit for PGD-k is k + 1 forward-backward passes (ratio to clean k + 1;
the attack's backward skips the weight gradients, so it can be below k + 1,
never below 1); AWP's limit over PGD-k is (k + 2) / (k + 1).

Run: `KERAS_BACKEND=tensorflow python benchmarks/bench_training_step.py`
(and `KERAS_BACKEND=jax`). Options: `--quick` (fewer repeats, small CNN
only), `--model small_cnn|resnet`.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import robustlab  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_data(input_shape, batch, steps, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (batch,) + input_shape).astype("float32")
    y = rng.integers(0, 10, batch)
    return np.tile(x, (steps,) + (1,) * len(input_shape)), np.tile(y, steps)


def time_fit(model, x, y, batch, repeats):
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)  # warm-up
    steps = len(x) // batch
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


class CleanStep(robustlab.AdversarialModel):
    """robustlab's training loop with the crafting skipped: every step trains
    on the clean batch, through the same `fit`, data handling, metrics and
    compiled step as an `AdversarialModel` with an attack."""

    def craft_adversarial_batch(self, x, y, training_attack=True):
        return x


def hand_row_name(k, net):
    """The hand row's label: it names the pooling rule where the hand step's
    differs from robustlab's (max pooling on JAX on the CPU)."""
    name = f"hand pgd-{k}"
    if keras.backend.backend() != "jax":
        return name
    import jax

    pools = any(isinstance(layer, keras.layers.MaxPooling2D) for layer in net.layers)
    return f"{name} (JAX's pool rule)" if pools and jax.default_backend() == "cpu" else name


def hand_jax_step(net, optimizer, attack):
    """The hand-written PGD-k SGD step on JAX, jitted:
    `step(trainable, non_trainable, optimizer_variables, x, y, key) ->
    (loss, trainable, non_trainable, optimizer_variables)`."""
    import jax
    import jax.numpy as jnp

    eps, alpha, k = attack.eps, attack.step_size, attack.steps

    def loss_fn(tv, ntv, x, y, training):
        logits, ntv = net.stateless_call(tv, ntv, x, training=training)
        return LOSS(y, logits), ntv

    @jax.jit
    def step(tv, ntv, ov, x, y, key):
        x_adv = x + jax.random.uniform(key, x.shape, minval=-eps, maxval=eps)

        def body(_, xa):
            g = jax.grad(lambda z: loss_fn(tv, ntv, z, y, False)[0])(xa)
            return jnp.clip(jnp.clip(xa + alpha * jnp.sign(g), x - eps, x + eps), 0, 1)

        # Unrolled where robustlab's attack loop is (autodiff.repeat): on the
        # CPU a rolled loop's convolutions take XLA's slow path, and the row
        # would time that path instead of the step. One step runs without a
        # loop there, as robustlab's does: unrolled, a one-trip fori_loop is
        # still a `while`.
        if k == 1 and jax.default_backend() == "cpu":
            x_adv = body(0, x_adv)
        else:
            x_adv = jax.lax.fori_loop(0, k, body, x_adv,
                                      unroll=jax.default_backend() == "cpu")
        (loss, ntv), grads = jax.value_and_grad(
            lambda w: loss_fn(w, ntv, x_adv, y, True), has_aux=True)(tv)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return loss, tv, ntv, ov

    return step


def hand_written_step(net, attack, batch_x, batch_y, jit):
    """A compiled PGD-k SGD step written by hand (`tf.function` with
    `jit_compile=jit` / `jax.jit`); returns `run(n_steps)`."""
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(net.trainable_variables)
    backend = keras.backend.backend()
    eps, alpha, k = attack.eps, attack.step_size, attack.steps
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=jit)
        def step(x, y):
            x_adv = x + tf.random.uniform(tf.shape(x), -eps, eps)
            for _ in range(k):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(x_adv)
                    loss = LOSS(y, net(x_adv, training=False))
                g = tape.gradient(loss, x_adv)
                x_adv = tf.clip_by_value(
                    tf.clip_by_value(x_adv + alpha * tf.sign(g), x - eps, x + eps), 0, 1)
            with tf.GradientTape() as tape:
                loss = LOSS(y, net(x_adv, training=True)) + tf.add_n(net.losses or [0.0])
            grads = tape.gradient(loss, net.trainable_variables)
            optimizer.apply_gradients(zip(grads, net.trainable_variables))
            return loss

        def run(n):
            for _ in range(n):
                loss = step(batch_x, batch_y)
            return float(loss)

        return run

    import jax
    import jax.numpy as jnp

    step = hand_jax_step(net, optimizer, attack)
    state = [
        [v.value for v in net.trainable_variables],
        [v.value for v in net.non_trainable_variables],
        [v.value for v in optimizer.variables],
    ]
    key = jax.random.PRNGKey(0)
    xb, yb = jnp.asarray(batch_x), jnp.asarray(batch_y)

    def run(n):
        nonlocal key
        tv, ntv, ov = state
        for _ in range(n):
            key, sub = jax.random.split(key)
            loss, tv, ntv, ov = step(tv, ntv, ov, xb, yb, sub)
        state[:] = [tv, ntv, ov]
        return float(loss)

    return run


def time_hand(net, attack, x, y, batch, repeats, jit):
    run = hand_written_step(net, attack, x[:batch], y[:batch], jit)
    steps = len(x) // batch
    run(steps)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def compiled(model, jit):
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), LOSS, jit_compile=jit)
    return model


def bench_model(name, builder, input_shape, batch, steps, ks, jits, repeats, awp_k):
    x, y = make_data(input_shape, batch, steps)
    rows = []
    eps = 0.1 if input_shape[0] == 8 else 8 / 255
    for jit in jits:
        clean = time_fit(compiled(CleanStep(builder(), attack=robustlab.PGD(eps, steps=1)),
                                  jit), x, y, batch, repeats)
        rows.append((name, jit, "clean", clean, 1.0, None))
        for k in ks:
            attack = robustlab.PGD(eps=eps, steps=k)
            pgd = time_fit(
                compiled(robustlab.AdversarialModel(builder(), attack=attack), jit),
                x, y, batch, repeats)
            rows.append((name, jit, f"pgd-{k}", pgd, pgd / clean, k + 1))
            if k in awp_k:
                awp = time_fit(compiled(robustlab.AdversarialModel(
                    builder(), attack=attack, awp=robustlab.AWP(0.01)), jit),
                    x, y, batch, repeats)
                rows.append((name, jit, f"pgd-{k}+awp", awp, awp / pgd,
                             (k + 2) / (k + 1)))
            if k in awp_k:
                net = builder()
                hand = time_hand(net, attack, x, y, batch, repeats, jit)
                rows.append((name, jit, hand_row_name(k, net), hand, pgd / hand, None))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", choices=["small_cnn", "resnet", "both"],
                        default="both")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    backend = keras.backend.backend()
    # jit_compile=False on JAX runs op by op (no jax.jit): not a mode to train in.
    jits = (False, True) if backend == "tensorflow" else (True,)
    print(f"backend={backend} keras={keras.__version__}, median of {repeats} "
          f"repeats after warm-up, seconds per training step")
    rows = []
    if args.model in ("small_cnn", "both"):
        rows += bench_model(
            "small_cnn b64", lambda: robustlab.models.small_cnn(seed=0), (8, 8, 1),
            batch=64, steps=16, ks=(1, 5, 10), jits=jits, repeats=repeats,
            awp_k=(1, 5, 10))
    if args.model in ("resnet", "both") and not args.quick:
        rows += bench_model(
            "preact_resnet18 w8 b128",
            lambda: robustlab.models.preact_resnet18(width=8, seed=0), (32, 32, 3),
            batch=128, steps=3, ks=(1, 5, 10), jits=jits, repeats=3,
            awp_k=(10,))
    print(f"{'model':26s} {'jit':5s} {'step':30s} {'s/step':>9s} {'ratio':>7s} "
          f"{'limit':>6s}  ratio is: clean->1; pgd-k over clean (both in robustlab's "
          "loop); awp over pgd-k; hand: fit pgd-k over hand-written")
    for name, jit, step, seconds, ratio, limit in rows:
        limit_text = "" if limit is None else f"{limit:6.2f}"
        print(f"{name:26s} {str(jit):5s} {step:30s} {seconds:9.5f} {ratio:7.2f} "
              f"{limit_text:>6s}")


if __name__ == "__main__":
    main()
