"""Task registry and the task contract. Every family implements `TaskModule` (a module with `prepare` and
optionally `save` / `predictor`); each task is a `TaskInfo` here naming its module, head, LoRA task type, metrics and
config section. Adding a task = one module + one line here + a YAML + a test; the CLI, data, loop and run directory
stay untouched. Only names and descriptions live here, so `tlab tasks` and `--help` stay free of heavy imports."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, runtime_checkable

from tlab.errors import TlabError


@dataclass(frozen=True)
class TaskInfo:
    name: str
    family: str  # pretraining | glue | qa | translation
    module: str  # implements TaskModule
    source: str
    metrics: tuple[str, ...]
    main_metric: str = ""
    greater_is_better: bool = True
    head: str = ""  # the transformers Auto class of the task's model, e.g. AutoModelForQuestionAnswering
    peft_task_type: Optional[str] = None  # SEQ_CLS / QUESTION_ANS / SEQ_2_SEQ_LM: the head LoRA keeps trainable
    options: Optional[str] = None  # the RunConfig section of the family's own options (e.g. "qa")


@runtime_checkable
class TaskModule(Protocol):
    """What a family's module provides. `prepare` does load (Hub or files), preprocess (cached features, side
    columns kept out of batches), build the model with its head, and returns the Job: collator, evaluation with
    post-processing, main metric. `save` writes model/ (default: safetensors save_pretrained of model and tokenizer).
    `predictor(model_path, cfg)` (optional) returns what `tlab predict` calls."""

    def prepare(self, cfg, accelerator, log: Callable[[str], None], train: bool = True) -> tuple[Any, Any, dict]: ...


def _glue() -> dict[str, TaskInfo]:
    from tlab.tasks.glue_data import GLUE_TASKS

    return {
        name: TaskInfo(name, "glue", "tlab.tasks.glue", f"nyu-mll/glue ({spec.hub_config}) or --data-dir GLUE TSVs",
                       tuple(spec.metrics), spec.main_metric, True, "AutoModelForSequenceClassification", "SEQ_CLS")
        for name, spec in GLUE_TASKS.items()
    }


def registry() -> dict[str, TaskInfo]:
    lm_source = "text files / folders (--train-file), a Hub dataset (data.dataset), or the embedded WikiText-2 sample"
    squad_source = "{hub} or SQuAD JSON / JSONL (--train-file, --validation-file; articles held out when no validation file)"
    found = {
        "mlm": TaskInfo("mlm", "pretraining", "tlab.tasks.lm", lm_source, ("loss", "perplexity", "accuracy"), "loss",
                        False, "AutoModelForMaskedLM"),
        "clm": TaskInfo("clm", "pretraining", "tlab.tasks.lm", lm_source, ("loss", "perplexity"), "loss", False,
                        "AutoModelForCausalLM"),
    }
    found.update(_glue())
    found["squad"] = TaskInfo("squad", "qa", "tlab.tasks.squad", squad_source.format(hub="rajpurkar/squad"),
                              ("exact_match", "f1"), "f1", True, "AutoModelForQuestionAnswering", "QUESTION_ANS", "qa")
    found["squad_v2"] = TaskInfo("squad_v2", "qa", "tlab.tasks.squad", squad_source.format(hub="rajpurkar/squad_v2"),
                                 ("exact_match", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"), "f1", True,
                                 "AutoModelForQuestionAnswering", "QUESTION_ANS", "qa")
    for name, (hub, config, src, tgt) in _wmt().items():
        found[name] = TaskInfo(name, "translation", "tlab.tasks.translation",
                               f"{hub} ({config}) or --data-dir with train.{src}/train.{tgt}/valid.{src}/valid.{tgt}",
                               TRANSLATION_METRICS, "bleu", True, "AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM", "translation")
    found["translation"] = TaskInfo("translation", "translation", "tlab.tasks.translation",
                                    "parallel files (--data-dir DIR/train.xx, --train-file; JSON Lines) for any "
                                    "--source-lang/--target-lang", TRANSLATION_METRICS, "bleu", True,
                                    "AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM", "translation")
    return found


TRANSLATION_METRICS = ("bleu", "chrf")
# Fine-tuning defaults of a family, below its YAML and flags (`defaults_for`). Translation from scratch (no --model)
# gets the low-resource recipe measured in BENCHMARKS.md: a small Transformer, strong dropout, token-budget batches,
# a high inverse-sqrt learning rate, many short epochs and the last checkpoints averaged.
FAMILY_DEFAULTS = {
    "translation": {"train.lr": 5e-5, "train.batch_size": 16, "train.epochs": 3.0},
    "translation-from-scratch": {"model.preset": "transformer-small", "model.vocab_size": 4000, "train.lr": 1e-3,
                                 "train.epochs": 16.0, "train.warmup": 500, "train.schedule": "inverse_sqrt",
                                 "train.weight_decay": 0.0, "seq2seq.max_tokens": 4096, "train.eval_every": 300,
                                 "train.save_every": 100, "train.keep_checkpoints": 5,
                                 "seq2seq.average_checkpoints": 5, "data.max_eval_samples": 500},
}


def defaults_for(task: str, from_scratch: bool) -> dict:
    family = info(task).family
    return FAMILY_DEFAULTS.get(f"{family}-from-scratch" if from_scratch else family, {}) or FAMILY_DEFAULTS.get(family, {})


def _wmt() -> dict:
    from tlab.tasks.translation_data import WMT_TASKS

    return WMT_TASKS


def info(name: str) -> TaskInfo:
    known = registry()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TlabError(f"unknown task {name!r}{hint} (known: {', '.join(known)})")
    return known[name]


def get(name: str) -> TaskModule:
    """The task's module (imported now: it brings torch and transformers)."""
    module = importlib.import_module(info(name).module)
    assert isinstance(module, TaskModule), f"{module.__name__} does not implement the task contract"
    return module


def save(task_module, model, tokenizer, path, cfg, state_dict=None) -> None:
    """The task's own `save` (e.g. merging LoRA) or plain safetensors save_pretrained of model and tokenizer.
    `state_dict` is the gathered full state of a sharded (FSDP) model."""
    custom = getattr(task_module, "save", None)
    if custom is not None:
        return custom(model, tokenizer, path, cfg, state_dict)
    model.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(path)
