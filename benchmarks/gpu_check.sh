#!/usr/bin/env bash
# The CUDA path in one command: the `cuda` tests, then the paper's throughput table (benchmarks/gpu_throughput.py).
#
#   bash benchmarks/gpu_check.sh             # on a machine with a GPU and a CUDA build of torch
#   bash benchmarks/gpu_check.sh --dry-run   # the same code paths on the CPU, tiny sizes (minutes on 2 cores)
#   bash benchmarks/gpu_check.sh --wheels    # on a networked machine: fetch the wheels a bare GPU machine lacks
#
# Set-up takes seconds: sta-prune is pure Python and runs from the working tree (PYTHONPATH), on the torch the GPU
# machine already has (a CPU wheel is not what a GPU needs). What that machine lacks (PyAV for decoding; a
# transformers of the tested release) is installed from wheels in .whl/ when they are there (`--wheels` fetches
# them for CPython 3.12 on x86-64 Linux, the device machine's Python). Output goes to stdout and, when $OUT is
# set, to $OUT/gpu_check.log and $OUT/throughput.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODE=${1:-gpu}

if [[ "$MODE" == "--wheels" ]]; then
    mkdir -p .whl
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl av "transformers==5.24.*"
    ls -l .whl
    exit 0
fi

LOG=${OUT:-/tmp}/gpu_check.log
exec > >(tee "$LOG") 2>&1
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sta-site .whl/*.whl
    export PYTHONPATH=/tmp/sta-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$PY - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: "
      + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"))
EOF
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

if [[ "$MODE" == "--dry-run" ]]; then
    export STA_TEST_DEVICE=cpu
    $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
    $PY benchmarks/gpu_throughput.py --dry-run
else
    export STA_TEST_DEVICE=cuda
    $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
    $PY benchmarks/gpu_throughput.py --json "${OUT:-/tmp}/throughput.json"
fi
