#!/bin/bash
# Multi-node tlab on Slurm: one `accelerate launch` per node, which starts one process per GPU.
#
#   sbatch scripts/slurm_tlab.sh                                   # the defaults below: 2 nodes x 8 GPUs
#   sbatch --nodes 4 --export ALL,GPUS_PER_NODE=8,TLAB_ARGS="--objective clm --preset gpt2-base --train-file /shared/corpus --block-size 1024 --batch-size 8 --max-steps 20000" scripts/slurm_tlab.sh
#   sbatch --export ALL,TLAB_COMMAND=finetune,TLAB_ARGS="--task mnli --model roberta-large --data-dir /shared/glue" scripts/slurm_tlab.sh
#
# Takes as long as the training you ask for; the preprocessing step takes minutes per GB of text on one node.
# Set GPUS_PER_NODE to match --gpus-per-node when you override the node shape on the sbatch command line.
#
# Before you submit:
#  * The repository, the virtual environment, OUTPUT_DIR and TLAB_CACHE must be on a filesystem every node
#    mounts (rank 0 writes the run directory; every rank reads the tokenized data from the cache).
#  * Activate the environment in the job (VENV below) or in your shell before sbatch (--export ALL).
#  * Offline clusters: HF_HUB_OFFLINE=1 and local paths for --model / --tokenizer.
# What happens:
#  1. `tlab ... --preprocess-only` runs once, on the first node, before any rank starts: it trains the tokenizer
#     (pretraining from scratch) and tokenizes and packs the corpus into TLAB_CACHE. Tokenizing inside the
#     distributed launch would keep all other ranks waiting in a collective until it times out.
#  2. `srun` starts one task per node (--ntasks-per-node=1); each runs `accelerate launch` with its own
#     --machine_rank ($SLURM_NODEID) and the first node as --main_process_ip.
# Sharded training: LAUNCH_ARGS="--config_file configs/accelerate/fsdp.yaml" (or deepspeed_zero2.yaml).
# TLAB_ARGS is split on spaces: a path with spaces needs a --config YAML instead.
# To continue a run after a time limit or failure, submit again with TLAB_ARGS ending in "--resume".

#SBATCH --job-name=tlab
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out

set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TLAB_COMMAND=${TLAB_COMMAND:-pretrain}     # pretrain | finetune
TLAB_ARGS=${TLAB_ARGS:-"--objective mlm --preset bert-base --block-size 128 --batch-size 64 --max-steps 10000 --precision bf16"}
OUTPUT_DIR=${OUTPUT_DIR:-runs/${SLURM_JOB_NAME:-tlab}-${SLURM_JOB_ID:-local}}
# DDP by default; configs/accelerate/fsdp.yaml or deepspeed_zero2.yaml for sharded training. The node count,
# process count, machine rank and address given below win over the file's values.
LAUNCH_ARGS=${LAUNCH_ARGS:-"--config_file configs/accelerate/multi_node.yaml"}
VENV=${VENV:-.venv}
export TLAB_CACHE=${TLAB_CACHE:-$PWD/.tlab-cache}
export HF_DATASETS_CACHE=${HF_DATASETS_CACHE:-$TLAB_CACHE/datasets}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export TOKENIZERS_PARALLELISM=false

if [[ -f $VENV/bin/activate ]]; then
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
fi

NNODES=${SLURM_NNODES:-1}
MAIN_HOST=$(scontrol show hostnames "${SLURM_JOB_NODELIST:?run this under sbatch (or salloc)}" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
NUM_PROCESSES=$((NNODES * GPUS_PER_NODE))
echo "tlab on $NNODES node(s) x $GPUS_PER_NODE GPU(s) = $NUM_PROCESSES processes; rank 0 on $MAIN_HOST:$MAIN_PORT"
echo "output: $OUTPUT_DIR  cache: $TLAB_CACHE"

# 1. Tokenizer, tokenized and packed data into the shared cache, once, on one node (fine-tuning: the tokenized
#    dataset; `tlab finetune` has no --preprocess-only yet, so its ranks tokenize in main-process-first order).
# shellcheck disable=SC2086
if [[ $TLAB_COMMAND == pretrain ]]; then
  srun --nodes=1 --ntasks=1 python -m tlab pretrain $TLAB_ARGS --preprocess-only
fi

# 2. One launcher per node; each starts GPUS_PER_NODE ranks. Single quotes: the variables expand on each node
#    (srun passes this environment on), so SLURM_NODEID is that node's own index, 0..NNODES-1.
export NNODES NUM_PROCESSES MAIN_HOST MAIN_PORT TLAB_COMMAND TLAB_ARGS OUTPUT_DIR LAUNCH_ARGS
# shellcheck disable=SC2016
srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c '
  exec accelerate launch $LAUNCH_ARGS \
    --num_machines "$NNODES" \
    --num_processes "$NUM_PROCESSES" \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$MAIN_HOST" \
    --main_process_port "$MAIN_PORT" \
    -m tlab "$TLAB_COMMAND" $TLAB_ARGS --output-dir "$OUTPUT_DIR"
'
