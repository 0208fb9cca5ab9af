#!/usr/bin/env bash
# One command on a machine with CUDA: checks the CUDA path of training and scoring
# and measures paper-scale training (ESAD with/without checkpointing, RIAD) and scoring.
#
#   benchmarks/gpu_check.sh [OUT_DIR] [extra gpu_check.py options]      (default OUT_DIR: gpu_check)
#
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md.  Python: $PYTHON, else the project's
# .venv, else python3.  Stops after $GPU_CHECK_TIMEOUT seconds (default 290).  Without CUDA it
# exits non-zero with a one-line message.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-gpu_check}"
shift || true
if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=python3
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check: $PY cannot import torch; set PYTHON=/path/to/python of an environment with torch" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec timeout "${GPU_CHECK_TIMEOUT:-290}" "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
