#!/usr/bin/env bash
# CaffeNet-227 training images/s on this machine's GPU and its data path, in at most 8 minutes:
# fp32 eager vs bf16 + channels-last + torch.compile on tensors already on the GPU; JPEG
# decoding on the CPU cores vs the uint8 store read from the disk with crops and mirroring on
# the GPU; cohorts of k = 1, 4, 8, 16 networks on the store (aggregate images/s, and k = 4
# against one by one). Ends with one `summary:` line (also in gpu_check.log) and writes the
# rates `transferbench plan --measured gpu_rates.json` reads.
#
#   bash benchmarks/gpu_check.sh                 # from anywhere; uses .venv/ when it exists
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh --batch 128
#
# Needs transferbench installed (pip install -e .) with a CUDA build of torch. Written without
# a GPU at hand: every part reports its own failure and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c "import torch, transferbench, transferbench_plugins" 2>/dev/null; then
    echo "transferbench is not importable by $PY: pip install -e . first (or set PYTHON=...)" >&2
    exit 2
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "torch sees no CUDA device (a CPU dry run: $PY benchmarks/gpu_check.py --device cpu --tiny)" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 480 "$PY" benchmarks/gpu_check.py "$@" 2>&1 | tee gpu_check.log
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "gpu_check: stopped after 8 minutes" >&2
exit "$status"
