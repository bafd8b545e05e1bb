"""Wall time and peak memory of the README's main job.

Runs `robustlab train --experiment quick` (100 epochs, or `--epochs N`) in a
child process and reports its wall time and peak resident memory (the
operating system's accounting of the finished child). Target: peak memory at
most 1.5 GiB.

Run: `python benchmarks/bench_main_job.py [--epochs N]` (KERAS_BACKEND picks
the backend, as always).
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

LIMIT_GIB = 1.5


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "robustlab.cli", "train", "--experiment",
                   "quick", "--epochs", str(args.epochs), "--out", out, "--quiet"]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        wall = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    print(f"backend={backend} quick experiment, {args.epochs} epochs: wall "
          f"{wall:.1f} s, peak memory {peak_gib:.2f} GiB (limit {LIMIT_GIB} GiB)")


if __name__ == "__main__":
    main()
