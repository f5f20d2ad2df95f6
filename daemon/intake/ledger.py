"""Durable record of finished inputs, so a restart skips what is already done."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ledger", "LedgerEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS finished (
    path        TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    exposure_id TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    product     TEXT,
    finished_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class LedgerEntry:
    """Identity of a finished input file: its path, size and modification time."""

    path: str
    size: int
    mtime_ns: int


class Ledger:
    """SQLite-backed set of finished input files, mirrored in memory for fast look-ups.

    A file counts as finished only with the same size and mtime it had when it was
    finished: a file replaced under the same name is processed again.

    Parameters
    ----------
    path : Path
        Database file (created with its folder if missing).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._finished = {
            row[0]: (row[1], row[2])
            for row in self._db.execute("SELECT path, size, mtime_ns FROM finished")
        }

    def __len__(self) -> int:
        return len(self._finished)

    def is_finished(self, entry: LedgerEntry) -> bool:
        """True if this exact file (path, size, mtime) was finished before."""
        return self._finished.get(entry.path) == (entry.size, entry.mtime_ns)

    def record(
        self, entry: LedgerEntry, *, exposure_id: str, outcome: str, product: str | None
    ) -> None:
        """Durably record a file as finished (processed or quarantined); thread-safe."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO finished VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.path,
                    entry.size,
                    entry.mtime_ns,
                    exposure_id,
                    outcome,
                    product,
                    time.time(),
                ),
            )
            self._finished[entry.path] = (entry.size, entry.mtime_ns)

    def close(self) -> None:
        """Close the database; safe to call twice."""
        with self._lock:
            self._db.close()
