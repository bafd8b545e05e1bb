"""Cost of a Hessian-vector product relative to a gradient, side by side.

On the small CNN of the digits setting (272,586 parameters) and one batch of
256 8x8x1 inputs, in one process and after warm-up, this times (median of
repeats, the two timed alternately) the compiled gradient of the mean loss
and the compiled Hessian-vector product of the same loss on the same batch,
both through
`robustlab.curvature.HessianOperator` (same batching and conversion
overhead), and 20 power iterations (`top_hessian_eigenvalue`, tolerance
small enough that all 20 run). It prints a table; it asserts nothing.
Target: HVP / gradient <= 2.5 on CPU.

    KERAS_BACKEND=tensorflow python benchmarks/bench_hvp.py
    KERAS_BACKEND=jax python benchmarks/bench_hvp.py
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


def interleaved_median_seconds(first, second, repeats, warmup):
    """Median times of `first` and `second` and the median of their per-repeat
    ratio second / first, timed alternately so that load from other
    processes hits both alike."""
    for _ in range(warmup):
        first()
        second()
    times_first, times_second = [], []
    for _ in range(repeats):
        for function, times in ((first, times_first), (second, times_second)):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--power-iterations", type=int, default=20)
    args = parser.parse_args()

    model = small_cnn()
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    operator = curvature.HessianOperator(model, x, y, loss=loss)
    v = rng.standard_normal(operator.dim)

    gradient, hvp, ratio = interleaved_median_seconds(
        operator.gradient, lambda: operator.matvec(v), args.repeats, args.warmup
    )

    def power_iteration():
        return curvature.top_hessian_eigenvalue(
            model, x, y, loss=loss, iterations=args.power_iterations, tol=1e-12
        )

    power = median_seconds(power_iteration, max(3, args.repeats // 6), 1)
    used = power_iteration().iterations

    rows = [
        ("backend", keras.backend.backend()),
        ("cpu cores", str(os.cpu_count())),
        ("parameters", f"{operator.dim:,}"),
        ("batch", str(args.batch)),
        ("gradient (ms)", f"{gradient * 1e3:.2f}"),
        ("HVP (ms)", f"{hvp * 1e3:.2f}"),
        ("HVP / gradient", f"{ratio:.2f}  (median of paired ratios; target <= 2.5)"),
        (f"{used} power iterations (s)", f"{power:.3f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
