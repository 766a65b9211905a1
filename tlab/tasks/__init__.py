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
    family: str  # pretraining | glue | qa
    module: str  # implements TaskModule
    source: str
    metrics: tuple[str, ...]
    main_metric: str = ""
    greater_is_better: bool = True
    head: str = ""  # the transformers Auto class of the task's model, e.g. AutoModelForQuestionAnswering
    peft_task_type: Optional[str] = None  # SEQ_CLS / QUESTION_ANS: the head LoRA keeps trainable
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
    return found


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
