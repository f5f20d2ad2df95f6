"""One owner per state folder: an OS lock held for the life of the process."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from daemon.app.settings import ConfigError

__all__ = ["LOCK_NAME", "StateFolderBusy", "StateFolderLock"]

#: Name of the lock file inside the state folder.
LOCK_NAME = "skystream.lock"


class StateFolderBusy(ConfigError):
    """Another process owns the state folder (a configuration error: exit 2)."""


class StateFolderLock:
    """Exclusive, non-blocking ``flock`` on ``<state folder>/skystream.lock``.

    The holder writes its pid and host into the file, so a second process can name it.
    The kernel drops the lock when the holder exits, however it ends (kill -9 included),
    so a stale file never blocks a restart. The file itself is left in place: deleting
    it would let two processes lock two different files of the same name.

    Parameters
    ----------
    folder : Path
        State folder (created if missing).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder, StateFolderLock(Path(folder)):
    ...     pass
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `StateFolderBusy` naming the holder; idempotent.

        Raises
        ------
        StateFolderBusy
            If another process (or another lock object) holds it.
        """
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise StateFolderBusy(
                f"state folder {self.path.parent} is in use by another skystream "
                f"({holder}); give each daemon its own state.directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock; safe to call twice."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> StateFolderLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
