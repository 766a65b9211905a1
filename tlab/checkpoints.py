"""Checkpoints of a run: accelerate's state (model, optimizer, scaler) plus tlab's own files, the trainer state as
plain JSON and the random states as safetensors. Nothing here writes or reads a pickle.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Callable

import torch

from tlab import faults
from tlab.errors import TlabError
from tlab.outputs import STATE_FILE, RunDir, out_of_space

RNG_FILE = "rng_state_{}.safetensors"


def save(accelerator, run: RunDir, state, scheduler, keep: int, injected: faults.Faults = faults.NONE) -> None:
    """Write step `state.step`'s checkpoint (every rank) and commit it (rank 0), keeping the newest `keep` and the
    best. `state`: the loop's FitState, stored as trainer_state.json with the scheduler's state."""
    tmp = run.checkpoint_tmp(state.step)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        save_rng(tmp, accelerator.process_index)
        accelerator.wait_for_everyone()
        injected.in_save(state.step)
        if accelerator.is_main_process:
            state.scheduler = scheduler.state_dict()
            run.commit_checkpoint(state.step, state.__dict__, keep, protect=state.best_checkpoint,
                                  while_pruning=lambda: injected.in_prune(state.step))
    except Exception as exc:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # a partial checkpoint would keep the disk full
        full = out_of_space(exc, tmp)
        if full is not None:
            raise full from None
        raise
    accelerator.wait_for_everyone()


def restore(accelerator, run: RunDir, scheduler, make_state: Callable, log: Callable[[str], None]):
    """Load the newest complete checkpoint into the accelerator's objects, the RNGs and `scheduler`; return
    `make_state(**trainer_state.json)`."""
    run.remove_partial_checkpoints()
    checkpoint = run.latest_checkpoint()
    load(accelerator, checkpoint)
    load_rng(checkpoint, accelerator.process_index)
    try:
        state = make_state(**json.loads((checkpoint / STATE_FILE).read_text()))
        if state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
    except (ValueError, TypeError, KeyError) as exc:
        raise TlabError(f"checkpoint {checkpoint}: {STATE_FILE} is not a tlab trainer state ({exc})") from None
    run.rewind_log(state.step)
    log(f"resuming from {checkpoint} (step {state.step}, epoch {state.epoch}, batch {state.batches_in_epoch})")
    return state


def load(accelerator, checkpoint) -> None:
    """accelerate's load_state reads weights from safetensors and every other file with torch.load(weights_only=True)
    (tensors and plain containers only: no code runs); a file that is not that is refused, not trusted."""
    pickles = sorted(p.name for p in Path(checkpoint).glob("*.pkl"))
    if pickles:
        # tlab writes no pickles; accelerate would unpickle registered objects (custom_checkpoint_N.pkl) with
        # weights_only=False, and tlab < 0.2 saved its scheduler that way
        raise TlabError(f"checkpoint {checkpoint} holds pickled files ({', '.join(pickles)}; from tlab < 0.2 or "
                        "planted), which tlab does not load: start the run again")
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as exc:
        if isinstance(exc, ValueError) and "parameter group" in str(exc):
            # the optimizer's groups follow the rate options: a change of them (or of their task default) since the
            # run started regroups the same weights, and torch matches saved state to groups by position
            raise TlabError(f"checkpoint {checkpoint} was saved with other optimizer parameter groups: resume with the "
                            "run's own train.head_lr_scale, train.layer_lr_decay, model.freeze and LoRA settings (--resume "
                            "reads them from its config.yaml unless the command sets them)") from None
        raise TlabError(f"checkpoint {checkpoint} cannot be loaded safely ({type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0][:160]}); resume from an earlier one or start again") from None


def save_rng(directory, rank: int) -> None:
    """Random states as safetensors + JSON instead of accelerate's pickle (random_states_N.pkl)."""
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


def load_rng(directory, rank: int) -> None:
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
