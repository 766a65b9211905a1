"""The run directory: config.yaml, metrics.json, log.jsonl, checkpoints/step-N/, model/, tb/.

Every file is written to a temporary name and renamed into place, so a crash never leaves a half-written
file, and a run that fails before its first checkpoint removes the directory it created.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tlab.errors import TlabError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # mkstemp makes files 0600; teammates on a shared cluster must read config.yaml and metrics.json
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # never leave a partial temporary file (it could hold the disk full)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def finite_json(data: Any) -> Any:
    """NaN and infinities -> null: strict JSON readers (and other languages) reject bare NaN."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    return data


def to_json(data: Any, **kwargs) -> str:
    return json.dumps(finite_json(data), allow_nan=False, default=_plain, **kwargs)


def _plain(value: Any) -> Any:
    """Tensors, numpy scalars and paths as JSON values."""
    if hasattr(value, "item"):
        return finite_json(value.item())
    return str(value)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, to_json(data, indent=2, sort_keys=False) + "\n")


def write_artifact(path: Path, content: Any) -> None:
    """An evaluation's file: text as it is (e.g. translations.de, one line per sentence), a list as JSON Lines when
    the name ends in .jsonl, anything else as JSON."""
    if isinstance(content, str):
        write_atomic(path, content)
    elif path.suffix == ".jsonl":
        write_atomic(path, "".join(to_json(row) + "\n" for row in content))
    else:
        write_json(path, content)


def default_output_dir(task: str) -> str:
    return os.path.join("runs", f"{task}-{time.strftime('%Y%m%d-%H%M%S')}")


def check_output_dir(path: str, resume: bool, overwrite: bool, probe_lock: bool = True) -> None:
    """Refuse, before any work starts, an output directory this run may not use. Only rank 0 probes the lock:
    in a distributed run the others would find rank 0's own."""
    from tlab.runlock import refuse_if_locked as refuse

    def refuse_if_locked(directory: Path, what: str) -> None:
        if probe_lock:
            refuse(directory, what)

    target = Path(path)
    if resume:
        if not target.is_dir():
            raise TlabError(f"--resume: run directory {path} does not exist")
        if is_export_dir(target):
            raise TlabError(f"--resume: {path} is a tlab export (ONNX, for inference): it holds no checkpoints; resume "
                            "the run it was exported from")
        refuse_if_locked(target, "resuming it")
        if not RunDir(target, target, created=False).checkpoints() and not is_run_dir(target):
            raise TlabError(f"--resume: {path} holds no checkpoint and is not a tlab run directory")
        return
    if target.exists():
        refuse_if_locked(target, "writing to it")
        if not overwrite:
            raise TlabError(f"output directory {path} already exists (pass --resume to continue it, --overwrite to replace it)")
    try:
        parent = target.resolve().parent
        while not parent.exists():
            parent = parent.parent
    except OSError as exc:
        raise TlabError(f"output directory {path} cannot be used: {exc.strerror}") from None
    if not parent.is_dir() or not os.access(parent, os.W_OK) or _pseudo_filesystem(parent):
        raise TlabError(f"output directory {path} is not writable")


def _pseudo_filesystem(path: Path) -> bool:
    """/proc and /sys pass os.access for root but refuse every new file."""
    return path.resolve().parts[1:2] in (("proc",), ("sys",))


EXPORT_FILE = "export.json"  # what marks a `tlab export` folder (backend, versions, quantisation, source)


def is_export_dir(path) -> bool:
    """A `tlab export` folder: an ONNX model for inference, no torch weights, no checkpoints."""
    return (Path(path) / EXPORT_FILE).is_file()


def run_config_of(model: str) -> Optional[str]:
    """The config.yaml of a tlab run directory given as --model, or the one a `tlab export` folder carries from its
    run (None for a plain model directory or Hub id)."""
    path = Path(model) / "config.yaml"
    return str(path) if path.is_file() and ((Path(model) / "model").is_dir() or is_export_dir(model)) else None


def task_of_run(run_config: str) -> Optional[str]:
    """The task a run's config.yaml names."""
    import yaml

    return (yaml.safe_load(Path(run_config).read_text()) or {}).get("task")


def is_run_dir(path: Path) -> bool:
    """What a tlab run leaves from its first moment: the lock file, then config.yaml."""
    from tlab.runlock import LOCK_FILE

    return (path / "config.yaml").is_file() or (path / LOCK_FILE).is_file()


def out_of_space(exc: BaseException, where: Path) -> Optional[TlabError]:
    """A write that failed for lack of disk space -> one line saying so (torch's own message never does)."""
    text = str(exc)
    full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text
    if not full and isinstance(exc, RuntimeError) and "write" in text:  # torch's zip writer drops the errno
        full = _free_bytes(where) < 64 * 2**20
    if not full:
        return None
    return TlabError(f"out of disk space while writing {where} ({_free_bytes(where):,} bytes free there); "
                     "free some space and continue with --resume")


def _free_bytes(where: Path) -> int:
    path = where
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


@dataclass
class RunDir:
    """A run directory being written by the main process, which holds its lock for the whole run."""

    final: Path
    path: Path  # where this run writes; differs from `final` only with --overwrite of an existing run
    created: bool
    is_main: bool = True
    fresh_resume: bool = False  # --resume of a run that died before its first checkpoint: start it afresh
    locks: list = field(default_factory=list)
    resuming: bool = False  # --resume
    pending_config: Optional[str] = None  # a resume's config.yaml, written once its checkpoint has loaded

    @classmethod
    def plan(cls, output_dir: str, resume: bool, overwrite: bool, is_main: bool) -> "RunDir":
        """Check the directory may be used and lock an existing one; a new one is created (and locked) only by
        `create`, after the inputs are validated."""
        check_output_dir(output_dir, resume, overwrite, probe_lock=is_main)
        final = Path(output_dir)
        if resume:
            run = cls(final, final, created=False, is_main=is_main, resuming=True)
            run._lock(final, "resuming it")
            run.fresh_resume = not run.checkpoints()  # checked again under the lock
            return run
        if final.exists():  # --overwrite: the old run stays locked (and intact) until the new one replaces it
            run = cls(final, final.with_name(f".{final.name}.new"), created=False, is_main=is_main)
            run._lock(final, "replacing it")
            return run
        return cls(final, final, created=False, is_main=is_main)

    def _lock(self, directory: Path, what: str) -> None:
        if self.is_main:
            from tlab.runlock import RunLock

            self.locks.append(RunLock.acquire(directory, what))

    def create(self) -> None:
        if not self.is_main:
            return
        if self.fresh_resume:
            for name in ("log.jsonl", "tb", CHECKPOINTS, ".model.tmp"):
                _remove(self.path / name)
            return
        if self.path == self.final and self.final.exists() and not self.locks:
            from tlab.runlock import refuse_if_locked

            refuse_if_locked(self.final, "writing to it")  # another run created it while this one prepared its data
            raise TlabError(f"output directory {self.final} already exists (pass --resume to continue it, --overwrite to replace it)")
        if self.path.exists() and self.path != self.final:
            shutil.rmtree(self.path)  # the leftover of an earlier failed --overwrite (we hold the old run's lock)
        if not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except FileExistsError:
                raise TlabError(f"output directory {self.final} was created by another process meanwhile") from None
            except OSError as exc:
                raise TlabError(f"cannot create output directory {self.path}: {exc.strerror}") from None
            self.created = True
        if self.path not in [lock.directory for lock in self.locks]:
            self._lock(self.path, "writing to it")

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
        self.locks.clear()

    # -- files ---------------------------------------------------------------------------------------------
    def write_config(self, yaml_text: str) -> None:
        """config.yaml; when resuming from a checkpoint only after `config_resumed`: --resume reads it, and a resume
        refused by its checkpoint must leave the run as it was."""
        if self.is_main and self.resuming and not self.fresh_resume:
            self.pending_config = yaml_text
        elif self.is_main:
            write_atomic(self.path / "config.yaml", yaml_text)

    def config_resumed(self) -> None:
        """The checkpoint has loaded: the resumed run's settings become the run's."""
        if self.pending_config is not None:
            write_atomic(self.path / "config.yaml", self.pending_config)
            self.pending_config = None

    def write_json(self, name: str, data: Any) -> None:
        if self.is_main:
            write_json(self.path / name, data)

    def write_artifact(self, name: str, content: Any) -> None:
        if self.is_main:
            write_artifact(self.path / name, content)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        if self.is_main:
            write_json(self.path / "metrics.json", metrics)

    def log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.path / "log.jsonl", "a") as handle:
                handle.write(to_json(record) + "\n")

    def rewind_log(self, step: int) -> None:
        """On resume from `step`: drop the records of steps after it (a killed run logged past its checkpoint),
        and a last line cut off by the kill, so the resumed run does not repeat points."""
        path = self.path / "log.jsonl"
        if not self.is_main or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        write_atomic(path, "".join(line + "\n" for line in kept))

    # -- checkpoints ---------------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first (a temporary .step-N.tmp or a .step-N.del being pruned never is)."""
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

    def remove_partial_checkpoints(self) -> None:
        """Half-written (.tmp) and half-pruned (.del) checkpoints of a killed run: only disk space."""
        root = self.path / CHECKPOINTS
        if self.is_main and root.is_dir():
            for leftover in root.iterdir():
                if leftover.name.startswith(".step-"):
                    _remove(leftover)

    def commit_checkpoint(self, step: int, state: dict[str, Any], keep: int, protect: Optional[str],
                          while_pruning=lambda: None) -> Path:
        """Make a checkpoint visible by renaming it, then prune all but the newest `keep` (and `protect`).
        `while_pruning` runs between an old checkpoint's retirement and its deletion (fault injection)."""
        tmp = self.checkpoint_tmp(step)
        write_json(tmp / STATE_FILE, state)
        final = self.path / CHECKPOINTS / f"step-{step}"
        if final.exists():
            _retire(final)
        os.replace(tmp, final)
        for old in self.checkpoints()[:-keep]:
            if old.name != protect:
                _retire(old, while_pruning)
        return final

    # -- end of run ----------------------------------------------------------------------------------------
    def save_model(self, save_fn) -> Path:
        """`save_fn(directory)` writes the model and tokenizer; they appear as model/ only when complete."""
        tmp = self.path / ".model.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            save_fn(tmp)
        except BaseException as exc:
            _remove(tmp)
            full = out_of_space(exc, tmp) if isinstance(exc, Exception) else None
            if full is not None:
                raise full from None
            raise
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

    def pruned(self, step: int, metrics: dict[str, Any], facts: dict[str, Any]) -> None:
        """A run stopped by a sweep's pruner: metrics.json says so (with the evaluation that decided it) and its
        checkpoints go, since nobody resumes a pruned run."""
        if not self.is_main:
            return
        self.log({"event": "pruned", "time": time.time(), "step": step})
        self.write_metrics({"state": "pruned", **facts, "steps": step, "final": metrics, "pruned_at_step": step,
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        _remove(self.path / CHECKPOINTS)
        self.finish()

    def abandon(self) -> None:
        """After a failure: remove what this run created unless it holds a checkpoint worth resuming."""
        if self.is_main and self.created and not self.checkpoints():
            shutil.rmtree(self.path, ignore_errors=True)


def _retire(checkpoint: Path, before_delete=lambda: None) -> None:
    """Rename first, then delete: a kill during the deletion leaves a .del folder, never a checkpoint that looks
    complete but misses files."""
    doomed = checkpoint.with_name(f".{checkpoint.name}.del")
    _remove(doomed)
    os.replace(checkpoint, doomed)
    before_delete()
    shutil.rmtree(doomed, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
