"""Cost of a Hessian-vector product relative to a gradient, side by side.

On the small CNN of the digits setting (272,586 parameters) and one batch of
256 8x8x1 inputs, in one process and after warm-up, this times (median of
repeats, the two timed alternately) the compiled gradient of the mean loss
and the compiled Hessian-vector product of the same loss on the same batch,
both through `robustlab.curvature.HessianOperator` (same batching and
conversion overhead), in two ways:

- at new weights: before each call (gradient and product alike) the
  weights are assigned again, the same numbers in new arrays, as after a
  training step. Every product then runs its forward and backward pass: the
  full cost of a product, the same quantity on both backends (target:
  HVP / gradient <= 2.5 on CPU);
- weights unchanged since the last product: on JAX the product keeps
  `jax.linearize` of the gradient while the weights and the batch stay the
  same (`robustlab/backend/jax/curvature.py`), so these products run the
  tangent pass only, the forward and backward pass being paid once; this
  is what all products of a power iteration but its first cost. TensorFlow
  keeps nothing between products: there the two ways time the same work.

Then one power iteration of 20 Hessian-vector products
(`top_hessian_eigenvalue`, tolerance small enough that it stops at its cap;
a run stopped there takes one product more than its `iterations`, so it is
asked for 19), and the row names the products it made. It prints a table;
it asserts nothing.

    KERAS_BACKEND=tensorflow python benchmarks/bench_hvp.py
    KERAS_BACKEND=jax python benchmarks/bench_hvp.py

`--repeats 6 --warmup 2` for a smoke run.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from robustlab import curvature  # noqa: E402


def small_cnn():
    try:
        from robustlab.models import small_cnn as library_small_cnn
    except ImportError:  # models.py not there: the same architecture, locally
        layers = keras.layers
        return keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(10),
        ])
    return library_small_cnn(input_shape=(8, 8, 1), num_classes=10, seed=0)


def interleaved_median_seconds(first, second, repeats, warmup, setup=None):
    """Median times of `first` and `second` and the median of their per-repeat
    ratio second / first, timed alternately so that load from other
    processes hits both alike. `setup`, when given, runs before each call,
    outside the clock."""
    for _ in range(warmup):
        for function in (first, second):
            if setup is not None:
                setup()
            function()
    times_first, times_second = [], []
    for _ in range(repeats):
        for function, times in ((first, times_first), (second, times_second)):
            if setup is not None:
                setup()
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
    ratios = [b / a for a, b in zip(times_first, times_second)]
    return (statistics.median(times_first), statistics.median(times_second),
            statistics.median(ratios))


def median_seconds(function, repeats, warmup):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def new_weight_arrays(model):
    """Assign every trainable variable a copy of its value: the same numbers
    in new arrays, as a training step leaves new arrays. robustlab's JAX
    product keeps its linearization only while the weights' arrays are the
    ones it was computed at."""
    for variable in model.trainable_variables:
        variable.assign(keras.ops.copy(variable.value))
    for variable in model.trainable_variables:
        # JAX assigns asynchronously: the copy must be done before a clock starts.
        getattr(variable.value, "block_until_ready", lambda: None)()


def power_iteration_of(model, x, y, loss, products):
    """`top_hessian_eigenvalue` asked for `products` Hessian-vector products:
    with a tolerance it never meets, it stops at its cap of `iterations` and
    takes one product more there (robustlab/spectral.py)."""
    return curvature.top_hessian_eigenvalue(
        model, x, y, loss=loss, iterations=products - 1, tol=1e-12)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--products", type=int, default=20,
                        help="Hessian-vector products of the timed power iteration")
    args = parser.parse_args()
    if args.products < 2:
        parser.error("--products must be at least 2 (a power iteration capped at 1 "
                     f"step takes 2 products). Received: --products {args.products}")

    model = small_cnn()
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    operator = curvature.HessianOperator(model, x, y, loss=loss)
    v = rng.standard_normal(operator.dim)

    # New weights before each timed call (outside the clock): the product
    # pays its linearization at the new point, as after a training step.
    gradient, hvp, ratio = interleaved_median_seconds(
        operator.gradient, lambda: operator.matvec(v), args.repeats, args.warmup,
        setup=lambda: new_weight_arrays(model))
    _, hvp_kept, ratio_kept = interleaved_median_seconds(
        operator.gradient, lambda: operator.matvec(v), args.repeats, args.warmup)

    def power_iteration():
        return power_iteration_of(model, x, y, loss, args.products)

    power = median_seconds(power_iteration, max(3, args.repeats // 6), 1)
    used = power_iteration().iterations  # products: robustlab counts the extra one

    rows = [
        ("backend", keras.backend.backend()),
        ("cpu cores", str(os.cpu_count())),
        ("parameters", f"{operator.dim:,}"),
        ("batch", str(args.batch)),
        ("gradient at new weights (ms)", f"{gradient * 1e3:.2f}"),
        ("HVP at new weights (ms)", f"{hvp * 1e3:.2f}"),
        ("HVP / gradient, at new weights",
         f"{ratio:.2f}  (median of paired ratios; target <= 2.5)"),
        ("HVP, weights unchanged (ms)", f"{hvp_kept * 1e3:.2f}  (JAX: linearization kept, "
         "tangent pass only; TensorFlow: the same work as at new weights)"),
        ("HVP / gradient, weights unchanged", f"{ratio_kept:.2f}"),
        (f"power iteration, {used} products (s)", f"{power:.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
