#!/usr/bin/env bash
# On a GPU machine (the tests never need one): the demo audit and one harden on CPU and on CUDA with the
# speed-up, and the cost-growth table on both; `gpu_check.sh paths` instead runs every path that puts a
# network on the device (backdoors, repair, label-only, language models, poisoning, tabular adversarial
# training, DP-SGD, smoothing, federated, serve, a process pool) on CPU and CUDA side by side. Uses the machine's python3 (PY=...) with its CUDA build of
# torch; installs this checkout into it (editable, no dependencies) when mlwarden is missing there.
# Logs go to $OUT (default /tmp/gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 MLWARDEN_CACHE="${MLWARDEN_CACHE:-/tmp/mlwarden-cache}"
if ! "$PY" -c "import importlib.metadata as m; m.version('mlwarden')" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 2
fi
if [ "${1:-}" = paths ]; then
  "$PY" benchmarks/gpu_paths.py "${2:-cuda}"
else
  "$PY" benchmarks/gpu_check.py
fi
