"""Run every benchmark on both backends, one process each, and print their
tables (the figures in benchmarks/README.md come from this). The comparisons
with other tools run only where their packages (the `bench` extra) are
installed, and only on the backends they compare."""

import importlib.util
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ["bench_training_step.py", "bench_awp_paired.py", "bench_hvp.py",
           "bench_probes.py", "bench_main_job.py", "bench_jax_max_pool.py"]
# Scripts that measure one backend only (the main job's baseline is a
# hand-written TensorFlow loop, and the script runs its children on it; the
# max-pool rewrite is of JAX programs).
ONE_BACKEND = {"bench_main_job.py": "tensorflow", "bench_jax_max_pool.py": "jax"}
# script: (modules it imports beyond robustlab's own, backends it runs on)
PEER_SCRIPTS = {
    "bench_peers_training.py": (("torch", "torchattacks", "art"), ("tensorflow",)),
    "bench_curvature_peers.py": (("torch", "pyhessian"), ("tensorflow", "jax")),
}


def missing_modules(modules):
    return [name for name in modules if importlib.util.find_spec(name) is None]


def should_run(script, backend):
    """Whether `script` runs on `backend`; prints why a comparison is skipped."""
    if script in ONE_BACKEND:
        return backend == ONE_BACKEND[script]
    if script not in PEER_SCRIPTS:
        return True
    modules, backends = PEER_SCRIPTS[script]
    if backend not in backends:
        return False
    missing = missing_modules(modules)
    if missing:
        print(f"\n== {script} on {backend} skipped: {', '.join(missing)} not "
              "installed (pip install -e '.[bench]')", flush=True)
    return not missing


def main():
    for backend in ("tensorflow", "jax"):
        for script in SCRIPTS + list(PEER_SCRIPTS):
            path = os.path.join(HERE, script)
            if not os.path.exists(path) or not should_run(script, backend):
                continue
            print(f"\n== {script} on {backend}", flush=True)
            subprocess.run([sys.executable, path], check=False,
                           env=dict(os.environ, KERAS_BACKEND=backend,
                                    TF_CPP_MIN_LOG_LEVEL="3"))


if __name__ == "__main__":
    main()
