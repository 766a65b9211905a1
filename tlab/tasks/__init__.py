"""The task registry: one `Family` per kind of task, one `TaskInfo` per task. Adding a family = one module that
implements `contract.TaskModule` + one entry in `FAMILIES` + its tasks in `registry()`; the CLI, pipeline, model
card and report dispatch through these objects and never name a family. Only names, descriptions and cheap
tables live here, so `tlab tasks` and `--help` stay free of heavy imports (docs/adding-a-task.md)."""

from __future__ import annotations

import difflib
import importlib
from typing import Optional

from tlab.errors import TlabError
from tlab.tasks.contract import Family, Job, Prepared, PredictRequest, TaskInfo, TaskModule

__all__ = ["FAMILIES", "Family", "Job", "Prepared", "PredictRequest", "TaskInfo", "TaskModule", "check_options",
           "defaults_for", "family_of_model", "for_prediction", "get", "info", "module_of", "registry",
           "selectable_metrics", "selection"]


def _architectures(config: dict) -> list[str]:
    return config.get("architectures") or []


def _is_seq2seq(config: dict) -> bool:
    return bool(config.get("is_encoder_decoder")) or any(
        a.endswith("ForConditionalGeneration") or a.endswith("MTModel") or a == "EncoderDecoderModel"
        for a in _architectures(config))


def _is_summarizer(config: dict) -> bool:
    """A seq2seq checkpoint whose config names summarization settings and no translation ones (Pegasus, BART-CNN);
    T5 names both: --task picks its family."""
    params = config.get("task_specific_params") or {}
    return _is_seq2seq(config) and any(k.startswith("summarization") for k in params) and \
        not any(k.startswith("translation") for k in params)


_SUMMARIZATION_DEFAULTS = {"train.batch_size": 16, "seq2seq.max_source_length": 512, "seq2seq.max_target_length": 128,
                           "seq2seq.max_new_tokens": 128, "seq2seq.max_length_a": 0.0, "seq2seq.no_repeat_ngram_size": 3}

# The order matters for `family_of_model`: the first family whose test passes wins; "glue" is the fallback.
FAMILIES: dict[str, Family] = {
    "pretraining": Family("pretraining", "tlab.tasks.lm", "AutoModelForMaskedLM", "fill-mask", command="pretrain"),
    "summarization": Family(
        "summarization", "tlab.tasks.summarization", "AutoModelForSeq2SeqLM", "summarization", "SEQ_2_SEQ_LM",
        "summarization",
        # summaries are short beside their documents: no source-relative bound on their length, no repeated trigram
        defaults=_SUMMARIZATION_DEFAULTS,
        # without --model: translation's low-resource recipe (a small Transformer, the preset's dropout 0.3, token-budget
        # batches, inverse-sqrt schedule, the last checkpoints averaged), sized for an hour on 2 CPU cores with
        # SAMSum (BENCHMARKS.md "Summarization": 6 epochs of 4,096-token batches)
        from_scratch_defaults={**_SUMMARIZATION_DEFAULTS, "model.preset": "transformer-small", "model.vocab_size": 8000,
                               "train.lr": 1e-3, "train.epochs": 6.0, "train.warmup": 500, "train.schedule": "inverse_sqrt",
                               "train.weight_decay": 0.0, "seq2seq.max_tokens": 4096, "train.eval_every": 500,
                               "train.save_every": 250, "train.keep_checkpoints": 5, "seq2seq.average_checkpoints": 5,
                               "data.max_eval_samples": 200},
        detects=_is_summarizer),
    "translation": Family(
        "translation", "tlab.tasks.translation", "AutoModelForSeq2SeqLM", "translation", "SEQ_2_SEQ_LM", "translation",
        defaults={"train.batch_size": 16},
        # without --model: the low-resource recipe of BENCHMARKS.md (a small Transformer, light dropout,
        # token-budget batches, a high inverse-sqrt learning rate, many short epochs, the last checkpoints averaged)
        from_scratch_defaults={"model.preset": "transformer-small", "model.vocab_size": 4000, "train.lr": 1e-3,
                               "train.epochs": 16.0, "train.warmup": 500, "train.schedule": "inverse_sqrt",
                               "train.weight_decay": 0.0, "seq2seq.max_tokens": 4096, "train.eval_every": 300,
                               "train.save_every": 100, "train.keep_checkpoints": 5,
                               "seq2seq.average_checkpoints": 5, "data.max_eval_samples": 500,
                               # tuned on validation lines the training never scores (BENCHMARKS.md): at length
                               # penalty 1 the small model writes short of the references and repeats itself
                               "seq2seq.length_penalty": 2.0, "seq2seq.no_repeat_ngram_size": 3,
                               # 16 epochs leave the small Transformer under-trained, not over-fitted: the preset's
                               # dropout 0.3 only slowed it (BENCHMARKS.md "Translation")
                               "model.overrides.dropout": 0.1},
        detects=_is_seq2seq),
    "qa": Family("qa", "tlab.tasks.squad", "AutoModelForQuestionAnswering", "question-answering", "QUESTION_ANS", "qa",
                 # the windows of one paragraph's questions have almost one length: bucketed, they spread over batches
                 length_bucket=32,
                 # run_qa.py's warm-up and weight decay: at the Trainer's budget on all the questions they gained
                 # F1 over the generic 6% / 0.01; length groups of 2 batches, as NER's: 50-batch groups cost F1 after
                 # one epoch, pairs of batches keep most of the speed; the new 2-unit head at 10x the rate, so it
                 # leaves its random draw within one epoch (BENCHMARKS.md, issue #25)
                 defaults={"train.warmup": 0.1, "train.weight_decay": 0.0, "train.length_group_batches": 2,
                           "train.head_lr_scale": 10.0},
                 detects=lambda c: any(a.endswith("ForQuestionAnswering") for a in _architectures(c)),
                 predict_flags=("question", "context")),
    "ner": Family("ner", "tlab.tasks.token_classification", "AutoModelForTokenClassification", "token-classification",
                  "TOKEN_CLS", "ner",
                  # length groups of 2 batches: sentences sorted in 50-batch groups cost F1 after one epoch on
                  # CoNLL-2003 at every seed measured, pairs of batches keep most of the speed; the new tag head at
                  # 10x the rate, as QA's: more F1 after one epoch and after the 3-epoch recipe (BENCHMARKS.md, #21)
                  defaults={"train.length_group_batches": 2, "train.head_lr_scale": 10.0},
                  detects=lambda c: any(a.endswith("ForTokenClassification") for a in _architectures(c))),
    "glue": Family("glue", "tlab.tasks.glue", "AutoModelForSequenceClassification", "text-classification", "SEQ_CLS",
                   "classification", detects=lambda c: True, long_text=True, few_shot=True),
}
TRANSLATION_METRICS = ("bleu", "chrf")
SUMMARIZATION_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "loss", "gen_len")
NER_METRICS = ("precision", "recall", "f1", "accuracy", "strict_f1")


def _glue() -> dict[str, TaskInfo]:
    from tlab.tasks.glue_data import GLUE_TASKS

    return {
        name: TaskInfo(name, FAMILIES["glue"], f"nyu-mll/glue ({spec.hub_config}) or --data-dir GLUE TSVs",
                       tuple(spec.metrics), spec.main_metric, True, params={"spec": spec})
        for name, spec in GLUE_TASKS.items()
    }


def _classification() -> dict[str, TaskInfo]:
    from tlab.tasks import classification_data as c, multi_label

    family = FAMILIES["glue"]
    return {
        "classification": TaskInfo("classification", family, "your labelled files: --train-file / --validation-file "
                                   "(CSV, TSV, JSON Lines; --text-column, --label-column; labels read off the training "
                                   "data; --multi-label: a set of labels per text) or data.dataset", c.METRICS,
                                   "accuracy", params={"spec": c.CLASSIFICATION, "loader": c.load,
                                                       "multi_label_loader": multi_label.load}),
        "imdb": TaskInfo("imdb", family, f"{c.IMDB_HUB} or --data-dir with train.jsonl (text, label 0/1; validation "
                         "carved out of it unless a validation/test file is beside it)", c.METRICS, "accuracy",
                         params={"spec": c.IMDB, "loader": c.load}),
    }


def _wmt() -> dict[str, TaskInfo]:
    from tlab.tasks.translation_data import WMT_TASKS

    family = FAMILIES["translation"]
    return {
        name: TaskInfo(name, family, f"{hub} ({config}) or --data-dir with train.{src}/train.{tgt}/valid.{src}/valid.{tgt}",
                       TRANSLATION_METRICS, "bleu", True, params={"hub": hub, "hub_config": config, "languages": (src, tgt)})
        for name, (hub, config, src, tgt) in WMT_TASKS.items()
    }


def _ner() -> dict[str, TaskInfo]:
    from tlab.tasks.conll_data import CONLL2003_FILES, CONLL2003_LABELS, CONLL2003_SPLITS, HUB_ID

    family, metrics = FAMILIES["ner"], NER_METRICS
    files = "/".join(CONLL2003_FILES[s] for s in ("train", "validation"))
    return {
        "conll2003": TaskInfo("conll2003", family, f"{HUB_ID} or --data-dir with {files} (IOB1 or IOB2)", metrics, "f1",
                              params={"hub": HUB_ID, "labels": CONLL2003_LABELS, "splits": CONLL2003_SPLITS}),
        "ner": TaskInfo("ner", family, "CoNLL-format columns or JSON Lines {tokens, ner_tags} (--train-file, "
                        "--validation-file; sentences held out when no validation file)", metrics, "f1",
                        params={"hub": None, "labels": None}),
    }


def _summarization() -> dict[str, TaskInfo]:
    from tlab.tasks.summarization_data import GENERIC_COLUMNS, SUMMARIZATION_TASKS

    family, metrics = FAMILIES["summarization"], SUMMARIZATION_METRICS
    # main metric: summary-level ROUGE-L (rougeLsum), what ROUGE-1.5.5 computes as ROUGE-L (the LCS sentence by
    # sentence, Lin 2004) and what published SAMSum R-L numbers match: tlab's Lead-3 on SAMSum's validation split
    # scores rougeLsum 30.0 (the SAMSum paper: R-L 29.4 on test) but rougeL 25.4 (BENCHMARKS.md)
    found = {
        name: TaskInfo(name, family, f"{hub}{f' ({config})' if config else ''} or --train-file / --validation-file "
                       f"(JSON, JSON Lines, CSV: {text} -> {summary})", metrics, "rougeLsum",
                       params={"hub": hub, "hub_config": config, "columns": (text, summary)})
        for name, (hub, config, text, summary) in SUMMARIZATION_TASKS.items()
    }
    found["summarization"] = TaskInfo(
        "summarization", family, "your documents and summaries: --train-file / --validation-file (JSON, JSON Lines, "
        f"CSV, TSV; --text-column, default {GENERIC_COLUMNS[0]}, --summary-column, default {GENERIC_COLUMNS[1]}; "
        "documents held out when no validation file) or data.dataset", metrics, "rougeLsum",
        params={"hub": None, "hub_config": None, "columns": GENERIC_COLUMNS})
    return found


def registry() -> dict[str, TaskInfo]:
    lm_source = "text files / folders (--train-file), a Hub dataset (data.dataset), or the embedded WikiText-2 sample"
    squad_source = "{hub} or SQuAD JSON / JSONL (--train-file, --validation-file; articles held out when no validation file)"
    lm, qa = FAMILIES["pretraining"], FAMILIES["qa"]
    found = {
        "mlm": TaskInfo("mlm", lm, lm_source, ("loss", "perplexity", "accuracy"), "loss", False, params={"mlm": True}),
        "clm": TaskInfo("clm", lm, lm_source, ("loss", "perplexity"), "loss", False, params={"mlm": False},
                        head_override="AutoModelForCausalLM", pipeline_tag_override="text-generation"),
    }
    found.update(_glue())
    found.update(_classification())
    found["squad"] = TaskInfo("squad", qa, squad_source.format(hub="rajpurkar/squad"), ("exact_match", "f1"), "f1",
                              params={"version_2": False, "hub": "rajpurkar/squad"})
    found["squad_v2"] = TaskInfo("squad_v2", qa, squad_source.format(hub="rajpurkar/squad_v2"),
                                 ("exact_match", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"), "f1",
                                 params={"version_2": True, "hub": "rajpurkar/squad_v2"})
    found.update(_ner())
    found.update(_wmt())
    found["translation"] = TaskInfo("translation", FAMILIES["translation"],
                                    "parallel files (--data-dir DIR/train.xx, --train-file; JSON Lines) for any "
                                    "--source-lang/--target-lang", TRANSLATION_METRICS, "bleu", params={"languages": None})
    found.update(_summarization())
    return found


def defaults_for(task: str, from_scratch: bool) -> dict:
    """The family's config defaults (below YAML and flags); its from-scratch recipe when there is no --model."""
    family = info(task).family
    return dict(family.from_scratch_defaults if from_scratch and family.from_scratch_defaults else family.defaults)


def check_options(task: TaskInfo, cfg) -> None:
    """One error for an option the task does not read (data.long_text mean | max outside sequence classification,
    classification.multi_label outside the tasks whose params name a `multi_label_loader`, fewshot.shots outside
    the families that score a causal LM from prompts)."""
    if cfg.data.long_text != "truncate" and not task.family.long_text:
        able = ", ".join(f.name for f in FAMILIES.values() if f.long_text)
        raise TlabError(f"data.long_text (--long-text) {cfg.data.long_text} is for sequence classification (the {able} "
                        f"family's tasks); {task.name} is a {task.family.name} task: leave it at truncate")
    if cfg.classification.multi_label:
        able = ", ".join(t.name for t in registry().values() if t.params.get("multi_label_loader"))
        if not task.params.get("multi_label_loader"):
            raise TlabError(f"--multi-label (classification.multi_label) is for --task {able} (your own files); {task.name} "
                            "has one label per example")
        if cfg.data.long_text != "truncate":
            raise TlabError(f"--multi-label reads texts truncated at data.max_length: --long-text {cfg.data.long_text} "
                            "(windows) is for single-label classification")
    choices = selectable_metrics(task, cfg)
    if cfg.train.best_metric and cfg.train.best_metric not in choices:
        raise TlabError(f"train.best_metric {cfg.train.best_metric!r} is not a metric of {task.name}: pick one of "
                        f"{', '.join(choices)}")
    if cfg.fewshot.shots is not None and not task.family.few_shot:
        able = ", ".join(f.name for f in FAMILIES.values() if f.few_shot)
        raise TlabError(f"fewshot.shots (--shots) scores a causal LM on a classification task (the {able} family's "
                        f"tasks, e.g. sst2); {task.name} is a {task.family.name} task")


# what an evaluation reports beside the task's own metrics; gen_len (summaries' length) is not a quality to select on
_LOSS_REPORTING = ("glue", "ner")
_MINIMISED = ("loss", "perplexity")
_MULTI_LABEL_METRICS = ("micro_f1", "macro_f1", "subset_accuracy")  # what the multi_label metric module reports


def selectable_metrics(task: TaskInfo, cfg) -> tuple[str, ...]:
    """The metrics train.best_metric may name for this task."""
    own = _MULTI_LABEL_METRICS if cfg.classification.multi_label else task.metrics
    extra = ("loss",) if task.family.name in _LOSS_REPORTING and "loss" not in own else ()
    return tuple(m for m in (*own, *extra) if m != "gen_len")


def selection(task: TaskInfo, cfg) -> tuple[str, bool]:
    """(metric, greater_is_better) that picks the kept checkpoint: train.best_metric, else the task's main metric."""
    name = cfg.train.best_metric
    if not name:
        return task.main_metric, task.greater_is_better
    return name, name not in _MINIMISED


def info(name: str) -> TaskInfo:
    known = registry()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TlabError(f"unknown task {name!r}{hint} (known: {', '.join(known)})")
    return known[name]


def get(name: str) -> TaskModule:
    """The task's family module (imported now: it brings torch and transformers)."""
    return module_of(info(name).family)


def module_of(family: Family) -> TaskModule:
    module = importlib.import_module(family.module)
    assert isinstance(module, TaskModule), f"{module.__name__} does not implement the task contract"
    return module


def family_of_model(config: dict) -> Family:
    """The family of a plain model directory (no run): the first whose test accepts its config.json."""
    return next(f for f in FAMILIES.values() if f.detects is not None and f.detects(config))


def for_prediction(model: str, task: Optional[str], flags: tuple[str, ...] = ()) -> Family:
    """The family `tlab predict` serves `model` with: --task's, else the run's (config.yaml), else one read off
    the model's config.json; a family's own flags (--question) pick it."""
    import json
    from pathlib import Path

    flagged = [f for f in FAMILIES.values() if any(flag in f.predict_flags for flag in flags)]
    if flagged:
        return flagged[0]
    if task:
        return info(task).family
    from tlab import outputs

    run_config = outputs.run_config_of(model)  # a run's, or the one an export carries from its run
    if run_config:
        import yaml

        return info((yaml.safe_load(Path(run_config).read_text()) or {}).get("task", "sst2")).family
    config = Path(model) / "config.json"
    return family_of_model(json.loads(config.read_text()) if config.is_file() else {})
