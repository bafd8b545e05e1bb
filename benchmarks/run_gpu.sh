#!/usr/bin/env bash
# The prepared GPU run of benchmarks/bench_gpu_training.py: robustlab's PGD-10
# `fit` on Keras-JAX against a hand-written jax.jit step and PyTorch (eager
# and torch.compile), PreAct ResNet-18, batches 128 and 512.
#
# Made for a borrowed GPU machine (an H200): it receives a copy of this
# repository, has JAX with CUDA, PyTorch, numpy, matplotlib, absl-py, rich,
# h5py, ml-dtypes, packaging and typing-extensions, but no Keras, no
# TensorFlow and no network. Keras and the two packages of its own that the
# machine lacks (namex, optree) travel as wheels in the git-ignored folder
# .whl; build it once, on a machine with a network, in the repository's
# root, for that machine's CPython 3.12 on x86-64:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
#
# Carry nothing the machine already has (its numpy and jax must stay). robustlab
# itself is not installed there: it is imported from this copy (PYTHONPATH).
#
# Then copy the repository, .whl included, to the GPU machine and run this
# there, allowing it up to 600 s (the run stops itself after --deadline-s,
# 480 s by default, and prints what it measured by then):
#
#   bash benchmarks/run_gpu.sh
#
# The table, a JSON file with every repeat and the log land in $OUT when it
# is set. Arguments are passed to the benchmark (--skip-torch, --batches 512,
# --steps 20, --peak-tflops 989, ...). `bash benchmarks/run_gpu.sh --smoke`
# checks the whole thing on a CPU in a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 MPLBACKEND=Agg TF_CPP_MIN_LOG_LEVEL=3

install_keras_from_wheels() {
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "Keras is missing and $WHEELS/ holds no wheels:" \
      "build them as the header of $0 says." >&2
    exit 2
  fi
  local site=${TMPDIR:-/tmp}/robustlab-gpu-site
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" "$WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
}

if ! "$PYTHON" -c "import keras, namex, optree" 2>/dev/null; then
  install_keras_from_wheels
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

args=("$@")
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  args+=(--out "$OUT")
fi

# The clocks and the driver's view, for reading the numbers later.
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit \
  --format=csv 2>/dev/null || echo "no nvidia-smi: not a GPU machine"
"$PYTHON" -c 'import jax, keras; print("python", __import__("sys").version.split()[0],
  "keras", keras.__version__, "jax", jax.__version__, jax.devices())'

if [ -n "${OUT:-}" ]; then
  "$PYTHON" benchmarks/bench_gpu_training.py "${args[@]}" 2>&1 \
    | tee "$OUT/gpu_training.log"
else
  "$PYTHON" benchmarks/bench_gpu_training.py "${args[@]}"
fi
