"""The one training loop, on accelerate: devices, precision, accumulation, distributed runs and checkpoint
state come from accelerate; this file is the loop on top — accumulate, backward, clip, step, schedule,
then log / evaluate / checkpoint every N steps, with exact resume.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from tlab import config, trackers
from tlab.config import RunConfig, TrainConfig
from tlab.errors import TlabError
from tlab.outputs import STATE_FILE, RunDir, out_of_space

# Tests simulate a crash after this optimizer step (once its checkpoint is written) to check --resume.
STOP_AFTER_ENV = "TLAB_STOP_AFTER_STEP"
# Fault injection for tests and scripts/fault_injection.py: "POINT:STEP[,POINT:STEP]" with POINT one of
# kill-after-step (SIGKILL once step STEP's update is done), kill-in-save (SIGKILL with step STEP's checkpoint
# written but not yet committed), kill-in-prune (SIGKILL while an old checkpoint is being deleted after step
# STEP's commit), kill-in-model-save (SIGKILL with model/ written but not renamed into place, STEP = last step),
# term-after-step (SIGTERM to itself, as Slurm sends), nan-from-step (the loss turns NaN from that step on).
FAULT_ENV = "TLAB_FAULT"
RNG_FILE = "rng_state_{}.safetensors"
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request with a checkpoint saved; `--resume` continues it
DIVERGED_EXIT = 3


class Diverged(TlabError):
    exit_code = DIVERGED_EXIT


class Preempted(TlabError):
    exit_code = PREEMPTED_EXIT


def resolve_precision(requested: str, cuda: bool, bf16_ok: bool) -> str:
    """tlab precision -> accelerate mixed_precision. auto: bf16 where the GPU has it, fp16 (loss-scaled) on
    older GPUs, fp32 on CPU, where bf16 autocast is slower than fp32 on most machines."""
    if requested == "auto":
        return ("bf16" if bf16_ok else "fp16") if cuda else "no"
    if requested == "fp16" and not cuda:
        raise TlabError("--precision fp16 needs a GPU (use bf16 or fp32 on CPU)")
    return {"fp32": "no"}.get(requested, requested)


def make_accelerator(cfg: RunConfig, project_dir: Optional[str]):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    cuda = torch.cuda.is_available()
    mixed = resolve_precision(cfg.train.precision, cuda, cuda and torch.cuda.is_bf16_supported())
    launched = int(os.environ.get("WORLD_SIZE", "1"))  # set for each rank by torchrun and accelerate launch
    if not cuda:
        for env, what in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
            if os.environ.get(env, "").lower() in ("1", "true"):
                raise TlabError(f"the accelerate config asks for {what}, which needs CUDA GPUs, and this machine has none "
                                "(for CPU processes use torchrun --nproc_per_node N -m tlab ...)")
    if not torch.distributed.is_initialized():  # accelerate's state is a per-process singleton: let a second run
        from accelerate.state import AcceleratorState, GradientState  # in this process (tests, notebooks) set its own

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    try:
        accelerator = Accelerator(
            # Without a GPU, accelerate forms a (gloo) process group only when told to use the CPU; otherwise
            # every rank of `torchrun --nproc_per_node 2` silently trains alone with world size 1.
            cpu=launched > 1 and not cuda,
            mixed_precision=mixed,  # given explicitly, it wins over an accelerate config file
            gradient_accumulation_steps=cfg.train.grad_accum,
            log_with=trackers.build(cfg, project_dir) if project_dir else None,  # --report-to
            project_dir=project_dir,
            # Samplers yield global batches (per-device x processes) that accelerate splits across ranks, so data
            # order and steps per epoch do not depend on the number of processes.
            # A blocking host-to-GPU copy waits for all queued GPU work: with it the host could neither collate the
            # next batch nor queue the next step while the GPU computes. Batches come from pinned memory on CUDA.
            dataloader_config=DataLoaderConfiguration(split_batches=True, even_batches=True, non_blocking=cuda),
        )
    except (ValueError, RuntimeError) as exc:
        raise TlabError(f"accelerate could not start: {str(exc).splitlines()[0]}") from None
    if launched > 1 and accelerator.num_processes == 1:
        raise TlabError(f"{launched} processes were launched but accelerate formed a group of {accelerator.num_processes} "
                        f"({accelerator.distributed_type}); every rank would train alone")
    return accelerator


def attention_kernels(accelerator):
    """Context for forward passes. Under bf16 on a CPU, PyTorch's fused (flash) SDPA kernel is slow (its backward
    took 13x the fp32 time here) while the math kernel lets the matmuls use the CPU's bf16 units: 1.7x the fp32
    fine-tuning step on an AMX Xeon. Elsewhere the default kernel choice stands."""
    from contextlib import nullcontext

    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "bf16":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    return nullcontext()


def cpu_has_bf16_units() -> bool:
    """AMX (Sapphire Rapids and later): bf16 matmuls ~8x the fp32 rate, so --precision bf16 pays off."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def precision_name(accelerator) -> str:
    return {"no": "fp32"}.get(accelerator.mixed_precision, accelerator.mixed_precision)


@dataclass
class Job:
    """What a task hands to the loop."""

    model: Any
    train_data: Any
    train_batches: Any  # tlab.data.EpochBatches (set_epoch-able batch sampler)
    collate: Callable
    eval_loaders: dict[str, Any]  # split -> DataLoader (not yet prepared)
    evaluate: Callable  # (model, prepared eval loaders, accelerator) -> {metric: value}
    main_metric: str
    greater_is_better: bool
    restore_best: bool = True  # fine-tuning ends on its best checkpoint; pretraining on its last step
    # May return a device tensor: the loop sums it there and reads it only when it logs, so that counting tokens
    # does not wait for the GPU at every step.
    # Files the evaluation leaves beside its scores (name -> JSON data), e.g. QA's predictions.json: the last
    # evaluation's, written by `tlab eval --output` and into a finished run directory.
    artifacts: dict = field(default_factory=dict)
    count_tokens: Callable = lambda batch: batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
    # (model, batch) -> scalar loss, for losses the model does not compute itself (label smoothing); None = its own
    loss: Optional[Callable] = None
    # (model, run, accelerator, eval loaders, final metrics) -> metrics of a replaced final model, or None: the last
    # word on the weights before they are saved (e.g. averaging the last checkpoints)
    finish: Optional[Callable] = None


@dataclass
class FitState:
    """What a checkpoint records besides accelerate's state (trainer_state.json; plain JSON, never a pickle)."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_metric: Optional[float] = None
    best_checkpoint: Optional[str] = None
    best_metrics: Optional[dict] = None
    evals_without_gain: int = 0
    # Totals over every process lifetime of the run, so a resumed run reports the whole run's time and throughput.
    train_seconds: float = 0.0
    tokens: int = 0
    examples: int = 0
    scheduler: Optional[dict] = None


def fit(cfg: RunConfig, job: Job, accelerator, run: RunDir, log: Callable[[str], None]) -> dict[str, Any]:
    """Train `job.model` as cfg.train says; return the final and best evaluation metrics and throughput."""
    if cfg.train.cheap_dropout and accelerator.device.type == "cpu":
        from tlab.cheap_dropout import cheap_dropout

        with cheap_dropout(job.model):
            return _fit(cfg, job, accelerator, run, log)
    return _fit(cfg, job, accelerator, run, log)


def _fit(cfg: RunConfig, job: Job, accelerator, run: RunDir, log: Callable[[str], None]) -> dict[str, Any]:
    from tqdm.auto import tqdm

    tc: TrainConfig = cfg.train
    model = job.model
    if tc.compile:
        model = torch.compile(model, mode=None if tc.compile_mode == "default" else tc.compile_mode)
    # CUDA-graph modes reuse their output buffers: each step must be announced so that the last step's outputs
    # (the loss we still hold) are not taken for live ones.
    cuda_graphs = tc.compile and tc.compile_mode in ("reduce-overhead", "max-autotune")
    # The fused kernel (CPU and CUDA) makes the optimizer step 4x cheaper than the default for-each one on CPU.
    optimizer = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr, fused=True)
    train_loader = torch.utils.data.DataLoader(job.train_data, batch_sampler=job.train_batches, collate_fn=job.collate,
                                               num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available(),
                                               # Its own generator: iterating would otherwise draw a seed from the
                                               # global RNG, which a resumed run restores at a different point.
                                               generator=torch.Generator().manual_seed(tc.seed))
    names = list(job.eval_loaders)
    _check_enough_data(job, accelerator.num_processes)
    ds_plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds_plugin is not None:  # DeepSpeed cannot read the micro-batch size off a batch-sampler loader
        ds_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = tc.batch_size
        ds_plugin.deepspeed_config["gradient_clipping"] = tc.max_grad_norm
    model, optimizer, train_loader, *eval_loaders = accelerator.prepare(model, optimizer, train_loader, *job.eval_loaders.values())
    eval_loaders = dict(zip(names, eval_loaders))

    steps_per_epoch = max(1, math.ceil(len(train_loader) / tc.grad_accum))
    total = tc.max_steps if tc.max_steps > 0 else math.ceil(tc.epochs * steps_per_epoch)
    warmup = int(tc.warmup * total) if tc.warmup < 1 else int(tc.warmup)
    # The scheduler is stepped by us once per optimizer step: accelerate's prepared scheduler would step once per
    # process and decay N times too fast under N processes. Its state goes into trainer_state.json (accelerate
    # would pickle a registered object and unpickle it with weights_only=False).
    from transformers import get_scheduler

    scheduler = get_scheduler({"constant": "constant_with_warmup"}.get(tc.schedule, tc.schedule), optimizer,
                              num_warmup_steps=warmup, num_training_steps=total)

    state = FitState()
    if cfg.resume and run.latest_checkpoint() is not None:
        state = _restore(accelerator, run, scheduler, log)
    elif cfg.resume:
        log(f"{run.path} holds no complete checkpoint (the run stopped before its first one): starting it afresh")
    eval_every = tc.eval_every if tc.eval_every > 0 else steps_per_epoch
    save_every = tc.save_every if tc.save_every > 0 else eval_every
    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0"))
    faults = _faults()
    world = accelerator.num_processes

    if accelerator.is_main_process:
        # After a resume, TensorBoard drops the points a killed run logged past its checkpoint.
        accelerator.init_trackers("tb", init_kwargs={"tensorboard": {"purge_step": state.step + 1}} if state.step else None)
        trackers.start(accelerator, run, trackers.flat(config.to_dict(cfg)), resumed=bool(state.step))
    bar = tqdm(total=total, initial=state.step, disable=not accelerator.is_local_main_process, desc="train", dynamic_ncols=True)
    window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
    all_tokens, all_examples, train_start, pause_seconds = 0, 0, time.perf_counter(), 0.0
    seconds_before, tokens_before, examples_before = state.train_seconds, state.tokens, state.examples
    last_eval: dict[str, float] = {}
    # Divergence is counted on the device (a read would wait for the GPU) and read at log, evaluation and save steps.
    bad_run = torch.zeros((), dtype=torch.long, device=accelerator.device)  # consecutive non-finite steps so far
    worst_run = torch.zeros_like(bad_run)
    step_bad = torch.zeros((), dtype=torch.bool, device=accelerator.device)
    first_bad = torch.zeros_like(bad_run)  # first step of the worst run
    last_save = time.monotonic()
    stop = state.step >= total
    model.train()
    with _sigterm_flag() as terminated, bar:  # the bar is closed before any error line is printed
        while not stop:
            job.train_batches.set_epoch(state.epoch)
            # accelerate re-sets the sampler's epoch from its own counter, which restarts at 0 in a resumed process.
            train_loader.set_epoch(state.epoch)
            batches = train_loader
            if state.batches_in_epoch:
                from accelerate import skip_first_batches

                batches = skip_first_batches(train_loader, state.batches_in_epoch)
            for batch in batches:
                if cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                with accelerator.accumulate(model):
                    loss = job.loss(model, batch) if job.loss is not None else model(**batch).loss
                    if faults.get("nan-from-step", 0) and state.step + 1 >= faults["nan-from-step"]:
                        loss = loss * float("nan")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and tc.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                state.batches_in_epoch += 1
                step_bad |= ~torch.isfinite(loss.detach())
                window_loss += loss.detach().float()
                window_batches += 1
                tokens = job.count_tokens(batch)
                window_tokens += tokens
                all_tokens += tokens
                all_examples += len(batch["input_ids"])
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                state.step += 1
                bar.update(1)
                bad_run = (bad_run + 1) * step_bad
                first_bad = torch.where(bad_run > worst_run, state.step + 1 - bad_run, first_bad)
                worst_run = torch.maximum(worst_run, bad_run)
                step_bad = torch.zeros_like(step_bad)
                _fault(faults, "kill-after-step", state.step)
                if faults.get("term-after-step") == state.step:
                    import signal

                    os.kill(os.getpid(), signal.SIGTERM)

                at_end = state.step >= total
                is_log = state.step % tc.log_every == 0 or at_end
                if is_log:
                    elapsed = time.perf_counter() - window_start
                    mean_loss = accelerator.reduce(window_loss / window_batches, "mean").item()
                    _check_divergence(accelerator, worst_run, first_bad, tc.max_bad_steps)
                    window_tokens = int(window_tokens)
                    tok_s = window_tokens * world / max(elapsed, 1e-9)
                    record = {"step": state.step, "epoch": round(state.epoch + state.batches_in_epoch / len(train_loader), 3),
                              "loss": round(mean_loss, 4), "lr": scheduler.get_last_lr()[0], "tokens_per_s": round(tok_s, 1)}
                    run.log(record)
                    accelerator.log({"train/loss": mean_loss, "train/lr": record["lr"], "train/tokens_per_s": tok_s}, step=state.step)
                    _flush(accelerator)
                    bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tok_s:,.0f}")
                    window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
                # One process checks its own flags at every step; several must agree, so they compare them at log
                # steps (one small collective where the loss is reduced anyway).
                term_now, time_due = bool(terminated), tc.save_minutes > 0 and time.monotonic() - last_save >= 60 * tc.save_minutes
                if world > 1:
                    term_now, time_due = _agree(accelerator, (term_now, time_due)) if is_log else (False, False)

                paused = time.perf_counter()
                def save(is_best: bool) -> None:
                    nonlocal last_save
                    _check_divergence(accelerator, worst_run, first_bad, tc.max_bad_steps, model)
                    state.train_seconds = round(seconds_before + time.perf_counter() - train_start - pause_seconds, 3)
                    state.tokens, state.examples = tokens_before + int(all_tokens) * world, examples_before + all_examples * world
                    _save(accelerator, run, state, scheduler, cfg, is_best, faults)
                    last_save = time.monotonic()

                if state.step % eval_every == 0 or at_end:
                    _check_divergence(accelerator, worst_run, first_bad, tc.max_bad_steps, model)
                    last_eval = job.evaluate(model, eval_loaders, accelerator)
                    model.train()
                    run.log({"step": state.step, "time": time.time(), **{f"eval_{k}": v for k, v in last_eval.items()}})
                    accelerator.log({f"eval/{k}": v for k, v in last_eval.items()}, step=state.step)
                    if accelerator.is_main_process:  # tqdm.write prints even where the bar is disabled
                        bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in last_eval.items()))
                    improved = _track_best(state, last_eval, job)
                    if improved or state.step % save_every == 0 or at_end or time_due or term_now:
                        save(improved)
                    stop = tc.patience > 0 and state.evals_without_gain >= tc.patience
                    if stop and accelerator.is_main_process:
                        bar.write(f"early stop: {job.main_metric} did not improve for {tc.patience} evaluations")
                elif state.step % save_every == 0 or time_due or term_now:
                    save(False)
                paused = time.perf_counter() - paused  # evaluation and saving are not training throughput
                window_start += paused
                pause_seconds += paused
                if term_now and not (at_end or stop):
                    raise Preempted(f"terminated (SIGTERM) at step {state.step}: checkpoint saved; continue with --resume")
                if stop_after and state.step >= stop_after:
                    raise TlabError(f"stopped after step {state.step} ({STOP_AFTER_ENV}); continue with --resume")
                if at_end or stop:
                    stop = True
                    break
            else:
                state.epoch += 1
                state.batches_in_epoch = 0
    if not last_eval and state.step and job.eval_loaders and not (job.restore_best and state.best_metrics):
        # resumed after its last step (e.g. killed while saving the model): score what will be saved
        last_eval = job.evaluate(model, eval_loaders, accelerator)
    seconds = seconds_before + time.perf_counter() - train_start - pause_seconds
    final = last_eval
    if job.restore_best and state.best_checkpoint and state.best_checkpoint != f"step-{state.step}":
        _load_checkpoint(accelerator, run.path / "checkpoints" / state.best_checkpoint)  # keep the best model
        final = state.best_metrics or last_eval
    if job.finish is not None and state.step:
        replaced = job.finish(model, run, accelerator, eval_loaders, final)
        if replaced is not None:
            final = replaced
    _flush(accelerator)  # the trackers end in the pipeline, once the saved model and its card are logged
    # Under FSDP each rank holds a shard: gather the full weights (a collective, so on every rank) for saving.
    sharded = accelerator.distributed_type.name == "FSDP"
    tokens, examples = tokens_before + int(all_tokens) * world, examples_before + all_examples * world
    return {
        "state_dict": accelerator.get_state_dict(model) if sharded else None,
        "steps": state.step,
        "epochs": round(state.epoch + state.batches_in_epoch / max(1, len(train_loader)), 3),
        "final": final,  # the metrics of the saved model (the best checkpoint's when fine-tuning restored it)
        **({"last_eval": last_eval} if final is not last_eval else {}),
        "best": {"checkpoint": state.best_checkpoint, job.main_metric: state.best_metric} if job.main_metric else {},
        "train_seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        "samples_per_s": round(examples / max(seconds, 1e-9), 2),
        "model": accelerator.unwrap_model(model),
    }


def _check_enough_data(job: Job, processes: int) -> None:
    """Every rank needs a share of each batch: with fewer examples than processes a rank would get an empty batch
    and the others would wait for it in a collective. Checked on every rank, before any collective."""
    sizes = {"training": len(job.train_data), **{f"{name} evaluation": len(loader.dataset) for name, loader in job.eval_loaders.items()}}
    for what, size in sizes.items():
        if size < processes:
            raise TlabError(f"the {what} data has {size} example(s), fewer than the {processes} processes sharing it: "
                            "launch fewer processes or give more data")


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _track_best(state: FitState, metrics: dict[str, float], job: Job) -> bool:
    """Whether this evaluation is the best so far. A tie moves "best" to the newer checkpoint (so the model saved
    is the one whose metrics are reported last) without counting as a gain for early stopping; a non-finite value
    is never best."""
    value = metrics.get(job.main_metric)
    if value is None or not math.isfinite(value):
        state.evals_without_gain += value is not None
        return False
    better = state.best_metric is None or (value > state.best_metric if job.greater_is_better else value < state.best_metric)
    if better or value == state.best_metric:
        state.best_checkpoint, state.best_metrics = f"step-{state.step}", dict(metrics)
    if better:
        state.best_metric, state.evals_without_gain = value, 0
    else:
        state.evals_without_gain += 1
    return better or value == state.best_metric


def _check_divergence(accelerator, worst_run, first_bad, limit: int, model=None) -> None:
    """Stop when the loss was non-finite for `limit` consecutive steps or, before anything is saved, when any
    weight is: a checkpoint or model of NaNs must never exist. Reads the device counters (a sync: only at log,
    evaluation and save steps)."""
    worst, first = (int(v) for v in accelerator.reduce(torch.stack([worst_run, first_bad]), "max").tolist())
    if worst >= limit:
        raise Diverged(f"training diverged: the loss was not finite for {worst} consecutive steps from step {first} "
                       f"(train.max_bad_steps={limit}); nothing was saved after it — lower --lr or check the data, then "
                       "resume from the newest checkpoint or start again")
    if model is not None:
        bad = torch.zeros((), device=accelerator.device)
        for param in model.parameters():
            bad += (~torch.isfinite(param.detach())).any()
        if accelerator.reduce(bad, "sum").item() > 0:
            raise Diverged(f"training diverged: weights are not finite{f' (the loss was not finite from step {first})' if worst else ''}; "
                           "nothing was saved from this point — lower --lr, then resume from the newest checkpoint or start again")


def _flush(accelerator) -> None:
    """TensorBoard buffers events for up to two minutes: flushed at each log step, a killed run keeps its curve
    and people watching a live run see it current."""
    for tracker in accelerator.trackers:
        writer = getattr(tracker, "writer", None)
        if writer is not None and hasattr(writer, "flush"):
            writer.flush()


def _agree(accelerator, flags: tuple[bool, ...]) -> tuple[bool, ...]:
    """Any rank's flag counts for all (max over ranks), so every rank takes the same branch into collectives."""
    values = accelerator.reduce(torch.tensor([float(f) for f in flags], device=accelerator.device), "sum").tolist()
    return tuple(v > 0 for v in values)


class _Flag:
    def __init__(self):
        self.value = False

    def __bool__(self) -> bool:
        return self.value


@contextmanager
def _sigterm_flag():
    """SIGTERM (Slurm, Kubernetes) -> a flag the loop reads at the next step boundary, where it saves a checkpoint
    and stops. Only the main thread can install handlers; elsewhere SIGTERM keeps its default."""
    import signal
    import threading

    flag = _Flag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag.value = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def _faults() -> dict[str, int]:
    found = {}
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        point, _, step = item.partition(":")
        found[point.strip()] = int(step)
    return found


def fault(point: str, step: int) -> None:
    """A fault injection point outside the loop (see FAULT_ENV)."""
    _fault(_faults(), point, step)


def _fault(faults: dict[str, int], point: str, step: int) -> None:
    if faults.get(point) == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _save(accelerator, run: RunDir, state: FitState, scheduler, cfg: RunConfig, is_best: bool, faults=None) -> None:
    tmp = run.checkpoint_tmp(state.step)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        _save_rng(tmp, accelerator.process_index)
        accelerator.wait_for_everyone()
        _fault(faults or {}, "kill-in-save", state.step)
        if accelerator.is_main_process:
            state.scheduler = scheduler.state_dict()
            run.commit_checkpoint(state.step, state.__dict__, cfg.train.keep_checkpoints, protect=state.best_checkpoint,
                                  while_pruning=lambda: _fault(faults or {}, "kill-in-prune", state.step))
    except Exception as exc:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # a partial checkpoint would keep the disk full
        full = out_of_space(exc, tmp)
        if full is not None:
            raise full from None
        raise
    accelerator.wait_for_everyone()


def _save_rng(directory, rank: int) -> None:
    """Random states as safetensors + JSON instead of accelerate's pickle (random_states_N.pkl)."""
    import json
    import random
    from pathlib import Path

    import numpy as np
    from safetensors.torch import save_file

    directory = Path(directory)
    (directory / f"random_states_{rank}.pkl").unlink(missing_ok=True)
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, py_gauss = random.getstate()
    meta = {"numpy": json.dumps([kind, int(pos), int(has_gauss), float(gauss)]),
            "python": json.dumps([version, list(py_state), py_gauss])}
    save_file(tensors, str(directory / RNG_FILE.format(rank)), metadata=meta)


def _load_rng(directory, rank: int) -> None:
    import json
    import random
    from pathlib import Path

    import numpy as np
    from safetensors import safe_open

    path = Path(directory) / RNG_FILE.format(rank)
    if not path.is_file():
        raise TlabError(f"checkpoint {directory} has no {path.name} (random states) for process {rank}; resume it with "
                        "the number of processes it was saved with")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
            torch.set_rng_state(handle.get_tensor("torch"))
            cuda = sorted(k for k in handle.keys() if k.startswith("cuda_"))
            if cuda and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([handle.get_tensor(k) for k in cuda])
            keys = handle.get_tensor("numpy_keys").numpy().astype(np.uint32)
        kind, pos, has_gauss, gauss = json.loads(meta["numpy"])
        np.random.set_state((kind, keys, pos, has_gauss, gauss))
        version, py_state, py_gauss = json.loads(meta["python"])
        random.setstate((version, tuple(py_state), py_gauss))
    except Exception as exc:  # safetensors and numpy raise several types for a damaged file
        raise TlabError(f"checkpoint {directory}: {path.name} is not a valid random-state file ({type(exc).__name__}); "
                        "resume from an earlier checkpoint or start again") from None


def _load_checkpoint(accelerator, checkpoint) -> None:
    """accelerate's load_state reads weights from safetensors and every other file with torch.load(weights_only=True)
    (tensors and plain containers only: no code runs); a file that is not that is refused, not trusted."""
    from pathlib import Path

    pickles = sorted(p.name for p in Path(checkpoint).glob("*.pkl"))
    if pickles:
        # tlab writes no pickles; accelerate would unpickle registered objects (custom_checkpoint_N.pkl) with
        # weights_only=False, and tlab < 0.2 saved its scheduler that way
        raise TlabError(f"checkpoint {checkpoint} holds pickled files ({', '.join(pickles)}; from tlab < 0.2 or "
                        "planted), which tlab does not load: start the run again")
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as exc:
        raise TlabError(f"checkpoint {checkpoint} cannot be loaded safely ({type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0][:160]}); resume from an earlier one or start again") from None


def _restore(accelerator, run: RunDir, scheduler, log) -> FitState:
    import json

    run.remove_partial_checkpoints()
    checkpoint = run.latest_checkpoint()
    _load_checkpoint(accelerator, checkpoint)
    _load_rng(checkpoint, accelerator.process_index)
    try:
        state = FitState(**json.loads((checkpoint / STATE_FILE).read_text()))
        if state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
    except (ValueError, TypeError, KeyError) as exc:
        raise TlabError(f"checkpoint {checkpoint}: {STATE_FILE} is not a tlab trainer state ({exc})") from None
    run.rewind_log(state.step)
    log(f"resuming from {checkpoint} (step {state.step}, epoch {state.epoch}, batch {state.batches_in_epoch})")
    return state
