"""One writer per run directory: an OS-level lock (flock) on `<run>/.tlab.lock`.

The kernel drops a flock when its process dies, however it dies, so a `kill -9` never leaves a stale lock; the
file itself stays and only says who held it last. The lock sits inside the run directory (not beside it) so that a
refused or failed run leaves nothing behind in the parent folder.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from tlab.errors import TlabError

LOCK_FILE = ".tlab.lock"


class RunLock:
    """An exclusive, non-blocking lock on a run directory, held until `release` or the end of the process."""

    def __init__(self, directory: Path, fd: int):
        self.directory, self.fd = directory, fd

    @classmethod
    def acquire(cls, directory: Path, what: str) -> "RunLock":
        """Lock `directory` (which must exist) or refuse with one line naming the holder."""
        import fcntl

        path = directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TlabError(f"run directory {directory} is in use by {describe_holder(directory)}; "
                            f"wait for it to finish (or stop it) before {what}") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "command": " ".join(["tlab", *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return cls(directory, fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def held_by_another(directory: Path) -> bool:
    """Whether a live process holds the lock on `directory` (probed without keeping it)."""
    import fcntl

    path = directory / LOCK_FILE
    if not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def describe_holder(directory: Path) -> str:
    try:
        holder = json.loads((directory / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder:
        return "another tlab process"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} ({holder.get('command')})"


def refuse_if_locked(directory: Path, what: str) -> Optional[None]:
    if directory.is_dir() and held_by_another(directory):
        raise TlabError(f"run directory {directory} is in use by {describe_holder(directory)}; "
                        f"wait for it to finish (or stop it) before {what}")
