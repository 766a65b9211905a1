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
