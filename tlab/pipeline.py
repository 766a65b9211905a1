"""One pipeline for every task: task -> data -> model -> fit -> score -> run directory.

Commands call `run(cfg)`; tests call it directly. Everything that can be checked is checked before the run
directory is created, so bad input leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from tlab import __version__, config, outcomes, outputs, tasks, trackers
from tlab.config import RunConfig
from tlab.errors import Pruned, TlabError
from tlab.runtime import quiet_libraries

if TYPE_CHECKING:  # torch comes with the loop: imported when a run starts
    from tlab.train import Report


def run(cfg: RunConfig, echo: Callable[[str], None] = print, command: Optional[Sequence[str]] = None,
        report: Optional[Report] = None) -> dict[str, Any]:
    """`command`: the command line as typed (the CLI passes sys.argv), kept in log.jsonl for the model card.
    `report(step, metrics, main_metric)`: called after each evaluation but the last (tlab sweep's pruner); raising
    `tlab.errors.Pruned` stops the run, whose directory then says so (metrics.json "state": "pruned")."""
    if not cfg.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=outputs.default_output_dir(cfg.task))
    task = tasks.info(cfg.task)
    tasks.check_options(task, cfg)
    if cfg.data.eval_split:
        raise TlabError(f"data.eval_split {cfg.data.eval_split!r} picks what `tlab eval --split` scores; training "
                        "validates on the task's validation split: leave it unset")
    from tlab import runtime

    # fail fast, before loading anything (RANK: set for each process by torchrun and accelerate launch)
    outputs.check_output_dir(cfg.output_dir, cfg.resume, cfg.overwrite, probe_lock=os.environ.get("RANK", "0") == "0")
    trackers.preflight(cfg, probe=os.environ.get("RANK", "0") == "0")  # installed, and the MLflow server answers
    quiet_libraries()
    run_dir_path = Path(cfg.output_dir)
    accelerator = runtime.make_accelerator(cfg, project_dir=str(run_dir_path))
    say = echo if accelerator.is_main_process else (lambda _msg: None)
    # Rank 0 locks the run directory (an existing one now, a new one as it creates it) until the process ends.
    run_dir = outputs.RunDir.plan(cfg.output_dir, cfg.resume, cfg.overwrite, accelerator.is_main_process)
    try:
        return _run_locked(cfg, task, accelerator, run_dir, say, command, report)
    finally:
        run_dir.release()


def _run_locked(cfg: RunConfig, task: tasks.TaskInfo, accelerator, run_dir: outputs.RunDir, say: Callable[[str], None],
                command: Optional[Sequence[str]] = None, report: Optional[Report] = None) -> dict[str, Any]:
    from accelerate.utils import set_seed

    from tlab import faults, runtime, train

    accelerator.project_configuration.set_directories(str(run_dir.path))
    trackers.place(accelerator, run_dir.path)
    set_seed(cfg.train.seed)

    module = tasks.get(task.name)
    prepared = module.prepare(task, cfg, accelerator, say)
    job, tokenizer, summary = prepared.job, prepared.tokenizer, prepared.summary
    if cfg.train.best_metric and job.main_metric:  # a task without validation data keeps its last step
        job.main_metric, job.greater_is_better = tasks.selection(task, cfg)
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
            "precision": runtime.precision_name(accelerator),
            "device": str(accelerator.device),
            **summary,
        }
        if summary.get("max_tokens"):  # token-budget batches (translation): sentences per batch vary
            facts["per_device_batch"] = f"{summary['max_tokens']} tokens"
            facts["global_batch"] = f"{summary['max_tokens'] * cfg.train.grad_accum} tokens"
        say("tlab " + cfg.task + ": " + ", ".join(f"{k} {_fmt(v)}" for k, v in facts.items()))
        run_dir.log({"event": "resume" if cfg.resume and not run_dir.fresh_resume else "start", "time": time.time(), **facts,
                     **({"command": list(command)} if command else {})})

        if facts["precision"] == "fp32" and accelerator.device.type == "cpu" and runtime.cpu_has_bf16_units():
            say("hint: this CPU has bf16 matrix units (AMX): --precision bf16 trains faster here (see BENCHMARKS.md)")
        with runtime.attention_kernels(accelerator):
            result = train.fit(cfg, job, accelerator, run_dir, say, report)
        model, state_dict = result.pop("model"), result.pop("state_dict")
        model_path = None
        if accelerator.is_main_process:
            def save(path):
                module.save(model, tokenizer, path, cfg, state_dict)
                faults.fault("kill-in-model-save", result["steps"])

            model_path = run_dir.save_model(save)
        for name, content in job.artifacts.items():  # the final evaluation's predictions (QA), beside metrics.json
            run_dir.write_artifact(name, content)
        if job.outcomes:  # the saved model's per-example outcomes: what `tlab eval --baseline RUN` compares with
            run_dir.write_json(outcomes.OUTCOMES_FILE, {"task": cfg.task, "fingerprint": outcomes.fingerprint_all(job.outcomes),
                                                        "outcomes": job.outcomes})
        metrics = {**facts, **result, "model_path": str(model_path) if model_path else None, "versions": versions(),
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        run_dir.write_metrics(metrics)
        if model_path:
            from tlab import model_card

            model_card.write(run_dir.path / "model", cfg, metrics, run_dir.path / "log.jsonl")
        run_dir.log({"event": "end", "time": time.time(), **{k: v for k, v in result.items() if k != "final"}})
        trackers.finish(accelerator, metrics, run_dir.path / "model" if model_path else None, say)
        accelerator.wait_for_everyone()
        run_dir.finish()
        accelerator.end_training()  # last collective first: this destroys the process group
        final = result["final"]
        which = f" ({result['best']['checkpoint']}, the best)" if "last_eval" in result else ""
        say(f"done in {result['train_seconds']:.0f} s, {result['steps']} steps, {result['tokens_per_s']:,.0f} tokens/s{which}: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in final.items()))
        if model_path:
            say(f"model saved to {run_dir.final / 'model'}")
        return metrics
    except BaseException as exc:
        trackers.abort(accelerator, exc)
        if isinstance(exc, Pruned):
            say(f"pruned at step {exc.step}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in exc.metrics.items()))
            run_dir.pruned(exc.step, exc.metrics, {**facts, "versions": versions()})
        else:
            run_dir.abandon()
        raise


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
        done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD^{commit}"], capture_output=True, text=True,
                              timeout=5, cwd=Path(__file__).parent)
        commit = done.stdout.strip()
        # a copied tree without history makes git echo the bare name back: record only a real commit id
        if done.returncode == 0 and len(commit) == 40:
            found["git_commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def preprocess(cfg: RunConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Tokenizer, tokenized and packed data into the caches, nothing else: run it once before a large launch."""
    quiet_libraries()
    from tlab import runtime

    tasks.check_options(tasks.info(cfg.task), cfg)
    accelerator = runtime.make_accelerator(cfg, project_dir=None)
    summary = tasks.get(cfg.task).prepare(tasks.info(cfg.task), cfg, accelerator, echo).summary
    echo("preprocessed and cached: " + ", ".join(f"{k} {_fmt(v)}" for k, v in summary.items()))
    return summary


def preview(cfg: RunConfig) -> Optional[str]:
    """What `tlab eval --dry-run` shows beyond the config: the input the task's evaluation would build for its first
    example (a few-shot prompt), when the task's module offers one; no model is loaded."""
    tasks.check_options(tasks.info(cfg.task), cfg)
    show = getattr(tasks.get(cfg.task), "preview", None)
    return show(tasks.info(cfg.task), cfg) if show is not None else None


def evaluate(cfg: RunConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Score a checkpoint on a task's validation split(s): the same task code, training skipped."""
    task = tasks.get(cfg.task)
    tasks.check_options(tasks.info(cfg.task), cfg)
    quiet_libraries()
    from tlab import runtime

    accelerator = runtime.make_accelerator(cfg, project_dir=None)
    prepared = task.prepare(tasks.info(cfg.task), cfg, accelerator, echo, train=False)
    job, summary = prepared.job, prepared.summary
    from tlab.tasks import scaffold

    splits = scaffold.only_split(job.eval_loaders, cfg, cfg.task)  # data.eval_split (--split): that one alone
    model, *loaders = accelerator.prepare(job.model, *splits.values())
    start = time.perf_counter()
    with runtime.attention_kernels(accelerator):
        scores = job.evaluate(model, dict(zip(splits, loaders)), accelerator)
    seconds = time.perf_counter() - start
    # the scored splits' counts (`<split>_examples`; the split may be "train", whose count then replaces the 0)
    examples = sum(summary.get(f"{k}_examples", 0) for k in splits)
    return {
        "task": cfg.task,
        "splits": list(splits),
        "examples": examples,
        "metrics": scores,
        "model": cfg.model.name_or_path,
        "eval_seconds": round(seconds, 3),
        "samples_per_s": round(examples / max(seconds, 1e-9), 1),
        "precision": runtime.precision_name(accelerator),
        "config": config.to_dict(cfg),
        "versions": versions(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "artifacts": job.artifacts,
        # per example: id, input digest, prediction and reference, per split (`tlab eval --baseline` compares them)
        "fingerprint": outcomes.fingerprint_all(job.outcomes),
        "outcomes": job.outcomes,
    }


def read_baseline(path: str, task: str) -> dict:
    """`tlab eval --baseline`, read before anything is evaluated: a missing file, or results or a run of another
    task, fail here (a plain model directory has no task: it is evaluated on this one)."""
    base = outcomes.load(path)
    if base["task"] is not None and base["task"] != task:
        raise TlabError(f"--baseline {path} is of task {base['task']}, this evaluation of {task}: compare evaluations "
                        "of one task")
    return base


def compare(cfg: RunConfig, results: dict[str, Any], base: dict, path: str, tolerances: dict[str, float],
            echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The paired comparison of `results` with --baseline `path` (read by `read_baseline`). A run or model
    directory whose outcomes are missing, or are of other examples, is first evaluated on these examples (the
    same config, its model)."""
    outcomes.check_tolerances(tolerances, list(results["metrics"]), results.get("outcomes"), cfg.task)
    if Path(path).is_dir() and outcomes.fingerprint_all(base["outcomes"] or {}) != results.get("fingerprint"):
        echo(f"evaluating the baseline {path} on the same examples")
        other = evaluate(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=path)), echo=echo)
        base = {"task": cfg.task, "outcomes": other.get("outcomes"), "source": path}
    return outcomes.compare(base, {"task": cfg.task, "outcomes": results.get("outcomes")}, tolerances, source=path)
