"""The commands' config defaults (below YAML, flags and overrides), where `tlab sweep` finds them too."""

from __future__ import annotations

FINETUNE_DEFAULTS = {"task": "sst2", "train.lr": 5e-5, "train.epochs": 3.0, "train.warmup": 0.06,
                     "train.batch_size": 32}

# The main job's defaults: sized to finish in under 3 minutes on 2 CPU cores without AVX-512 (150 steps; ~2.5 min on
# an AMD EPYC with AVX2 only, ~1.5 min on a Xeon with AVX-512), evaluating once an epoch.
PRETRAIN_DEFAULTS = {"task": "mlm", "train.epochs": 2.0, "train.lr": 1e-3, "train.warmup": 0.1, "train.eval_every": 0,
                     "data.max_eval_samples": 600}


def finetune_defaults(flags: dict, config_file, overrides, **load) -> dict:
    """FINETUNE_DEFAULTS and the task family's own (translation from scratch has a recipe of its own): the task and
    model are read from a first resolution of the same flags, YAML and overrides (`load`: more of config.load's
    arguments)."""
    from tlab import config as config_mod
    from tlab.tasks import defaults_for

    cfg = config_mod.load(config_file, flags, overrides, defaults=FINETUNE_DEFAULTS, **load)
    return {**FINETUNE_DEFAULTS, **defaults_for(cfg.task, from_scratch=not cfg.model.name_or_path)}


def for_command(command: str, flags: dict, config_file, overrides, **load) -> dict:
    """The defaults of `tlab <command>` (finetune | pretrain) for these inputs."""
    return PRETRAIN_DEFAULTS if command == "pretrain" else finetune_defaults(flags, config_file, overrides, **load)
