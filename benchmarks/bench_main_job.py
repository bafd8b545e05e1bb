"""Wall time and peak memory of the README's main job, against the same
experiment written by hand.

Runs, each in a child process and alternating run by run (so that the load
of a shared machine falls on all of them alike):

- `robustlab train --experiment quick`: the main job as the README gives it,
  with the instruments (Hessian probe every 5 epochs, posterior tracker,
  PAC-Bayes bound);
- the same with `--probe-every 0`: adversarial training and the per-epoch
  robust evaluations only, the work the hand-written loop does;
- `benchmarks/main_job_by_hand.py`: that loop, `tf.function` steps over
  NumPy batches in Keras + TensorFlow.

Prints each one's median wall time (whole process: imports, tracing,
training, outputs) and peak resident memory (the operating system's
accounting of each finished child), and the ratios to the hand-written loop.
Targets: without instruments at most 1.15x the hand-written loop; peak memory
at most 1.5 GiB.

Run: `python benchmarks/bench_main_job.py [--epochs N] [--repeats R]`
(TensorFlow: the hand-written baseline is a TensorFlow loop).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

LIMIT_GIB = 1.5
TARGET_RATIO = 1.15
HERE = os.path.dirname(os.path.abspath(__file__))


def commands(epochs, out):
    train = [sys.executable, "-m", "robustlab.cli", "train", "--experiment", "quick",
             "--epochs", str(epochs), "--out", out, "--quiet"]
    return {
        "robustlab train (instruments every 5 epochs)": train,
        "robustlab train --probe-every 0": train + ["--probe-every", "0"],
        "hand-written Keras-TF loop": [
            sys.executable, os.path.join(HERE, "main_job_by_hand.py"),
            "--epochs", str(epochs), "--out", os.path.join(out, "by_hand.json")],
    }


def run_child(command):
    """Wall seconds and peak resident GiB of one child process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed with status {status}")
    return wall, usage.ru_maxrss / 2**20


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    walls, peaks = {}, {}
    with tempfile.TemporaryDirectory() as out:
        jobs = commands(args.epochs, out)
        for _ in range(args.repeats):
            for name, command in jobs.items():
                wall, peak = run_child(command)
                walls.setdefault(name, []).append(wall)
                peaks.setdefault(name, []).append(peak)
    baseline = statistics.median(walls["hand-written Keras-TF loop"])
    print(f"quick experiment, {args.epochs} epochs, TensorFlow, {os.cpu_count()} cores, "
          f"median of {args.repeats} alternating runs")
    print(f"{'job':48s} {'wall s':>8s} {'ratio':>6s} {'peak GiB':>9s}  runs (s)")
    for name in jobs:
        wall = statistics.median(walls[name])
        runs = " ".join(f"{w:.1f}" for w in walls[name])
        print(f"{name:48s} {wall:8.1f} {wall / baseline:6.2f} {max(peaks[name]):9.2f}  {runs}")
    without = statistics.median(walls["robustlab train --probe-every 0"]) / baseline
    print(f"target: robustlab without instruments <= {TARGET_RATIO}x the hand-written "
          f"loop: {'met' if without <= TARGET_RATIO else 'NOT met'} ({without:.2f}); "
          f"peak memory <= {LIMIT_GIB} GiB: "
          f"{'met' if max(max(p) for p in peaks.values()) <= LIMIT_GIB else 'NOT met'}")


if __name__ == "__main__":
    main()
