#!/usr/bin/env bash
# GPU benchmark in one call (issue 14 item 9): installs onnxruntime-gpu (+ TensorRT's pip libraries),
# then measures D3-Net, d3net-lite and dfdnet at 645x432 in torch CUDA, onnxruntime CUDA EP and
# TensorRT EP fp16 (FPS, median latency, MC-dropout / moments vs one pass) -> JSON.
# Usage: scripts/gpu_bench.sh [JSON]      (default $OUT/gpu_bench.json, else out/gpu_bench.json)
# Env: PYTHON (default python3), TRT_PIP (default tensorrt-cu12; empty = no TensorRT install),
#      extra arguments for the module in BENCH_ARGS (e.g. "--repeats 50").
set -euo pipefail
cd "$(dirname "$0")/.."
JSON=${1:-${OUT:-out}/gpu_bench.json}
PY=${PYTHON:-python3}
TRT_PIP=${TRT_PIP-tensorrt-cu12}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# onnxruntime and onnxruntime-gpu share the module name: the CPU wheel must go first
$PY -m pip uninstall -y -q onnxruntime >/dev/null 2>&1 || true
$PY -m pip install -q onnxruntime-gpu
if [ -n "$TRT_PIP" ]; then
    $PY -m pip install -q "$TRT_PIP" || echo "gpu_bench: $TRT_PIP not installed; TensorRT EP will be skipped" >&2
fi
# the TensorRT EP loads libnvinfer at session time: put the pip wheel's libraries on the path
TRT_LIBS=$($PY -c "import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))" 2>/dev/null || true)
if [ -n "$TRT_LIBS" ]; then
    export LD_LIBRARY_PATH="$TRT_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# shellcheck disable=SC2086
exec $PY -m rig.bench.gpu --json "$JSON" ${BENCH_ARGS:-}
