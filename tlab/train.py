"""The one training loop, on accelerate: devices, precision, accumulation, distributed runs and checkpoint
state come from accelerate; this file is the loop on top — accumulate, backward, clip, step, schedule,
then log / evaluate / checkpoint every N steps, with exact resume.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from tlab import checkpoints, config, faults, finetuning, trackers
from tlab.config import RunConfig, TrainConfig
from tlab.errors import Diverged, Preempted, TlabError
from tlab.outputs import RunDir

if TYPE_CHECKING:  # the loop sits below the tasks: their contract is only a type here
    from tlab.tasks.contract import Job


@dataclass
class FitState:
    """What a checkpoint records besides accelerate's state (trainer_state.json; plain JSON, never a pickle)."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_metric: Optional[float] = None
    best_metric_name: Optional[str] = None  # what best_metric measures (train.best_metric may change on --resume)
    best_checkpoint: Optional[str] = None
    best_metrics: Optional[dict] = None
    evals_without_gain: int = 0
    # Totals over every process lifetime of the run, so a resumed run reports the whole run's time and throughput.
    train_seconds: float = 0.0
    tokens: int = 0
    examples: int = 0
    scheduler: Optional[dict] = None


Report = Callable[[int, dict, str], None]  # (step, evaluation metrics, the job's main metric)


def fit(cfg: RunConfig, job: Job, accelerator, run: RunDir, log: Callable[[str], None],
        report: Optional[Report] = None) -> dict[str, Any]:
    """Train `job.model` as cfg.train says; return the final and best evaluation metrics and throughput.
    `report(step, metrics, main_metric)` is called after each evaluation but the last, once the step's checkpoint
    (if it has one) is saved: tlab sweep's pruner, which may raise `tlab.errors.Pruned` to stop the run there."""
    if cfg.train.cheap_dropout and accelerator.device.type == "cpu":
        from tlab.cheap_dropout import cheap_dropout

        with cheap_dropout(job.model):
            return _fit(cfg, job, accelerator, run, log, report)
    return _fit(cfg, job, accelerator, run, log, report)


def _fit(cfg: RunConfig, job: Job, accelerator, run: RunDir, log: Callable[[str], None],
         report: Optional[Report]) -> dict[str, Any]:
    from tqdm.auto import tqdm

    tc: TrainConfig = cfg.train
    model, optimizer, scheduler, train_loader, eval_loaders, steps_per_epoch, total = _prepare(cfg, job, accelerator)
    # CUDA-graph modes reuse their output buffers: each step must be announced so that the last step's outputs
    # (the loss we still hold) are not taken for live ones.
    cuda_graphs = tc.compile and tc.compile_mode in ("reduce-overhead", "max-autotune")
    state = _start_state(cfg, accelerator, run, scheduler, log)
    eval_every = tc.eval_every if tc.eval_every > 0 else steps_per_epoch
    save_every = tc.save_every if tc.save_every > 0 else eval_every
    injected = faults.from_env()
    _start_trackers(cfg, accelerator, run, state)
    bar = tqdm(total=total, initial=state.step, disable=not accelerator.is_local_main_process, desc="train", dynamic_ncols=True)
    throughput = Throughput(state, accelerator.num_processes)
    divergence = Divergence(accelerator, tc.max_bad_steps)
    saver = Saver(accelerator, run, state, scheduler, tc, model, divergence, throughput, injected)
    last_eval: dict[str, float] = {}
    stop = state.step >= total
    model.train()
    with _sigterm_flag() as terminated, bar:  # the bar is closed before any error line is printed
        while not stop:
            for batch in _epoch_batches(job, train_loader, state):
                if cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                with accelerator.accumulate(model):
                    loss = job.loss(model, batch) if job.loss is not None else model(**batch).loss
                    loss = injected.poison_loss(loss, state.step + 1)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and tc.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                state.batches_in_epoch += 1
                divergence.add(loss)
                throughput.add(loss, job.count_tokens(batch), len(batch["input_ids"]))
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                state.step += 1
                bar.update(1)
                divergence.end_step(state.step)
                injected.after_step(state.step)

                at_end = state.step >= total
                is_log = state.step % tc.log_every == 0 or at_end
                if is_log:
                    _log_step(accelerator, run, bar, state, scheduler, throughput, divergence, len(train_loader),
                              tc.head_lr_scale)
                term_now, time_due = _stop_requests(accelerator, terminated, saver, is_log)
                with throughput.paused():  # evaluation and saving are not training throughput
                    if state.step % eval_every == 0 or at_end:
                        last_eval = _evaluate(job, model, eval_loaders, accelerator, run, bar, state, divergence)
                        improved = _track_best(state, last_eval, job)
                        if improved or state.step % save_every == 0 or at_end or time_due or term_now:
                            saver.save()
                        if report is not None and not at_end:  # the last evaluation is the run's result
                            report(state.step, last_eval, job.main_metric)
                        stop = tc.patience > 0 and state.evals_without_gain >= tc.patience
                        if stop and accelerator.is_main_process:
                            bar.write(f"early stop: {job.main_metric} did not improve for {tc.patience} evaluations")
                    elif state.step % save_every == 0 or time_due or term_now:
                        saver.save()
                if term_now and not (at_end or stop):
                    raise Preempted(f"terminated (SIGTERM) at step {state.step}: checkpoint saved; continue with --resume")
                injected.end_of_step(state.step)
                if at_end or stop:
                    stop = True
                    break
            else:
                state.epoch += 1
                state.batches_in_epoch = 0
    return _finish(job, model, eval_loaders, accelerator, run, state, last_eval, throughput, len(train_loader))


def _prepare(cfg: RunConfig, job: Job, accelerator):
    """The model (compiled if asked), optimizer, loaders and scheduler, prepared by accelerate, with the number of
    optimizer steps per epoch and in the run."""
    tc: TrainConfig = cfg.train
    model = job.model
    if tc.compile:
        model = torch.compile(model, mode=None if tc.compile_mode == "default" else tc.compile_mode)
    # The fused kernel (CPU and CUDA) makes the optimizer step cheaper than the default for-each one on CPU (see
    # BENCHMARKS.md).
    groups = _param_groups(job.model, tc.weight_decay, tc.lr, tc.layer_lr_decay, tc.head_lr_scale)
    optimizer = torch.optim.AdamW(groups, lr=tc.lr, fused=True)
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
    return model, optimizer, scheduler, train_loader, eval_loaders, steps_per_epoch, total


def _start_state(cfg: RunConfig, accelerator, run: RunDir, scheduler, log: Callable[[str], None]) -> FitState:
    if cfg.resume and run.latest_checkpoint() is not None:
        state = checkpoints.restore(accelerator, run, scheduler, FitState, log)
        run.config_resumed()
        return state
    if cfg.resume:
        log(f"{run.path} holds no complete checkpoint (the run stopped before its first one): starting it afresh")
        run.config_resumed()
    return FitState()


def _start_trackers(cfg: RunConfig, accelerator, run: RunDir, state: FitState) -> None:
    if accelerator.is_main_process:
        # After a resume, TensorBoard drops the points a killed run logged past its checkpoint.
        accelerator.init_trackers("tb", init_kwargs={"tensorboard": {"purge_step": state.step + 1}} if state.step else None)
        trackers.start(accelerator, run, trackers.flat(config.to_dict(cfg)), resumed=bool(state.step))


def _epoch_batches(job: Job, train_loader, state: FitState):
    """The rest of epoch `state.epoch`: the batches a resumed run has not yet trained on."""
    job.train_batches.set_epoch(state.epoch)
    # accelerate re-sets the sampler's epoch from its own counter, which restarts at 0 in a resumed process.
    train_loader.set_epoch(state.epoch)
    if state.batches_in_epoch:
        from accelerate import skip_first_batches

        return skip_first_batches(train_loader, state.batches_in_epoch)
    return train_loader


class Throughput:
    """Training time, tokens and examples: the log window's and the whole run's, over every process lifetime.
    Evaluating and saving are left out of the time; token counts stay where `count_tokens` puts them (the device)
    until a log or save step reads them."""

    def __init__(self, state: FitState, world: int):
        self.world = world
        self.new_window()
        self.tokens, self.examples, self.start, self.paused_seconds = 0, 0, time.perf_counter(), 0.0
        # what the run's earlier process lifetimes did (zero in a fresh run)
        self.seconds_before, self.tokens_before, self.examples_before = state.train_seconds, state.tokens, state.examples

    def new_window(self) -> None:
        self.window_loss, self.window_batches, self.window_tokens, self.window_start = 0.0, 0, 0, time.perf_counter()

    def add(self, loss, tokens, examples: int) -> None:
        self.window_loss += loss.detach().float()
        self.window_batches += 1
        self.window_tokens += tokens
        self.tokens += tokens
        self.examples += examples

    @contextmanager
    def paused(self):
        start = time.perf_counter()
        yield
        paused = time.perf_counter() - start
        self.window_start += paused
        self.paused_seconds += paused

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start - self.paused_seconds

    def totals(self) -> tuple[int, int]:
        """(tokens, examples) of the whole run, on all processes."""
        return self.tokens_before + int(self.tokens) * self.world, self.examples_before + self.examples * self.world

    def record(self, state: FitState) -> None:
        state.train_seconds = round(self.seconds(), 3)
        state.tokens, state.examples = self.totals()


class Divergence:
    """Non-finite losses, counted on the device (a read would wait for the GPU) and read only at log, evaluation
    and save steps."""

    def __init__(self, accelerator, limit: int):
        self.accelerator, self.limit = accelerator, limit
        self.bad_run = torch.zeros((), dtype=torch.long, device=accelerator.device)  # consecutive non-finite steps so far
        self.worst_run = torch.zeros_like(self.bad_run)
        self.step_bad = torch.zeros((), dtype=torch.bool, device=accelerator.device)
        self.first_bad = torch.zeros_like(self.bad_run)  # first step of the worst run

    def add(self, loss) -> None:
        self.step_bad |= ~torch.isfinite(loss.detach())

    def end_step(self, step: int) -> None:
        self.bad_run = (self.bad_run + 1) * self.step_bad
        self.first_bad = torch.where(self.bad_run > self.worst_run, step + 1 - self.bad_run, self.first_bad)
        self.worst_run = torch.maximum(self.worst_run, self.bad_run)
        self.step_bad = torch.zeros_like(self.step_bad)

    def check(self, model=None) -> None:
        """Stop when the loss was non-finite for `limit` consecutive steps or, before anything is saved, when any
        weight is: a checkpoint or model of NaNs must never exist."""
        accelerator, limit = self.accelerator, self.limit
        worst, first = (int(v) for v in accelerator.reduce(torch.stack([self.worst_run, self.first_bad]), "max").tolist())
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


class Saver:
    """Writes the run's checkpoints, never one of non-finite weights, with the run's totals so far in its state."""

    def __init__(self, accelerator, run: RunDir, state: FitState, scheduler, tc: TrainConfig, model,
                 divergence: Divergence, throughput: Throughput, injected: faults.Faults):
        self.accelerator, self.run, self.state, self.scheduler, self.model = accelerator, run, state, scheduler, model
        self.keep, self.save_minutes = tc.keep_checkpoints, tc.save_minutes
        self.divergence, self.throughput, self.injected = divergence, throughput, injected
        self.last = time.monotonic()

    def time_due(self) -> bool:
        return self.save_minutes > 0 and time.monotonic() - self.last >= 60 * self.save_minutes

    def save(self) -> None:
        self.divergence.check(self.model)
        self.throughput.record(self.state)
        checkpoints.save(self.accelerator, self.run, self.state, self.scheduler, self.keep, self.injected)
        self.last = time.monotonic()


def _log_step(accelerator, run: RunDir, bar, state: FitState, scheduler, throughput: Throughput,
              divergence: Divergence, epoch_batches: int, head_lr_scale: float = 1.0) -> None:
    elapsed = time.perf_counter() - throughput.window_start
    mean_loss = accelerator.reduce(throughput.window_loss / throughput.window_batches, "mean").item()
    divergence.check()
    tok_s = int(throughput.window_tokens) * throughput.world / max(elapsed, 1e-9)
    record = {"step": state.step, "epoch": round(state.epoch + state.batches_in_epoch / epoch_batches, 3),
              # train.lr as scheduled: the first group is the head's, which may run at a multiple of it
              "loss": round(mean_loss, 4), "lr": scheduler.get_last_lr()[0] / head_lr_scale, "tokens_per_s": round(tok_s, 1)}
    run.log(record)
    accelerator.log({"train/loss": mean_loss, "train/lr": record["lr"], "train/tokens_per_s": tok_s}, step=state.step)
    _flush(accelerator)
    bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tok_s:,.0f}")
    throughput.new_window()


def _stop_requests(accelerator, terminated, saver: Saver, is_log: bool) -> tuple[bool, bool]:
    """(SIGTERM received, a checkpoint due by time). One process checks its own flags at every step; several must
    agree, so they compare them at log steps (one small collective where the loss is reduced anyway)."""
    term_now, time_due = bool(terminated), saver.time_due()
    if accelerator.num_processes > 1:
        return _agree(accelerator, (term_now, time_due)) if is_log else (False, False)
    return term_now, time_due


def _evaluate(job: Job, model, eval_loaders, accelerator, run: RunDir, bar, state: FitState,
              divergence: Divergence) -> dict[str, float]:
    divergence.check(model)
    metrics = job.evaluate(model, eval_loaders, accelerator)
    model.train()
    run.log({"step": state.step, "time": time.time(), **{f"eval_{k}": v for k, v in metrics.items()}})
    accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.step)
    if accelerator.is_main_process:  # tqdm.write prints even where the bar is disabled
        bar.write(f"step {state.step}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return metrics


def _finish(job: Job, model, eval_loaders, accelerator, run: RunDir, state: FitState, last_eval: dict,
            throughput: Throughput, epoch_batches: int) -> dict[str, Any]:
    """The run's result: the model to save (the best checkpoint's where fine-tuning keeps it), its metrics and the
    whole run's throughput."""
    if not last_eval and state.step and job.eval_loaders and not (job.restore_best and state.best_metrics):
        # resumed after its last step (e.g. killed while saving the model): score what will be saved
        last_eval = job.evaluate(model, eval_loaders, accelerator)
    seconds = throughput.seconds()
    final = last_eval
    if job.restore_best and state.best_checkpoint and state.best_checkpoint != f"step-{state.step}":
        checkpoints.load(accelerator, run.path / "checkpoints" / state.best_checkpoint)  # keep the best model
        final = state.best_metrics or last_eval
        if (job.artifacts or job.outcomes) and job.finish is None:
            # the files written beside the scores (predictions, translations, summaries, per-example outcomes) are
            # the last evaluation's: make them the saved model's (job.finish evaluates what it keeps itself)
            job.evaluate(model, eval_loaders, accelerator)
    if job.finish is not None and state.step:
        replaced = job.finish(model, run, accelerator, eval_loaders, final)
        if replaced is not None:
            final = replaced
    _flush(accelerator)  # the trackers end in the pipeline, once the saved model and its card are logged
    # Under FSDP each rank holds a shard: gather the full weights (a collective, so on every rank) for saving.
    sharded = accelerator.distributed_type.name == "FSDP"
    tokens, examples = throughput.totals()
    return {
        "state_dict": accelerator.get_state_dict(model) if sharded else None,
        "steps": state.step,
        "epochs": round(state.epoch + state.batches_in_epoch / max(1, epoch_batches), 3),
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


def _param_groups(model, weight_decay: float, lr: float, layer_lr_decay: float = 1.0, head_lr_scale: float = 1.0):
    """AdamW groups: weight decay on matrices only, and with layer-wise decay or a head rate one group per (depth,
    decayed or not)."""
    depths = finetuning.layer_depths(model) if layer_lr_decay < 1 or head_lr_scale != 1 else {}
    top = max(depths.values(), default=0)
    groups: dict[tuple[int, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decayed = not (param.ndim < 2 or "norm" in name.lower())
        groups.setdefault((depths.get(id(param), top), decayed), []).append(param)
    return [{"params": params, "weight_decay": weight_decay if decayed else 0.0,
             "lr": lr * layer_lr_decay ** (top - depth) * (head_lr_scale if depth == top else 1.0)}
            for (depth, decayed), params in sorted(groups.items(), key=lambda item: (-item[0][0], not item[0][1]))]


def _track_best(state: FitState, metrics: dict[str, float], job: Job) -> bool:
    """Whether this evaluation is the best so far. A tie moves "best" to the newer checkpoint (so the model saved
    is the one whose metrics are reported last) without counting as a gain for early stopping; a non-finite value
    is never best."""
    if state.best_metric_name not in (None, job.main_metric):  # resumed with another train.best_metric: re-judge
        state.best_metric = (state.best_metrics or {}).get(job.main_metric)
    state.best_metric_name = job.main_metric
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

