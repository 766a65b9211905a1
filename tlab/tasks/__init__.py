"""Task registry. A task is a module with `prepare(cfg, accelerator, log) -> (Job, tokenizer, summary)` and
`save(model, tokenizer, path, cfg)`. Adding a task = one module + one line here + a YAML + a test.
Only names and descriptions live here, so `tlab tasks` and `--help` stay free of heavy imports."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass

from tlab.errors import TlabError


@dataclass(frozen=True)
class TaskInfo:
    name: str
    family: str
    module: str
    source: str
    metrics: tuple[str, ...]


def _glue() -> dict[str, TaskInfo]:
    from tlab.tasks.glue_data import GLUE_TASKS

    return {
        name: TaskInfo(name, "glue", "tlab.tasks.glue", f"nyu-mll/glue ({spec.hub_config}) or --data-dir GLUE TSVs",
                       tuple(spec.metrics))
        for name, spec in GLUE_TASKS.items()
    }


def registry() -> dict[str, TaskInfo]:
    lm_source = "text files / folders (--train-file), a Hub dataset (data.dataset), or the embedded WikiText-2 sample"
    found = {
        "mlm": TaskInfo("mlm", "pretraining", "tlab.tasks.lm", lm_source, ("loss", "perplexity", "accuracy")),
        "clm": TaskInfo("clm", "pretraining", "tlab.tasks.lm", lm_source, ("loss", "perplexity")),
    }
    found.update(_glue())
    return found


def info(name: str) -> TaskInfo:
    known = registry()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TlabError(f"unknown task {name!r}{hint} (known: {', '.join(known)})")
    return known[name]


def get(name: str):
    """The task's module (imported now: it brings torch and transformers)."""
    return importlib.import_module(info(name).module)


def save(task_module, model, tokenizer, path, cfg, state_dict=None) -> None:
    """The task's own `save` (e.g. merging LoRA) or plain safetensors save_pretrained of model and tokenizer.
    `state_dict` is the gathered full state of a sharded (FSDP) model."""
    custom = getattr(task_module, "save", None)
    if custom is not None:
        return custom(model, tokenizer, path, cfg, state_dict)
    model.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(path)
