"""The one training loop, on accelerate: devices, precision, accumulation, distributed runs and checkpoint
state come from accelerate; this file is the loop on top — accumulate, backward, clip, step, schedule,
then log / evaluate / checkpoint every N steps, with exact resume.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from tlab.config import RunConfig, TrainConfig
from tlab.errors import TlabError
from tlab.outputs import STATE_FILE, RunDir

# Tests simulate a crash after this optimizer step (once its checkpoint is written) to check --resume.
STOP_AFTER_ENV = "TLAB_STOP_AFTER_STEP"


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
            log_with="tensorboard" if project_dir else None,
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
    count_tokens: Callable = lambda batch: batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()


@dataclass
class FitState:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_metric: Optional[float] = None
    best_checkpoint: Optional[str] = None
    evals_without_gain: int = 0


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
    # process and decay N times too fast under N processes.
    from transformers import get_scheduler

    scheduler = get_scheduler({"constant": "constant_with_warmup"}.get(tc.schedule, tc.schedule), optimizer,
                              num_warmup_steps=warmup, num_training_steps=total)
    accelerator.register_for_checkpointing(scheduler)

    state = FitState()
    if cfg.resume:
        state = _restore(accelerator, run, log)
    eval_every = tc.eval_every if tc.eval_every > 0 else steps_per_epoch
    save_every = tc.save_every if tc.save_every > 0 else eval_every
    stop_after = int(os.environ.get(STOP_AFTER_ENV, "0"))

    if accelerator.is_main_process:
        accelerator.init_trackers("tb")
    bar = tqdm(total=total, initial=state.step, disable=not accelerator.is_local_main_process, desc="train", dynamic_ncols=True)
    window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
    all_tokens, all_examples, train_start, pause_seconds = 0, 0, time.perf_counter(), 0.0
    last_eval: dict[str, float] = {}
    stop = state.step >= total
    model.train()
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
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and tc.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batches_in_epoch += 1
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

            if state.step % tc.log_every == 0 or state.step == total:
                elapsed = time.perf_counter() - window_start
                mean_loss = accelerator.reduce(window_loss / window_batches, "mean").item()
                window_tokens = int(window_tokens)
                tok_s = window_tokens * accelerator.num_processes / max(elapsed, 1e-9)
                record = {"step": state.step, "epoch": round(state.epoch + state.batches_in_epoch / len(train_loader), 3),
                          "loss": round(mean_loss, 4), "lr": scheduler.get_last_lr()[0], "tokens_per_s": round(tok_s, 1)}
                run.log(record)
                accelerator.log({"train/loss": mean_loss, "train/lr": record["lr"], "train/tokens_per_s": tok_s}, step=state.step)
                bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tok_s:,.0f}")
                window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()

            at_end = state.step >= total
            paused = time.perf_counter()
            if state.step % eval_every == 0 or at_end:
                last_eval = job.evaluate(model, eval_loaders, accelerator)
                model.train()
                run.log({"step": state.step, **{f"eval_{k}": v for k, v in last_eval.items()}})
                accelerator.log({f"eval/{k}": v for k, v in last_eval.items()}, step=state.step)
                if accelerator.is_main_process:  # tqdm.write prints even where the bar is disabled
                    bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in last_eval.items()))
                improved = _track_best(state, last_eval, job)
                if improved or state.step % save_every == 0 or at_end:
                    _save(accelerator, run, state, cfg, improved)
                stop = tc.patience > 0 and state.evals_without_gain >= tc.patience
                if stop and accelerator.is_main_process:
                    bar.write(f"early stop: {job.main_metric} did not improve for {tc.patience} evaluations")
            elif state.step % save_every == 0:
                _save(accelerator, run, state, cfg, False)
            paused = time.perf_counter() - paused  # evaluation and saving are not training throughput
            window_start += paused
            pause_seconds += paused
            if stop_after and state.step >= stop_after:
                raise TlabError(f"stopped after step {state.step} ({STOP_AFTER_ENV}); continue with --resume")
            if at_end or stop:
                stop = True
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    bar.close()
    seconds = time.perf_counter() - train_start - pause_seconds
    if job.restore_best and state.best_checkpoint and state.best_checkpoint != f"step-{state.step}":
        accelerator.load_state(str(run.path / "checkpoints" / state.best_checkpoint))  # keep the best model
    for tracker in accelerator.trackers:  # not end_training(): it destroys the process group the caller still needs
        tracker.finish()
    world = accelerator.num_processes
    # Under FSDP each rank holds a shard: gather the full weights (a collective, so on every rank) for saving.
    sharded = accelerator.distributed_type.name == "FSDP"
    return {
        "state_dict": accelerator.get_state_dict(model) if sharded else None,
        "steps": state.step,
        "epochs": round(state.epoch + state.batches_in_epoch / max(1, len(train_loader)), 3),
        "final": last_eval,
        "best": {"checkpoint": state.best_checkpoint, job.main_metric: state.best_metric} if job.main_metric else {},
        "train_seconds": round(seconds, 2),
        "tokens_per_s": round(int(all_tokens) * world / max(seconds, 1e-9), 1),
        "samples_per_s": round(all_examples * world / max(seconds, 1e-9), 2),
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
    value = metrics.get(job.main_metric)
    if value is None:
        return False
    better = state.best_metric is None or (value > state.best_metric if job.greater_is_better else value < state.best_metric)
    if better:
        state.best_metric, state.evals_without_gain = value, 0
        state.best_checkpoint = f"step-{state.step}"
    else:
        state.evals_without_gain += 1
    return better


def _save(accelerator, run: RunDir, state: FitState, cfg: RunConfig, is_best: bool) -> None:
    tmp = run.checkpoint_tmp(state.step)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run.commit_checkpoint(state.step, state.__dict__, cfg.train.keep_checkpoints, protect=state.best_checkpoint)
    accelerator.wait_for_everyone()


def _restore(accelerator, run: RunDir, log) -> FitState:
    import json

    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise TlabError(f"--resume: {run.path} holds no complete checkpoint to continue from")
    accelerator.load_state(str(checkpoint))
    state = FitState(**json.loads((checkpoint / STATE_FILE).read_text()))
    log(f"resuming from {checkpoint} (step {state.step}, epoch {state.epoch}, batch {state.batches_in_epoch})")
    return state
