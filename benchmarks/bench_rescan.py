"""A folder rescan against a ledger that remembers a long history.

The ledger holds ``--rows`` finished inputs (a night, or a year, of files long gone) and
the folder ``--files`` exposures of which half are finished; the figure is the median
time of the directory source's own scan, which decides what is still to do. Also: the
ledger's start-up and the first scan's compaction (dropping the departed files' rows).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_seconds

from daemon.app.settings import DirectorySourceSettings
from daemon.intake.directory import DirectorySource
from daemon.intake.ledger import Ledger, LedgerEntry
from daemon.ops.metrics import Metrics


def _history(database: Path, folder: Path, rows: int) -> None:
    """``rows`` finished files once in ``folder`` (archived or deleted since)."""
    Ledger(database).close()  # the schema
    db = sqlite3.connect(database)
    with db:
        db.executemany(
            "INSERT INTO finished VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((f"{folder}/old{k:08d}.fits", 2880 * 10, k, f"old{k:08d}", "complete", None, 0.0)
             for k in range(rows)),
        )  # fmt: skip
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "inbox"
        folder.mkdir()
        database = Path(scratch) / "ledger.sqlite"
        _history(database, folder, args.rows)
        start = time.perf_counter()
        ledger = Ledger(database)
        opened = time.perf_counter() - start
        block = b"SIMPLE  =                    T" + b" " * 50 + b"END" + b" " * 2797
        for k in range(args.files):
            path = folder / f"n{k:06d}.fits"
            path.write_bytes(block)
            if k % 2 == 0:  # half of them finished already
                info = path.stat()
                ledger.record(LedgerEntry(str(path), info.st_size, info.st_mtime_ns),
                              exposure_id=path.name, outcome="complete", product=None)  # fmt: skip
        source = DirectorySource(
            DirectorySourceSettings(path=folder), ledger, Metrics(CollectorRegistry())
        )
        start = time.perf_counter()
        found = source._scan()  # the first scan compacts the ledger as well
        first = time.perf_counter() - start
        assert len(found) == args.files // 2, len(found)
        scan = median_seconds(source._scan, 7)
        left = len(ledger)
        ledger.close()
    print("| ledger rows | files in the folder | ledger start-up | first scan (compacts) "
          "| rows left | rescan (median) | per file |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.rows:,} | {args.files:,} | {opened * 1e3:.1f} ms | {first:.2f} s | {left:,} "
        f"| {scan * 1e3:.1f} ms | {scan / args.files * 1e6:.0f} µs |"
    )


if __name__ == "__main__":
    main()
