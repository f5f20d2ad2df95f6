"""One error taxonomy: what is retried, what is not, and the condition /readyz names."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, RecordTooLargeError

from daemon.errors import retriable_cause
from daemon.ops.conditions import Conditions
from daemon.retry import Retrier


def _sqlite_error(tmp_path: Path, statement: str) -> sqlite3.OperationalError:
    holder = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(tmp_path / "db.sqlite", timeout=0.05)
    try:
        other.execute(statement)
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        other.close()
        holder.close()
    raise AssertionError("no error")


def test_world_problems_are_retriable(tmp_path: Path) -> None:
    assert retriable_cause(OSError(errno.ENOSPC, "No space left on device")) == (
        "No space left on device (ENOSPC)"
    )
    with pytest.raises(FileNotFoundError) as gone:
        (tmp_path / "vanished" / "x").write_bytes(b"")
    assert retriable_cause(gone.value) == "No such file or directory (ENOENT)"
    locked = _sqlite_error(tmp_path, "INSERT INTO t VALUES (1)")
    assert retriable_cause(locked) == "SQLite: database is locked"
    assert retriable_cause(KafkaConnectionError("broker down")).startswith("Kafka:")


def test_errors_that_would_only_repeat_are_not_retriable(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="File name too long") as too_long:
        (tmp_path / ("x" * 300)).write_bytes(b"")
    assert retriable_cause(too_long.value) is None  # ENAMETOOLONG
    assert retriable_cause(ValueError("bad shape")) is None
    assert retriable_cause(RecordTooLargeError()) is None
    assert retriable_cause(sqlite3.OperationalError("no such table: ledger")) is None


def test_retrier_names_the_condition_until_it_clears() -> None:
    conditions = Conditions()
    retrier = Retrier(conditions, initial_seconds=0.05, max_seconds=0.1)
    attempts: list[list[str]] = []

    async def write() -> str:
        attempts.append(conditions.describe())
        if len(attempts) < 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return "written"

    assert asyncio.run(retrier.call("products folder", write)) == "written"
    assert attempts[0] == []
    assert attempts[1][0].startswith("products folder: No space left on device (ENOSPC) since ")
    assert attempts[2] == attempts[1]  # one condition, its start time kept
    assert conditions.describe() == []


def test_retrier_does_not_retry_what_would_repeat() -> None:
    retrier = Retrier(Conditions(), initial_seconds=0.01)
    calls: list[int] = []

    async def bad() -> None:
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(retrier.call("products folder", bad))
    assert calls == [1]


def test_a_condition_ends_with_the_call_that_gives_up() -> None:
    conditions = Conditions()
    retrier = Retrier(conditions, initial_seconds=0.01, max_seconds=0.02)
    errors = [OSError(errno.EIO, "Input/output error"), ValueError("then a bug")]

    async def write() -> None:
        raise errors.pop(0)

    with pytest.raises(ValueError, match="then a bug"):
        asyncio.run(retrier.call("products folder", write))
    assert conditions.describe() == []


def test_a_condition_holds_while_any_caller_still_fails() -> None:
    conditions = Conditions()
    retrier = Retrier(conditions, initial_seconds=0.05, max_seconds=0.05)
    seen: list[list[str]] = []

    async def run() -> None:
        release = asyncio.Event()

        async def stuck() -> None:
            if not release.is_set():
                raise OSError(errno.ENOSPC, "No space left on device")

        async def fine() -> None:
            return None

        failing = asyncio.create_task(retrier.call("products folder", stuck))
        await asyncio.sleep(0.12)
        await retrier.call("products folder", fine)  # another lane's write succeeds
        seen.append(conditions.describe())
        release.set()
        await failing
        seen.append(conditions.describe())

    asyncio.run(run())
    assert seen[0][0].startswith("products folder: No space left on device (ENOSPC) since ")
    assert seen[1] == []
