"""Run every benchmark on both backends, one process each, and print their
tables (the figures in benchmarks/README.md come from this)."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ["bench_training_step.py", "bench_awp_paired.py", "bench_hvp.py",
           "bench_probes.py", "bench_main_job.py"]


def main():
    for backend in ("tensorflow", "jax"):
        for script in SCRIPTS:
            path = os.path.join(HERE, script)
            if not os.path.exists(path):
                continue
            print(f"\n== {script} on {backend}", flush=True)
            subprocess.run([sys.executable, path], check=False,
                           env=dict(os.environ, KERAS_BACKEND=backend,
                                    TF_CPP_MIN_LOG_LEVEL="3"))


if __name__ == "__main__":
    main()
