#!/usr/bin/env bash
# GPU check of the paths CI (CPU only) cannot reach, in one pass of a few minutes on one GPU:
#   bash scripts/gpu_check.sh [OUT_DIR]
# 1. `--precision auto` picks bf16 (or fp16 on GPUs without bf16) and says so; fp16 with loss scaling trains.
# 2. A GLUE fine-tune (MRPC sample in tests/data) from a fresh pretrain run, in bf16, then `tlab eval` on it.
# 3. scripts/bench_scaling.py --skip-cpu: fp32 vs bf16 tokens/s and MFU for BERT-base MLM (seq 128) and GPT-2 small
#    CLM (block 1024), written to OUT_DIR/bench_scaling.md. Arguments after OUT_DIR go to bench_scaling.py, e.g.
#    `bash scripts/gpu_check.sh out --compile-modes reduce-overhead` adds bf16 runs through torch.compile with CUDA
#    graphs (a few minutes more: compiling the two models).
set -euo pipefail
OUT=${1:-gpu_check_out}
shift || true
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TLAB_CACHE=${TLAB_CACHE:-$OUT/cache}
runs=$(mktemp -d)
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

echo "== precision auto / fp16"
python3 -m tlab pretrain --preset tiny --max-steps 20 --eval-every 20 --precision auto -o "$runs/auto" 2>&1 | grep -iE "precision|perplexity|model"
python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print('auto ->', m['precision'], 'perplexity', m['final'].get('perplexity'))" "$runs/auto/metrics.json"
python3 -m tlab pretrain --preset tiny --max-steps 20 --eval-every 20 --precision fp16 -o "$runs/fp16" 2>&1 | grep -iE "precision|perplexity|model"

echo "== finetune bf16 + eval"
python3 -m tlab finetune --task mrpc --model "$runs/auto" --data-dir tests/data/glue/MRPC --epochs 2 --batch-size 8 \
  --precision bf16 -o "$runs/mrpc" 2>&1 | tail -5
python3 -m tlab eval --task mrpc --model "$runs/mrpc" --data-dir tests/data/glue/MRPC --output "$OUT/eval_mrpc.json" \
  2>&1 | tail -8 || echo "eval exit $?"

echo "== bench_scaling"
python3 scripts/bench_scaling.py --skip-cpu --out "$OUT/bench_scaling.md" "$@"
