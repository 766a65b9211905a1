"""How much does SST-2's carved validation overlap training? SST-2's train.tsv holds ~67k phrases cut from ~7k
sentences, so a phrase held out by text can still be a sub-phrase of a trained one. Scores a fine-tuned model on
the whole held-out split and on its strict part: rows that are not contained in any training row.

    python scripts/sst2_heldout_overlap.py RUN_DIR SST2_TRAIN_TSV [--seed 42] [--fraction 0.05]
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tlab.tasks.glue import held_out_by_sentence


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("train_tsv")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fraction", type=float, default=0.05)
    opts = parser.parse_args()
    lines = open(opts.train_tsv, encoding="utf-8").read().splitlines()[1:]
    rows = [(line.rsplit("\t", 1)[0], int(line.rsplit("\t", 1)[1])) for line in lines]
    import datasets

    ds = datasets.Dataset.from_dict({"text_a": [t for t, _ in rows], "label": [y for _, y in rows]})
    held, rest = held_out_by_sentence(ds, opts.fraction, opts.seed)
    held = held["heldout"]
    trained = "\n".join(t.strip().lower() for t in rest["text_a"])
    strict = [i for i, t in enumerate(held["text_a"]) if t.strip().lower() not in trained]
    tok = AutoTokenizer.from_pretrained(f"{opts.run}/model")
    model = AutoModelForSequenceClassification.from_pretrained(f"{opts.run}/model", use_safetensors=True).eval()
    preds = []
    with torch.inference_mode():
        for start in range(0, len(held), 128):
            batch = tok(held["text_a"][start:start + 128], padding=True, truncation=True, max_length=128, return_tensors="pt")
            preds += model(**batch).logits.argmax(-1).tolist()
    labels = held["label"]
    acc = lambda idx: sum(preds[i] == labels[i] for i in idx) / max(1, len(idx))  # noqa: E731
    words = [len(t.split()) for t in held["text_a"]]
    long_strict = [i for i in strict if words[i] >= 10]
    print(f"held-out rows: {len(held)}, accuracy {acc(range(len(held))):.4f}")
    print(f"not contained in any training row: {len(strict)}, accuracy {acc(strict):.4f}")
    print(f"... and 10 words or more: {len(long_strict)}, accuracy {acc(long_strict):.4f}")


if __name__ == "__main__":
    main()
