"""Fault injection for tests and scripts/fault_injection.py: the loop and the checkpoint code call these named
points, which do nothing unless the environment asks for a fault.

FAULT_ENV is "POINT:STEP[,POINT:STEP]" with POINT one of kill-after-step (SIGKILL once step STEP's update is done),
kill-in-save (SIGKILL with step STEP's checkpoint written but not yet committed), kill-in-prune (SIGKILL while an
old checkpoint is being deleted after step STEP's commit), kill-in-model-save (SIGKILL with model/ written but not
renamed into place, STEP = last step), term-after-step (SIGTERM to itself, as Slurm sends), nan-from-step (the loss
turns NaN from that step on), kill-in-trial (tlab sweep: SIGKILL at trial number STEP's first report to the pruner,
its checkpoint saved).
"""

from __future__ import annotations

import os
import signal

from tlab.errors import TlabError

FAULT_ENV = "TLAB_FAULT"
# Tests simulate a crash after this optimizer step (once its checkpoint is written) to check --resume.
STOP_AFTER_ENV = "TLAB_STOP_AFTER_STEP"


def parse(spec: str) -> dict[str, int]:
    found = {}
    for item in filter(None, spec.split(",")):
        point, _, step = item.partition(":")
        found[point.strip()] = int(step)
    return found


class Faults:
    """The faults asked for, read once per run."""

    def __init__(self, points: dict[str, int], stop_after: int = 0):
        self.points = points
        self.stop_after = stop_after

    def kill(self, point: str, step: int) -> None:
        if self.points.get(point) == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def poison_loss(self, loss, step: int):
        """`step`: the optimizer step this loss counts towards (1-based)."""
        start = self.points.get("nan-from-step", 0)
        if start and step >= start:
            return loss * float("nan")
        return loss

    def after_step(self, step: int) -> None:
        """Once step `step`'s update is done, before it is logged, evaluated or saved."""
        self.kill("kill-after-step", step)
        if self.points.get("term-after-step") == step:
            os.kill(os.getpid(), signal.SIGTERM)

    def in_save(self, step: int) -> None:
        self.kill("kill-in-save", step)

    def in_prune(self, step: int) -> None:
        self.kill("kill-in-prune", step)

    def end_of_step(self, step: int) -> None:
        """After step `step` and its checkpoint, if it had one: STOP_AFTER_ENV stops the run as a crash would."""
        if self.stop_after and step >= self.stop_after:
            raise TlabError(f"stopped after step {step} ({STOP_AFTER_ENV}); continue with --resume")


NONE = Faults({})


def from_env() -> Faults:
    return Faults(parse(os.environ.get(FAULT_ENV, "")), int(os.environ.get(STOP_AFTER_ENV, "0")))


def fault(point: str, step: int) -> None:
    """A fault injection point outside the loop (see FAULT_ENV)."""
    Faults(parse(os.environ.get(FAULT_ENV, ""))).kill(point, step)
