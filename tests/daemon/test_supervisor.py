"""The supervisor restarts what dies, names it in /readyz, tells stuck from busy, gives up."""

from __future__ import annotations

import asyncio

import pytest

from daemon.errors import Fatal
from daemon.ops.conditions import Conditions
from daemon.ops.supervisor import GaveUp, Supervisor
from tests.conftest import wait_until

pytestmark = pytest.mark.asyncio


async def test_a_task_that_dies_is_named_then_restarted() -> None:
    conditions = Conditions()
    supervisor = Supervisor(conditions, max_restarts=3, window_seconds=60)
    runs: list[int] = []
    release = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise OSError("watcher lost its inotify descriptor")
        await release.wait()

    supervisor.spawn("watcher", flaky, finite=True)
    await wait_until(lambda: "task watcher" in conditions)
    assert "OSError: watcher lost its inotify descriptor" in conditions.describe()[0]
    await wait_until(lambda: len(runs) == 2)
    assert "task watcher" not in conditions
    assert supervisor.failure is None
    release.set()
    await supervisor.stop()


async def test_a_task_that_keeps_dying_ends_supervision() -> None:
    supervisor = Supervisor(Conditions(), max_restarts=2, window_seconds=60)
    runs: list[int] = []

    async def broken() -> None:
        runs.append(1)
        raise ValueError("always")

    supervisor.spawn("broken", broken)
    await asyncio.wait_for(supervisor.failed.wait(), 30)
    assert isinstance(supervisor.failure, GaveUp)
    assert "task broken failed 3 times" in str(supervisor.failure)
    assert len(runs) == 3  # the first run and max_restarts restarts
    await supervisor.stop()


async def test_a_fatal_error_is_not_restarted() -> None:
    supervisor = Supervisor(Conditions())
    runs: list[int] = []

    async def misconfigured() -> None:
        runs.append(1)
        raise Fatal("the watched folder is a file")

    supervisor.spawn("source", misconfigured)
    await asyncio.wait_for(supervisor.failed.wait(), 10)
    assert runs == [1]
    assert "the watched folder is a file" in str(supervisor.failure)
    await supervisor.stop()


async def test_a_loop_that_returns_is_restarted_unless_finite() -> None:
    supervisor = Supervisor(Conditions(), max_restarts=5)
    runs: list[str] = []

    async def ends() -> None:
        runs.append("x")

    supervisor.spawn("loop", ends)
    await wait_until(lambda: len(runs) >= 2)
    await supervisor.stop()


async def test_working_without_progress_is_stalled_and_waiting_is_not() -> None:
    supervisor = Supervisor(Conditions(), stall_seconds=0.2)
    stuck = asyncio.Event()
    entered = asyncio.Event()

    async def hangs() -> None:
        await asyncio.sleep(0.5)  # idle: waiting for work is not being stuck
        with heartbeat.working():
            entered.set()
            await stuck.wait()

    heartbeat = supervisor.spawn("settle", hangs, finite=True)
    await asyncio.sleep(0.4)
    assert supervisor.stalled() == []
    await asyncio.wait_for(entered.wait(), 5)
    await wait_until(lambda: bool(supervisor.stalled()))
    assert supervisor.stalled()[0].startswith("settle: no progress for")
    heartbeat.beat()
    assert supervisor.stalled() == []
    stuck.set()
    await supervisor.stop()


async def test_a_cancelled_future_inside_a_task_is_a_failure_not_a_stop() -> None:
    conditions = Conditions()
    supervisor = Supervisor(conditions, max_restarts=3, window_seconds=60)
    runs: list[int] = []
    release = asyncio.Event()

    async def awaits_a_cancelled_future() -> None:
        runs.append(1)
        if len(runs) == 1:
            future = asyncio.get_running_loop().create_future()
            future.cancel()  # as a shut-down executor does to its pending work
            await future
        await release.wait()

    supervisor.spawn("lane K", awaits_a_cancelled_future, finite=True)
    await wait_until(lambda: len(runs) == 2)  # restarted, not silently ended
    assert supervisor.failure is None
    release.set()
    await supervisor.stop()
