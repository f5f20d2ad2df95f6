"""Quarantine: bad input is set aside with a JSON reason, never lost."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from daemon.fileio.fits_io import write_json

__all__ = ["Quarantine"]

log = logging.getLogger("skystream.quarantine")


class Quarantine:
    """Moves (or only records) bad input files into a quarantine folder.

    Each quarantined ``<name>`` gets ``<name>.reason.json`` holding the original path,
    the reason code, the error text and the time.

    Parameters
    ----------
    folder : Path
        Quarantine folder (created if missing).
    move : bool
        Move the file itself into the folder; otherwise leave it where it is.
    fsync : bool
        fsync the reason file.
    """

    def __init__(self, folder: Path, *, move: bool, fsync: bool = True) -> None:
        self.folder = folder
        self.move = move
        self.fsync = fsync
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, path: Path, *, reason: str, detail: str, source: str) -> Path:
        """Quarantine ``path`` and return the reason file written.

        A file that cannot be moved (it vanished, or the folder is elsewhere and not
        writable) is still recorded; the failure to move is part of the reason file.
        """
        record: dict[str, Any] = {
            "original_path": str(path),
            "reason": reason,
            "detail": detail,
            "source": source,
            "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "moved": False,
        }
        target = self.folder / path.name
        if self.move and (path.exists() or path.is_symlink()):
            try:
                shutil.move(str(path), target)
                record["moved"] = True
                record["quarantined_path"] = str(target)
            except OSError as exc:
                record["move_error"] = str(exc)
        reason_file = self.folder / f"{path.name}.reason.json"
        write_json(record, reason_file, fsync=self.fsync)
        log.warning("quarantined %s: %s (%s)", path.name, reason, detail)
        return reason_file
