"""Durable record of finished inputs, so a restart skips what is already done."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from daemon.fileio.names import readable

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
    """SQLite-backed set of finished input files, looked up by path.

    A file counts as finished only with the same size and mtime it had when it was
    finished: a file replaced under the same name is processed again. Nothing is loaded
    at start and a look-up is one indexed query (a few microseconds), so neither start-up
    nor a rescan depends on how many files were ever finished; rows of files that left
    the folder are dropped by `forget` (an archived input) and `compact`.

    Parameters
    ----------
    path : Path
        Database file (created with its folder if missing).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()  # the writing connection
        self._readers = threading.local()  # WAL: readers on their own connections never wait
        self._closed = False

    def _reader(self) -> sqlite3.Connection:
        reader = getattr(self._readers, "db", None)
        if reader is None:
            reader = sqlite3.connect(self._path, check_same_thread=False)
            self._readers.db = reader
        return reader

    def __len__(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM finished").fetchone()[0])

    def is_finished(self, entry: LedgerEntry) -> bool:
        """True if this exact file (path, size, mtime) was finished before."""
        return self.outcome(entry) is not None

    def outcome(self, entry: LedgerEntry) -> str | None:
        """How this exact file was finished (``complete``, ``background``, ...), or None."""
        row = (
            self._reader()
            .execute(
                "SELECT size, mtime_ns, outcome FROM finished WHERE path = ?",
                (readable(entry.path),),
            )
            .fetchone()
        )
        if row is None or (row[0], row[1]) != (entry.size, entry.mtime_ns):
            return None
        return str(row[2])

    def record(
        self, entry: LedgerEntry, *, exposure_id: str, outcome: str, product: str | None
    ) -> None:
        """Durably record a file as finished (processed or quarantined); thread-safe."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO finished VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    readable(entry.path),
                    entry.size,
                    entry.mtime_ns,
                    readable(exposure_id),
                    outcome,
                    None if product is None else readable(product),
                    time.time(),
                ),
            )

    def forget(self, path: str) -> None:
        """Drop the row of a file that left the folder (archived); thread-safe."""
        with self._lock:
            self._db.execute("DELETE FROM finished WHERE path = ?", (readable(path),))

    def compact(self, folder: str, present: Iterable[str]) -> int:
        """Drop the rows of files under ``folder`` that are no longer there; return how many.

        One pass over the table (blocking: call from a worker thread), so that the ledger
        holds about as many rows as the folder holds files.
        """
        prefix = readable(folder.rstrip("/") + "/")
        with self._lock:
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS present (path TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM present")
            self._db.executemany("INSERT OR IGNORE INTO present VALUES (?)",
                                 ((readable(p),) for p in present))  # fmt: skip
            cursor = self._db.execute(
                "DELETE FROM finished WHERE substr(path, 1, ?) = ? "
                "AND path NOT IN (SELECT path FROM present)",
                (len(prefix), prefix),
            )
            self._db.execute("DELETE FROM present")
            return int(cursor.rowcount)

    def close(self) -> None:
        """Close the database; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
        reader = getattr(self._readers, "db", None)
        if reader is not None:
            reader.close()
