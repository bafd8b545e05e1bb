"""Run the CPU benchmarks, one process each, on the backends each one
compares, and print their tables.

It runs `SCRIPTS` on TensorFlow and on JAX (except those of `ONE_BACKEND`:
`bench_main_job.py` on TensorFlow only, `bench_jax_max_pool.py` on JAX
only), then the comparisons with other tools (`PEER_SCRIPTS`) where their
packages (the `bench` extra) are installed, on the backends they compare.
It does not run `bench_lessons.py` or `bench_output_widget_stall.py` (the
course's Jupyter stack), nor `bench_gpu_training.py` or
`profile_gpu_step.py` (a GPU machine: `run_gpu.sh`, `run_gpu_profile.sh`);
their tables in benchmarks/README.md come from running them on their own.
Each table there says when and where it was measured."""

import argparse
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
# Arguments a script needs on a backend: on JAX, Keras's jit_compile=False
# runs op by op (no jax.jit), not a mode anyone trains in.
ARGUMENTS = {("bench_awp_paired.py", "jax"): ["--jit"]}
# script: (modules it imports beyond robustlab's own, backends it runs on)
PEER_SCRIPTS = {
    "bench_peers_training.py": (("torch", "torchattacks", "art"), ("tensorflow",)),
    "bench_curvature_peers.py": (("torch", "pyhessian"), ("tensorflow", "jax")),
}
INSTALL = "pip install -e '.[bench]'"


def missing_modules(modules):
    return [name for name in modules if importlib.util.find_spec(name) is None]


def missing_peers_message(script, missing):
    """One line: which of a comparison's modules are missing, and how to
    install them."""
    return f"{script} needs {', '.join(missing)}, not installed ({INSTALL})"


def require_peer_modules(script):
    """Exit with one line naming the missing modules of `script` (a key of
    `PEER_SCRIPTS`) and the install command, if any is missing."""
    missing = missing_modules(PEER_SCRIPTS[script][0])
    if missing:
        sys.exit(missing_peers_message(script, missing))


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
        print(f"\n== {script} on {backend} skipped: "
              f"{missing_peers_message(script, missing)}", flush=True)
    return not missing


def main(argv=None):
    # No options: `--help` started the whole suite, minutes of it.
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    for backend in ("tensorflow", "jax"):
        for script in SCRIPTS + list(PEER_SCRIPTS):
            path = os.path.join(HERE, script)
            if not os.path.exists(path) or not should_run(script, backend):
                continue
            arguments = ARGUMENTS.get((script, backend), [])
            print(f"\n== {' '.join([script] + arguments)} on {backend}", flush=True)
            subprocess.run([sys.executable, path] + arguments, check=False,
                           env=dict(os.environ, KERAS_BACKEND=backend,
                                    TF_CPP_MIN_LOG_LEVEL="3"))


if __name__ == "__main__":
    main()
