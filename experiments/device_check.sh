#!/usr/bin/env bash
# One-shot GPU check on a machine whose image has torch but not pyro-ppl: the wheels travel in
# .whl/ (pyro-ppl, pyro-api). Writes logs and results under $OUT (default ./device_out).
set -uo pipefail
OUT=${OUT:-device_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="/tmp/site:$PWD"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
{
    nvidia-smi -L
    python3 -c "import torch, pyro; print('torch', torch.__version__, 'pyro', pyro.__version__)"
    python3 experiments/train_svi.py --device cuda --out "$OUT/cuda_run" --no-progress
} 2>&1 | tee "$OUT/train_cuda.log"
if [ -f experiments/bench_hard_routing.py ]; then
    timeout 300 python3 experiments/bench_hard_routing.py --device cuda \
        --json "$OUT/bench_hard_routing_cuda.json" --plot "$OUT/bench_hard_routing_cuda.png"
fi
