"""The run directory: config.yaml, metrics.json, log.jsonl, checkpoints/step-N/, model/, tb/.

Every file is written to a temporary name and renamed into place, so a crash never leaves a half-written
file, and a run that fails before its first checkpoint removes the directory it created.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tlab.errors import TlabError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def default_output_dir(task: str) -> str:
    return os.path.join("runs", f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")


def check_output_dir(path: str, resume: bool, overwrite: bool) -> None:
    """Refuse, before any work starts, an output directory this run may not use."""
    target = Path(path)
    if resume:
        if not target.is_dir():
            raise TlabError(f"--resume: run directory {path} does not exist")
        if not RunDir(target, target, created=False).checkpoints():
            raise TlabError(f"--resume: {path} holds no complete checkpoint to continue from")
        return
    if target.exists() and not overwrite:
        raise TlabError(f"output directory {path} already exists (pass --resume to continue it, --overwrite to replace it)")
    parent = target.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise TlabError(f"output directory {path} is not writable")


@dataclass
class RunDir:
    """A run directory being written by the main process."""

    final: Path
    path: Path  # where this run writes; differs from `final` only with --overwrite of an existing run
    created: bool
    is_main: bool = True

    @classmethod
    def plan(cls, output_dir: str, resume: bool, overwrite: bool, is_main: bool) -> "RunDir":
        """Check the directory may be used; nothing is created until `create` (after the inputs are validated)."""
        check_output_dir(output_dir, resume, overwrite)
        final = Path(output_dir)
        if resume:
            return cls(final, final, created=False, is_main=is_main)
        path = final.with_name(f".{final.name}.new") if final.exists() else final
        return cls(final, path, created=False, is_main=is_main)

    def create(self) -> None:
        if self.is_main and not self.path.exists():
            self.path.mkdir(parents=True)
            self.created = True
        elif self.is_main and self.path != self.final and not self.created:
            shutil.rmtree(self.path)  # the leftover of an earlier failed --overwrite
            self.path.mkdir(parents=True)
            self.created = True

    # -- files ---------------------------------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        if self.is_main:
            write_atomic(self.path / "config.yaml", yaml_text)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        if self.is_main:
            write_json(self.path / "metrics.json", metrics)

    def log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.path / "log.jsonl", "a") as handle:
                handle.write(json.dumps(record, default=float) + "\n")

    # -- checkpoints ---------------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (a temporary .step-N.tmp is never complete)."""
        root = self.path / CHECKPOINTS
        if not root.is_dir():
            return []
        found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def latest_checkpoint(self) -> Optional[Path]:
        found = self.checkpoints()
        return found[-1] if found else None

    def checkpoint_tmp(self, step: int) -> Path:
        return self.path / CHECKPOINTS / f".step-{step}.tmp"

    def commit_checkpoint(self, step: int, state: dict[str, Any], keep: int, protect: Optional[str]) -> Path:
        """Make a checkpoint visible by renaming it, then prune all but the newest `keep` (and `protect`)."""
        tmp = self.checkpoint_tmp(step)
        write_json(tmp / STATE_FILE, state)
        final = self.path / CHECKPOINTS / f"step-{step}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self.checkpoints()[:-keep]:
            if old.name != protect:
                shutil.rmtree(old, ignore_errors=True)
        return final

    # -- end of run ----------------------------------------------------------------------------------------
    def save_model(self, save_fn) -> Path:
        """`save_fn(directory)` writes the model and tokenizer; they appear as model/ only when complete."""
        tmp = self.path / ".model.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_fn(tmp)
        final = self.path / "model"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return self.final / "model"

    def finish(self) -> None:
        """With --overwrite the old run is replaced only now, after the new one succeeded."""
        if self.is_main and self.path != self.final:
            old = self.final.with_name(f".{self.final.name}.old")
            os.replace(self.final, old)
            os.replace(self.path, self.final)
            shutil.rmtree(old, ignore_errors=True)
            self.path = self.final

    def abandon(self) -> None:
        """After a failure: remove what this run created unless it holds a checkpoint worth resuming."""
        if self.is_main and self.created and not self.checkpoints():
            shutil.rmtree(self.path, ignore_errors=True)
