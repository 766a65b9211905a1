"""The one exception type the CLI turns into a single error line and a non-zero exit."""


class TlabError(Exception):
    """Bad input or an unusable environment: the message is shown to the user as is, without a traceback."""

    exit_code = 2


PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request with a checkpoint saved; `--resume` continues it
DIVERGED_EXIT = 3


class Diverged(TlabError):
    exit_code = DIVERGED_EXIT


class Preempted(TlabError):
    exit_code = PREEMPTED_EXIT


class Pruned(Exception):
    """Raised by a run's `report` hook (tlab sweep's pruner) at an evaluation: the run stops there, its run directory
    says so in metrics.json, and the caller records the trial as pruned. An outcome, not bad input: no TlabError."""

    def __init__(self, step: int, metrics: dict):
        super().__init__(f"pruned at step {step}")
        self.step, self.metrics = step, dict(metrics)
