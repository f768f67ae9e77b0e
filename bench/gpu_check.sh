#!/usr/bin/env bash
# Real-GPU check of vllm-watchdog's NVML adapter and GPU probe, in one command, on a machine with an
# NVIDIA GPU:   bench/gpu_check.sh [extra pytest args]
# Prints nvidia-smi's view, then runs tests/gpu (not collected by the normal test run).
# Needs: python with pytest, nvidia-ml-py and pydantic, run from anywhere inside the checkout.
# If pydantic/nvidia-ml-py are missing and wheels were carried in .whl/, they are installed into
# /tmp/site first. Finishes in well under 60 s on a healthy host (every step has a timeout).
set -u -o pipefail
cd "$(dirname "$0")/.."

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c 'import pynvml, pydantic, pytest' 2>/dev/null; then PY=.venv/bin/python
else PY=python3; fi

echo "== host: $(uname -srm), python: $($PY -c 'import sys; print(sys.version.split()[0])')"
echo "== nvidia-smi"
timeout 20 nvidia-smi || echo "(nvidia-smi failed, rc=$?)"
timeout 20 nvidia-smi --query-gpu=index,uuid,name,driver_version,memory.used,memory.total,temperature.gpu,utilization.gpu,ecc.errors.uncorrected.volatile.total --format=csv || true
timeout 20 nvidia-smi --query-compute-apps=pid,used_memory --format=csv || true

if ! $PY -c 'import pynvml, pydantic, pytest' 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    echo "== installing carried wheels from .whl/ into /tmp/site"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
if ! $PY -c 'import pynvml, pydantic, pytest' 2>/dev/null; then
  echo "missing python packages: need pytest, nvidia-ml-py and pydantic (pip install pytest nvidia-ml-py pydantic)" >&2
  exit 3
fi
$PY -c 'import pynvml, pydantic; from importlib.metadata import version as v; print("== nvidia-ml-py", v("nvidia-ml-py"), "pydantic", pydantic.VERSION)'

echo "== tests/gpu"
export PYTHONUNBUFFERED=1
start=$(date +%s)
timeout 120 $PY -m pytest -q tests/gpu -p no:cacheprovider -p no:randomly -rs -s "$@"
rc=$?
echo "== tests/gpu finished rc=$rc in $(( $(date +%s) - start )) s"
exit $rc
