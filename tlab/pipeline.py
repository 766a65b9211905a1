"""One pipeline for every task: task -> data -> model -> fit -> score -> run directory.

Commands call `run(cfg)`; tests call it directly. Everything that can be checked is checked before the run
directory is created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from tlab import __version__, config, outputs, tasks
from tlab.config import RunConfig


def run(cfg: RunConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    if not cfg.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=outputs.default_output_dir(cfg.task))
    task = tasks.get(cfg.task)
    import torch
    from accelerate.utils import set_seed

    from tlab import train

    outputs.check_output_dir(cfg.output_dir, cfg.resume, cfg.overwrite)  # fail fast, before loading anything
    _quiet_libraries()
    run_dir_path = Path(cfg.output_dir)
    accelerator = train.make_accelerator(cfg, project_dir=str(run_dir_path))
    say = echo if accelerator.is_main_process else (lambda _msg: None)
    run_dir = outputs.RunDir.plan(cfg.output_dir, cfg.resume, cfg.overwrite, accelerator.is_main_process)
    accelerator.project_configuration.set_directories(str(run_dir.path))
    set_seed(cfg.train.seed)

    job, tokenizer, summary = task.prepare(cfg, accelerator, say)
    accelerator.wait_for_everyone()
    run_dir.create()
    accelerator.wait_for_everyone()
    try:
        run_dir.write_config(config.to_yaml(cfg))
        world = accelerator.num_processes
        total, trainable = _count(job.model)
        facts = {
            "task": cfg.task,
            "model": cfg.model.name_or_path or f"{cfg.model.preset} (from scratch)",
            "parameters": total,
            "trainable_parameters": trainable,
            "world_size": world,
            "per_device_batch": cfg.train.batch_size,
            "grad_accum": cfg.train.grad_accum,
            "global_batch": cfg.global_batch(world),
            "precision": train.precision_name(accelerator),
            "device": str(accelerator.device),
            **summary,
        }
        say("tlab " + cfg.task + ": " + ", ".join(f"{k} {_fmt(v)}" for k, v in facts.items()))
        run_dir.log({"event": "start", "time": time.time(), **facts})

        result = train.fit(cfg, job, accelerator, run_dir, say)
        model = result.pop("model")
        model_path = None
        if accelerator.is_main_process:
            model_path = run_dir.save_model(lambda path: tasks.save(task, model, tokenizer, path, cfg))
        metrics = {**facts, **result, "model_path": str(model_path) if model_path else None, "versions": versions(),
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        run_dir.write_metrics(metrics)
        run_dir.log({"event": "end", "time": time.time(), **{k: v for k, v in result.items() if k != "final"}})
        accelerator.wait_for_everyone()
        run_dir.finish()
        final = result["final"]
        say(f"done in {result['train_seconds']:.0f} s, {result['steps']} steps, {result['tokens_per_s']:,.0f} tokens/s: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in final.items()))
        if model_path:
            say(f"model saved to {run_dir.final / 'model'}")
        return metrics
    except BaseException:
        run_dir.abandon()
        raise


def _quiet_libraries() -> None:
    """tlab prints its own progress; the libraries' per-step bars and advice would bury it."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _count(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and value >= 10000:
        return f"{value:,}"
    return str(value)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"tlab": __version__, "python": platform.python_version()}
    for name in ("torch", "transformers", "datasets", "accelerate"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
        if commit:
            found["git_commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return found
