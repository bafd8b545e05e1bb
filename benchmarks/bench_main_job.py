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
  NumPy batches in Keras + TensorFlow;
- `benchmarks/main_job_by_hand.py --instruments`: the same loop with the
  main job's measurements written by hand (the curvature every 5 epochs,
  the weight cloud kept inside the compiled step, the noise along the
  eigenvector, the prediction and the bound), the like-for-like baseline of
  the main job as the README gives it.

Prints each one's median wall time (whole process: imports, tracing,
training, outputs) and peak resident memory (the operating system's
accounting of each finished child), and the ratios to the plain
hand-written loop, and checks each robustlab job against the hand-written
loop doing the same work: at most 1.15x; peak memory at most 1.5 GiB.

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
INSTRUMENTED = "robustlab train (instruments every 5 epochs)"
PLAIN = "robustlab train --probe-every 0"
HAND = "hand-written Keras-TF loop"
HAND_INSTRUMENTED = "hand-written loop with the instruments"


def commands(epochs, out):
    train = [sys.executable, "-m", "robustlab.cli", "train", "--experiment", "quick",
             "--epochs", str(epochs), "--out", out, "--quiet"]
    by_hand = [sys.executable, os.path.join(HERE, "main_job_by_hand.py"),
               "--epochs", str(epochs), "--out", os.path.join(out, "by_hand.json")]
    return {
        INSTRUMENTED: train,
        PLAIN: train + ["--probe-every", "0"],
        HAND: by_hand,
        HAND_INSTRUMENTED: by_hand + ["--instruments"],
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
    median = {name: statistics.median(w) for name, w in walls.items()}
    baseline = median[HAND]
    print(f"quick experiment, {args.epochs} epochs, TensorFlow, {os.cpu_count()} cores, "
          f"median of {args.repeats} alternating runs")
    print(f"{'job':48s} {'wall s':>8s} {'ratio':>6s} {'peak GiB':>9s}  runs (s)")
    for name in jobs:
        runs = " ".join(f"{w:.1f}" for w in walls[name])
        print(f"{name:48s} {median[name]:8.1f} {median[name] / baseline:6.2f} "
              f"{max(peaks[name]):9.2f}  {runs}")
    for robustlab_job, hand_job, what in (
            (PLAIN, HAND, "without instruments"),
            (INSTRUMENTED, HAND_INSTRUMENTED, "with instruments (the main job)")):
        ratio = median[robustlab_job] / median[hand_job]
        paired = [a / b for a, b in zip(walls[robustlab_job], walls[hand_job])]
        print(f"target: robustlab {what} <= {TARGET_RATIO}x the hand-written loop doing "
              f"the same: {'met' if ratio <= TARGET_RATIO else 'NOT met'} ({ratio:.2f}; "
              f"run by run {' '.join(f'{r:.2f}' for r in paired)})")
    ratio = median[INSTRUMENTED] / baseline
    print(f"the main job against the loop without instruments: {ratio:.2f} "
          f"({'met' if ratio <= TARGET_RATIO else 'NOT met'})")
    peak = max(max(p) for p in peaks.values())
    print(f"peak memory <= {LIMIT_GIB} GiB: {'met' if peak <= LIMIT_GIB else 'NOT met'} "
          f"({peak:.2f})")


if __name__ == "__main__":
    main()
