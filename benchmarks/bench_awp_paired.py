"""AWP over PGD-10 on the compute-bound model, paired run by run.

`bench_training_step.py` times AWP and PGD in separate blocks; on a shared
machine load drifts between blocks. Here each repeat times one PGD-10 epoch
and one PGD-10 + AWP epoch back to back and the median of the paired ratios
is reported (limit (k + 2) / (k + 1) = 1.09, target 1.15 x that = 1.25).

Run: `KERAS_BACKEND=tensorflow python benchmarks/bench_awp_paired.py [--jit]`,
`KERAS_BACKEND=jax python benchmarks/bench_awp_paired.py --jit` (on JAX,
Keras's `jit_compile=False` runs op by op, not a mode anyone trains in: the
script refuses it). `--repeats N`: the number of pairs (7).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402

import bench_training_step as bench  # noqa: E402
import robustlab  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if keras.backend.backend() == "jax" and not args.jit:
        sys.exit("bench_awp_paired.py on JAX needs --jit: Keras's jit_compile=False "
                 "runs op by op there (no jax.jit), not a mode anyone trains in")
    x, y = bench.make_data((32, 32, 3), 128, 3)
    attack = robustlab.PGD(eps=8 / 255, steps=10)
    models = [
        bench.compiled(robustlab.AdversarialModel(
            robustlab.models.preact_resnet18(width=8, seed=0), attack=attack, awp=awp),
            args.jit)
        for awp in (None, robustlab.AWP(0.01))
    ]
    for model in models:
        model.fit(x, y, batch_size=128, epochs=1, verbose=0, shuffle=False)
    ratios = []
    for _ in range(args.repeats):
        times = []
        for model in models:
            start = time.perf_counter()
            model.fit(x, y, batch_size=128, epochs=1, verbose=0, shuffle=False)
            times.append(time.perf_counter() - start)
        ratios.append(times[1] / times[0])
    print(f"backend={keras.backend.backend()} jit={args.jit} preact_resnet18 w8 b128: "
          f"AWP / PGD-10 paired ratios {[round(r, 2) for r in ratios]}, median "
          f"{statistics.median(ratios):.2f} (limit 1.09, target 1.25)")


if __name__ == "__main__":
    main()
