#!/usr/bin/env bash
# The prepared profiling run of the GPU training step (benchmarks/profile_gpu_step.py),
# for a borrowed GPU machine, set up as benchmarks/run_gpu.sh says (the
# repository copied there with .whl), allowing it up to 480 s:
#
#   bash benchmarks/run_gpu_profile.sh
#
# With arguments, one run of profile_gpu_step.py with them. Without, each
# setting below runs in its own process (XLA flags are read when JAX starts),
# most important first; every result line starts with RESULT and lands in
# $OUT/profile_runs.jsonl, the traces in $OUT/trace_*.json.gz. A setting
# that fails is reported and the next one runs. PROFILE_ARGS is added to every
# run; the whole list on a CPU, tiny, as a check of the scripts (no timings):
#
#   PYTHON=python PROFILE_ARGS="--width 4 --batch 8 --steps 2 --repeats 2 \
#     --pgd-steps 2" bash benchmarks/run_gpu_profile.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 MPLBACKEND=Agg TF_CPP_MIN_LOG_LEVEL=3
OUT=${OUT:-/tmp/robustlab-gpu-profile}
mkdir -p "$OUT"
if ! "$PYTHON" -c "import keras, namex, optree" 2>/dev/null; then
  site=${TMPDIR:-/tmp}/robustlab-gpu-site
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" .whl/*.whl || exit 2
  export PYTHONPATH="$site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit \
  --format=csv 2>/dev/null
profile() { "$PYTHON" benchmarks/profile_gpu_step.py --out "$OUT" "$@" ${PROFILE_ARGS:-} 2>&1 \
  | grep -v "^WARNING\|^I0000\|^E0000" | tee -a "$OUT/profile.log"; }
if [ "$#" -gt 0 ]; then
  # One setting, from the arguments (e.g. --what fit --batch 128).
  profile "$@"
  exit
fi
profile --what hand
profile --what fit
profile --what fit --unroll-attack
profile --what fit --batch 128 --no-trace
profile --what fit --batch 128 --unroll-attack --no-trace
profile --what hand --batch 128 --no-trace
profile --what hand_fori --batch 128 --no-trace
profile --what fit --weight-decay 0 --no-trace
# Measured on an H100 on 2026-12-05 (benchmarks/README.md), kept for reruns:
if [ -n "${PROFILE_XLA_FLAGS:-}" ]; then
  XLA_FLAGS=--xla_gpu_enable_command_buffer= profile --what hand --no-trace \
    --label "hand, command buffers off"
  XLA_FLAGS=--xla_gpu_use_runtime_fusion=true profile --what hand --no-trace \
    --label "hand, cuDNN runtime fusion"
fi
grep -h "^RESULT" "$OUT/profile.log"
