"""The model card every saved model gets: model/README.md in the Hugging Face Hub's format (YAML metadata with
the scores in the model-index form, then prose): how the model was trained (the resolved config), on what data,
what it scored, and the command that reproduces it. `huggingface_hub.ModelCard.load` reads it back."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any, Optional

from tlab import outputs

EMBEDDED_CORPUS = ("Salesforce/wikitext", "wikitext-2-raw-v1")  # what `tlab pretrain` trains on without --train-file
COUNTS = ("tokens", "examples")  # evaluation sizes, not scores


def task_facts(task: str):
    """The task's registry entry, or None (a task this tlab does not know, e.g. a run from a newer version)."""
    from tlab import tasks

    try:
        return tasks.info(task)
    except Exception:
        return None


def hub_dataset(cfg, info) -> tuple[Optional[str], Optional[str]]:
    """(Hub dataset id, config) the model was trained on, or (None, None) for the user's own files."""
    if cfg.data.dataset:
        return cfg.data.dataset, cfg.data.dataset_config
    if info is not None and info.family.command == "pretrain":
        return EMBEDDED_CORPUS if not cfg.data.train_files else (None, None)
    if cfg.data.data_dir or cfg.data.train_files or cfg.data.validation_file:
        return None, None  # the user's own files, whatever task they were for: the card names them in its text
    found = re.match(r"([\w.-]+/[\w.-]+)(?: \(([\w.-]+)\))?", info.source if info else "")
    return (found.group(1), found.group(2)) if found else (None, None)


def scores(final: dict[str, Any]) -> dict[str, float]:
    """The numeric, finite scores of an evaluation (a sacreBLEU signature string or a count is not a score)."""
    return {k: v for k, v in (final or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and k not in COUNTS}


def commands(log_path: Path) -> list[list[str]]:
    """The command lines of the run's start and resumes, as recorded in log.jsonl."""
    from tlab.report import read_log

    records, _skipped = read_log(log_path)
    return [r["command"] for r in records if r.get("event") in ("start", "resume") and r.get("command")]


def render(cfg, metrics: dict[str, Any], typed: list[list[str]]) -> str:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from tlab import config

    info = task_facts(cfg.task)
    family = info.family.name if info else "unknown"
    pipeline_tag = info.pipeline_tag if info else None
    dataset, dataset_config = hub_dataset(cfg, info)
    start = cfg.model.name_or_path
    # the Hub's base_model must be a Hub id: a local directory (another tlab run, a pip-installed model) is named
    # in the prose instead
    base_model = start if start and not Path(start).exists() and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", start) else None
    name = Path(cfg.output_dir).name if cfg.output_dir else cfg.task
    final = scores(metrics.get("final"))
    results = [EvalResult(task_type=pipeline_tag or cfg.task, task_name=cfg.task, dataset_type=dataset or "local",
                          dataset_name=dataset or "local files", dataset_config=dataset_config, dataset_split="validation",
                          metric_type=metric, metric_name=metric, metric_value=value)
               for metric, value in final.items()]
    data = ModelCardData(model_name=name, base_model=base_model, pipeline_tag=pipeline_tag,
                         datasets=[dataset] if dataset else None, library_name="transformers",
                         tags=["tlab", cfg.task] + ([family] if family not in ("unknown", cfg.task) else []),
                         metrics=list(final) or None, eval_results=results or None)

    command = info.family.command if info else "finetune"
    from_config = f"tlab {command} --config config.yaml --output-dir NEW_RUN   # config.yaml: the resolved config below"
    lines = [f"# {name}", "",
             f"A {info.head.replace('AutoModelFor', '') if info and info.head else 'transformers'} model "
             f"({metrics.get('model_type') or 'transformer'}, {metrics.get('parameters', 0):,} parameters) trained with "
             f"[tlab](https://pypi.org/project/tlab-cli/) on the task `{cfg.task}`"
             + (f", starting from `{start}`." if start else ", from scratch."), "",
             "## Training", "",
             f"- steps: {metrics.get('steps')}, epochs: {metrics.get('epochs')}, global batch: {metrics.get('global_batch')} "
             f"({metrics.get('per_device_batch')} per device x {metrics.get('world_size')} processes x "
             f"{metrics.get('grad_accum')} accumulation)",
             f"- learning rate {cfg.train.lr:g} ({cfg.train.schedule}, warm-up {cfg.train.warmup:g}), precision "
             f"{metrics.get('precision')}, device {metrics.get('device')}, seed {cfg.train.seed}",
             f"- training time {metrics.get('train_seconds')} s, {metrics.get('tokens_per_s')} tokens/s, "
             f"{metrics.get('samples_per_s')} samples/s",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in (metrics.get("versions") or {}).items()), "",
             "## Data", ""]
    if dataset:
        lines.append(f"- Hub dataset `{dataset}`" + (f" ({dataset_config})" if dataset_config else "")
                     + (" (the sample embedded in tlab)" if (dataset, dataset_config) == EMBEDDED_CORPUS else ""))
    for what, value in (("training files", cfg.data.train_files), ("validation file", cfg.data.validation_file),
                        ("data directory", cfg.data.data_dir)):
        if value:
            lines.append(f"- {what}: {', '.join(f'`{v}`' for v in value) if isinstance(value, list) else f'`{value}`'}")
    counts = {k: v for k, v in metrics.items() if k.endswith(("_examples", "_blocks", "_tokens")) and isinstance(v, int)}
    if counts:
        lines.append("- " + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in counts.items()))
    lines += ["", "## Results", "", "Scores of the saved model on the validation data"
              + (f" (the best checkpoint, {metrics['best'].get('checkpoint')})" if metrics.get("last_eval") else "") + ":", "",
              "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in (metrics.get("final") or {}).items()]
    lines += ["", "## Reproduce", "", "```bash"]
    if typed:
        lines += [shlex.join(typed[0]) + "   # as typed"] + [shlex.join(c) + "   # resumed" for c in typed[1:]]
    lines += [from_config, "```", "", "## Config", "", "```yaml", config.to_yaml(cfg).rstrip(), "```", ""]
    return ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines)).content


def write(model_dir: Path, cfg, metrics: dict[str, Any], log_path: Path) -> Path:
    """model_dir/README.md, written atomically (before the model directory is made final)."""
    path = Path(model_dir) / "README.md"
    outputs.write_atomic(path, render(cfg, metrics, commands(log_path)))
    return path


def export_section(facts: dict[str, Any]) -> str:
    """The model card's quantisation section for a `tlab export` folder (facts: its export.json)."""
    q, check = facts["quantization"], facts["check"]
    lines = ["## Quantisation (tlab export)", "",
             f"This folder holds `{facts['file']}`, an ONNX model of the `{facts['head'][3:]}` head for "
             f"{facts['backend']} on CPU, exported from `{facts['source']}`.", "",
             f"- quantisation: {q['mode']}" + (f", {q['dtype']}: weights {q['weights']}, activations {q['activations']}; "
                                              f"ops {q['ops']} ({q['tool']})" if q["mode"] != "none" else " (fp32)"),
             f"- size: {facts['bytes'] / 1e6:.1f} MB (fp32 ONNX {facts['fp32_bytes'] / 1e6:.1f} MB)",
             f"- torch vs this model on {check['inputs']} probe inputs: max |logit diff| {check['max_abs_diff']:.3g}, "
             f"same argmax {check['same_argmax']:.0%}",
             f"- inputs {', '.join(facts['inputs'])}; outputs {', '.join(facts['outputs'])}; opset {facts['opset']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()), "",
             "Score and use it as the run it came from (config.yaml here is the run's):", "", "```bash",
             "tlab eval --model THIS_FOLDER            # the run's task and validation data; --min gates it in CI",
             'tlab predict --model THIS_FOLDER "some text"', "```", ""]
    return "\n".join(lines)
