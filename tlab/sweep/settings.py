"""A sweep's own settings (the YAML `sweep:` block, the `tlab sweep` flags) and its folder's sweep.yaml: the base
config every trial starts from, fully resolved, with the sweep block under it. `--resume` and the `--jobs` workers
read the sweep from there, so every trial of a sweep has the same base whoever runs it."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tlab import config
from tlab.errors import TlabError
from tlab.outputs import write_atomic
from tlab.sweep import space

SWEEP_FILE = "sweep.yaml"
KEEP = ("best", "all", "none")
PRUNERS = ("median", "none")
# settings a resumed sweep may change; the base config, space and sampler are the sweep's for good
CHANGEABLE = ("trials", "jobs", "keep")


@dataclass(frozen=True)
class SweepConfig:
    trials: int = 20
    """Trials to finish (complete, pruned, or failed by their parameters: diverged, out of memory). A trial cut by a
    kill or an error is run again with the same parameters and counted once."""
    space: list[str] = field(default_factory=list)
    """The search space, one key=spec per parameter: key=lo:hi (uniform; ints when both bounds are ints),
    key=lo:hi:log (log-uniform), key=a,b,c (categorical)."""
    seed: int = 0
    """Seed of the TPE sampler (each trial's draw is seeded from it and the trial's number, so a resumed sweep does
    not repeat its first draws)."""
    pruner: str = "median"
    """median: stop a trial whose evaluation is worse than the median of earlier trials' at the same step | none."""
    pruner_startup_trials: int = 5
    """Trials that run to the end before the median pruner prunes any."""
    pruner_warmup_steps: int = 0
    """Optimizer steps of a trial before the pruner looks at its evaluations."""
    keep: str = "best"
    """Models kept: best (the best trial's model/ only; the others' are deleted as they are superseded) | all | none.
    Checkpoints are deleted as each trial ends."""
    jobs: int = 1
    """Trials run at once, each in its own process (1: one at a time, in this process)."""
    output_dir: Optional[str] = None
    """The sweep folder (trial-NNN/ run directories, study.db, trials.csv, best.yaml); default sweeps/<task>-<time>."""

    def __post_init__(self):
        _check(self.trials >= 1, f"sweep.trials (--trials) must be >= 1, got {self.trials}")
        _check(self.jobs >= 1, f"sweep.jobs (--jobs) must be >= 1, got {self.jobs}")
        _check(self.keep in KEEP, f"sweep.keep (--keep) must be one of {' | '.join(KEEP)}, got {self.keep!r}")
        _check(self.pruner in PRUNERS, f"sweep.pruner must be one of {' | '.join(PRUNERS)}, got {self.pruner!r}")
        _check(self.pruner_startup_trials >= 0 and self.pruner_warmup_steps >= 0,
               "sweep.pruner_startup_trials and sweep.pruner_warmup_steps must be >= 0")

    def params(self) -> list[space.Param]:
        return space.parse_all(self.space)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TlabError(message)


def block_of(config_file: Optional[str]) -> dict[str, Any]:
    """The `sweep:` block of a YAML config ({} without one)."""
    if not config_file:
        return {}
    import yaml

    try:
        data = yaml.load(Path(config_file).read_text(), Loader=_loader()) if Path(config_file).is_file() else None
    except yaml.YAMLError as exc:
        raise TlabError(f"config file {config_file} is not valid YAML: {str(exc).splitlines()[0]}") from None
    block = data.get("sweep") if isinstance(data, dict) else None
    if block is not None and not isinstance(block, dict):
        raise TlabError(f"config file {config_file}: sweep must be a mapping of sweep.* keys, got {block!r}")
    return dict(block or {})


def _loader():
    """YAML's safe loader without its base-60 numbers: YAML 1.1 reads `train.batch_size: 8:32` as 512 and
    `train.warmup: 0:0.2` as 0.2; a space is written exactly so."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    numbers = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in found if tag not in numbers]
                                      for first, found in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(numbers[0], re.compile(r"^[-+]?[0-9][0-9_]*$"), list("-+0123456789"))
    Loader.add_implicit_resolver(numbers[1], re.compile(r"^[-+]?([0-9][0-9_]*(\.[0-9_]*)?|\.[0-9_]+)([eE][-+]?[0-9]+)?$"
                                                        r"|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"), list("-+0123456789."))
    return Loader


def resolve(block: dict[str, Any], flags: dict[str, Any]) -> SweepConfig:
    """defaults < the YAML block < flags (None = not given); --space entries add to the block's, by key."""
    names = {f.name for f in dataclasses.fields(SweepConfig)}
    for key in block:
        if key not in names:
            raise TlabError(f"unknown config key 'sweep.{key}' (known: {', '.join(sorted(names))})")
    values = {**block, "space": space.from_yaml(block.get("space"))}
    values.update({k: v for k, v in flags.items() if v is not None and k != "space"})
    values["space"] = space.merge(values["space"], list(flags.get("space") or []))
    for name in ("trials", "seed", "jobs", "pruner_startup_trials", "pruner_warmup_steps"):
        if name in values and (isinstance(values[name], bool) or not isinstance(values[name], int)):
            raise TlabError(f"invalid value for sweep.{name}: expected an integer, got {values[name]!r}")
    return SweepConfig(**values)


def default_dir(task: str) -> str:
    return os.path.join("sweeps", f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")


def to_yaml(base: config.RunConfig, sweep: SweepConfig, folder: Path) -> str:
    import yaml

    block = {k: v for k, v in dataclasses.asdict(sweep).items() if k != "output_dir"}
    return (f"# tlab sweep --resume --output-dir {folder}    (continues this sweep; --trials N extends it)\n"
            f"# the base config of every trial, with the sweep's settings below it\n"
            + config.to_yaml(base) + yaml.safe_dump({"sweep": block}, sort_keys=False))


def write(folder: Path, base: config.RunConfig, sweep: SweepConfig) -> None:
    write_atomic(folder / SWEEP_FILE, to_yaml(base, sweep, folder))


def read(folder: Path) -> tuple[config.RunConfig, SweepConfig]:
    """The base config and settings of the sweep in `folder`."""
    path = folder / SWEEP_FILE
    if not path.is_file():
        raise TlabError(f"--resume: {folder} holds no sweep ({SWEEP_FILE} is missing)")
    base = config.load(str(path), own_sections=("sweep",))
    return base, resolve(block_of(str(path)), {})


def base_for_trials(cfg: config.RunConfig) -> config.RunConfig:
    """A resolved config as the base of trials: where each writes and whether it resumes are the sweep's to say."""
    return dataclasses.replace(cfg, output_dir=None, resume=False, overwrite=False)


def differences(stored: tuple[config.RunConfig, SweepConfig], given: tuple[config.RunConfig, SweepConfig]) -> list[str]:
    """The keys in which a resumed sweep's command differs from the stored sweep (beyond CHANGEABLE)."""
    def flat(prefix: str, data: dict) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict) and value:
                out.update(flat(f"{prefix}{key}.", value))
            else:
                out[prefix + key] = value
        return out

    a = {**flat("", config.to_dict(stored[0])), **flat("sweep.", dataclasses.asdict(stored[1]))}
    b = {**flat("", config.to_dict(given[0])), **flat("sweep.", dataclasses.asdict(given[1]))}
    ignored = {f"sweep.{k}" for k in (*CHANGEABLE, "output_dir")}
    return sorted(k for k in a.keys() | b.keys() if k not in ignored and a.get(k) != b.get(k))


def trial_config(base: config.RunConfig, params: dict[str, Any], run_dir: Path, resume: bool) -> config.RunConfig:
    return config.with_values(base, {**params, "output_dir": str(run_dir), "resume": resume})
