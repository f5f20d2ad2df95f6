"""Quarantine: bad input is set aside with a JSON reason, never lost."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from daemon.fileio.fits_io import write_json
from daemon.fileio.names import bounded_name, readable

__all__ = ["Quarantine"]

log = logging.getLogger("skystream.quarantine")


class Quarantine:
    """Records bad input with its reason, and moves it where the operator allowed that.

    Each quarantined input gets ``<name>.reason.json`` (the name bounded in length, and
    numbered when an earlier input of the same name is already there) holding the
    original path, the reason code, the error text and the time. Only a regular file (or
    a symbolic link, which is moved as a link) is ever moved, and only with ``move``; a
    directory, FIFO, socket or device is recorded where it is.

    Parameters
    ----------
    folder : Path
        Quarantine folder (created if missing).
    move : bool
        Move the file itself into the folder (folder mode, where the operator gave
        skystream the watched folder); otherwise leave it where it is.
    fsync : bool
        fsync the reason file.
    """

    def __init__(self, folder: Path, *, move: bool, fsync: bool = True) -> None:
        self.folder = folder
        self.move = move
        self.fsync = fsync
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, path: Path, *, reason: str, detail: str, source: str) -> Path:
        """Quarantine ``path`` and return the reason file written (blocking).

        A file that cannot be moved (it vanished, or its folder is not writable) is still
        recorded; the failure to move is part of the reason file. Failing to write the
        reason file raises the OSError (for the retry policy: a full or unwritable
        quarantine folder is the world's problem, not the input's).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "original_path": readable(str(path)),
            "reason": reason,
            "detail": readable(detail),
            "source": source,
            "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "moved": False,
        }
        stem = self._free_stem(bounded_name(path.name))
        if self.move:
            self._move(path, self.folder / stem, record)
        reason_file = self.folder / f"{stem}.reason.json"
        write_json(record, reason_file, fsync=self.fsync)
        log.warning("quarantined %s: %s (%s)", path.name, reason, detail)
        return reason_file

    def _free_stem(self, name: str) -> str:
        """``name``, or ``name.N`` with the first N for which nothing of that name exists."""
        stem, number = name, 0
        while (self.folder / f"{stem}.reason.json").exists() or os.path.lexists(
            self.folder / stem
        ):
            number += 1
            stem = f"{name}.{number}"
        return stem

    @staticmethod
    def _move(path: Path, target: Path, record: dict[str, Any]) -> None:
        try:
            mode = os.lstat(path).st_mode
        except OSError as exc:
            record["move_error"] = exc.strerror or str(exc)
            return
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            record["move_error"] = "not a regular file: left where it is"
            return
        try:
            shutil.move(path, target)  # a rename, or a copy across file systems
        except OSError as exc:
            record["move_error"] = exc.strerror or str(exc)
            return
        record["moved"] = True
        record["quarantined_path"] = str(target)
