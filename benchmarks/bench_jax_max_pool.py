"""JAX on the CPU: max pooling differentiated with one select per window
(`robustlab.backend.jax.autodiff.with_cheap_max_pool_derivatives`) against
JAX's own rule, side by side in one process.

Two copies of the quick setting's network, built with the same seed: one as
robustlab trains it, one with the rewrite replaced by the function itself
(JAX's `select_and_gather_add` / `select_and_scatter_add`), which is what
robustlab ran before. Interleaved, after one warm-up each:

- a PGD-3 training epoch (16 steps of 64) as a one-epoch `fit` call;
- `evaluate` of the 797 test digits under PGD-10 in batches of 256.

It prints the medians, the ratios, and whether the two copies' weights
are still the same (the rewrite selects the same elements).

Run: `KERAS_BACKEND=jax python benchmarks/bench_jax_max_pool.py [--repeats N]`
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from robustlab import experiments  # noqa: E402


def _build(jax_rule):
    from robustlab.backend.jax import autodiff, directional, trainer

    modules = (autodiff, directional, trainer)
    saved = [m.with_cheap_max_pool_derivatives for m in modules]
    if jax_rule:
        for module in modules:
            module.with_cheap_max_pool_derivatives = lambda fn: fn
    try:
        setting = experiments.get("quick").replace(train_steps=3)
        dataset, model = experiments.build(setting)
        x, y = dataset.x_train, dataset.y_train
        # Compile here, while the patch is in force: the traced programs keep it.
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
        model.evaluate(dataset.x_test, dataset.y_test, batch_size=256, verbose=0)
    finally:
        for module, value in zip(modules, saved):
            module.with_cheap_max_pool_derivatives = value
    return dataset, model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    if keras.backend.backend() != "jax":
        raise SystemExit("This benchmark is of JAX programs: run it with KERAS_BACKEND=jax.")
    import jax

    variants = {"robustlab": _build(False), "JAX's rule": _build(True)}
    times = {name: {"epoch": [], "evaluate": []} for name in variants}
    for repeat in range(1, args.repeats + 1):
        for name, (dataset, model) in variants.items():
            start = time.perf_counter()
            model.fit(dataset.x_train, dataset.y_train, batch_size=64,
                      epochs=repeat + 1, initial_epoch=repeat, verbose=0)
            times[name]["epoch"].append(time.perf_counter() - start)
            start = time.perf_counter()
            model.evaluate(dataset.x_test, dataset.y_test, batch_size=256, verbose=0)
            times[name]["evaluate"].append(time.perf_counter() - start)
    print(f"quick setting, JAX {jax.__version__} on {jax.default_backend()}, keras "
          f"{keras.__version__}; medians of {args.repeats} interleaved repeats")
    print(f"{'':12s} {'PGD-3 epoch (ms)':>18s} {'PGD-10 evaluate (ms)':>22s}")
    medians = {name: {part: 1e3 * statistics.median(values) for part, values in parts.items()}
               for name, parts in times.items()}
    for name, parts in medians.items():
        print(f"{name:12s} {parts['epoch']:18.1f} {parts['evaluate']:22.1f}")
    ours, theirs = medians["robustlab"], medians["JAX's rule"]
    print(f"{'ratio':12s} {ours['epoch'] / theirs['epoch']:18.2f} "
          f"{ours['evaluate'] / theirs['evaluate']:22.2f}")
    weights = [variants[name][1].get_weights() for name in variants]
    same = all(np.array_equal(a, b) for a, b in zip(*weights))
    print("weights after the same epochs identical:", same)


if __name__ == "__main__":
    main()
