"""Where a run executes: the accelerator (devices, processes, precision), the attention kernels and the
libraries' own output. Importing this module loads no model library: `tlab --help` reaches it through the pipeline.
"""

from __future__ import annotations

import os
from typing import Optional

from tlab import trackers
from tlab.config import RunConfig
from tlab.errors import TlabError


def resolve_precision(requested: str, cuda: bool, bf16_ok: bool) -> str:
    """tlab precision -> accelerate mixed_precision. auto: bf16 where the GPU has it, fp16 (loss-scaled) on
    older GPUs, fp32 on CPU, where bf16 autocast is slower than fp32 on most machines."""
    if requested == "auto":
        return ("bf16" if bf16_ok else "fp16") if cuda else "no"
    if requested == "fp16" and not cuda:
        raise TlabError("--precision fp16 needs a GPU (use bf16 or fp32 on CPU)")
    return {"fp32": "no"}.get(requested, requested)


def make_accelerator(cfg: RunConfig, project_dir: Optional[str]):
    import torch
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
    is several times the fp32 time) while the math kernel lets the matmuls use the CPU's bf16 units, which makes
    the fine-tuning step faster than fp32 on an AMX Xeon (see BENCHMARKS.md). Elsewhere the default kernel choice
    stands."""
    from contextlib import nullcontext

    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "bf16":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    return nullcontext()


def cpu_has_bf16_units() -> bool:
    """AMX (Sapphire Rapids and later): bf16 matmuls at several times the fp32 rate, so --precision bf16 pays off
    (see BENCHMARKS.md)."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def precision_name(accelerator) -> str:
    return {"no": "fp32"}.get(accelerator.mixed_precision, accelerator.mixed_precision)


def quiet_libraries() -> None:
    """tlab prints its own progress; the libraries' per-step bars and advice would bury it."""
    import warnings

    import datasets
    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)
    # accelerate warns at every checkpoint that tied weights (shared embeddings) are stored once: by design
    import logging

    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
