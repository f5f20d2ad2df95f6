"""One supervisor for every long-lived task: restart with backoff, or give up and exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from daemon.errors import Fatal
from daemon.ops.conditions import Conditions
from daemon.ops.progress import Heartbeat

__all__ = ["GaveUp", "Supervisor"]

log = logging.getLogger("skystream.supervisor")


class GaveUp(Fatal):
    """A task kept failing (or failed fatally); the process exits non-zero."""


@dataclass(eq=False)
class _Child:
    name: str
    run: Callable[[], Awaitable[None]]
    finite: bool
    heartbeat: Heartbeat
    task: asyncio.Task[None] | None = None
    failures: deque[float] = field(default_factory=deque)


class Supervisor:
    """Runs named tasks, restarts the ones that die, and tells health from progress.

    A task that raises is logged with its traceback, named in ``/readyz`` while it waits to
    restart, and restarted with exponential backoff. More than ``max_restarts`` failures
    of one task within ``window_seconds`` (or a `Fatal` error) end supervision: `failure`
    is set and `failed` fires, and the service stops and exits non-zero so that systemd or
    Kubernetes restarts the process.

    Parameters
    ----------
    conditions : Conditions
        Where restarting tasks are named.
    max_restarts : int
        Failures of one task tolerated within ``window_seconds``.
    window_seconds : float
        The window of that count.
    stall_seconds : float
        Default time a working task may go without progress before `stalled` names it.
    on_restart : callable, optional
        Called with a task's name each time it is restarted (a metric).
    """

    def __init__(
        self,
        conditions: Conditions,
        *,
        max_restarts: int = 5,
        window_seconds: float = 300.0,
        stall_seconds: float = 600.0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self._on_restart = on_restart
        self._conditions = conditions
        self._max_restarts = max_restarts
        self._window = window_seconds
        self._stall = stall_seconds
        self._children: dict[str, _Child] = {}
        self._closing = False
        self.failed = asyncio.Event()
        self.failure: GaveUp | None = None

    def spawn(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        finite: bool = False,
        stall_seconds: float | None = None,
    ) -> Heartbeat:
        """Start ``run()`` as a supervised task and return its heartbeat.

        Parameters
        ----------
        name : str
            Unique task name (logs, ``/readyz``, ``/healthz``).
        run : callable
            Makes the task's coroutine; called again for each restart.
        finite : bool
            The task may end by returning; otherwise returning is a failure too.
        stall_seconds : float, optional
            How long its work may go without a beat (the supervisor's default if None).
        """
        if name in self._children:
            raise ValueError(f"a task named {name!r} is already supervised")
        heartbeat = Heartbeat(name, self._stall if stall_seconds is None else stall_seconds)
        child = _Child(name, run, finite, heartbeat)
        self._children[name] = child
        child.task = asyncio.create_task(self._keep(child), name=name)
        return heartbeat

    def task(self, name: str) -> asyncio.Task[None] | None:
        """The supervising task of ``name`` (it ends when the child ends for good)."""
        child = self._children.get(name)
        return child.task if child is not None else None

    def stalled(self) -> list[str]:
        """Tasks working without progress for longer than their stall time."""
        found = []
        for child in self._children.values():
            silent = child.heartbeat.stalled_for()
            if silent is not None:
                found.append(f"{child.name}: no progress for {silent:.0f} s")
        return found

    async def cancel(self, name: str) -> None:
        """Stop one task for good (it is not restarted); safe if it is gone."""
        child = self._children.pop(name, None)
        if child is not None and child.task is not None:
            child.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await child.task
        self._conditions.clear(f"task {name}")

    def discard(self, name: str) -> None:
        """Cancel one idle task for good without waiting for it (it is not restarted)."""
        child = self._children.pop(name, None)
        if child is not None and child.task is not None:
            child.task.cancel()
        self._conditions.clear(f"task {name}")

    async def stop(self) -> None:
        """Cancel every task and wait for them; idempotent."""
        self._closing = True
        for name in list(self._children):
            await self.cancel(name)

    async def _keep(self, child: _Child) -> None:
        condition = f"task {child.name}"
        while True:
            try:
                await child.run()
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this task is being stopped
                # A cancelled future awaited inside the task is a failure, not a stop.
                log.exception("task %s ended by a cancellation it did not ask for", child.name)
                problem = f"{type(exc).__name__}: an awaited operation was cancelled"
            except Fatal as exc:
                log.critical("task %s failed fatally: %s", child.name, exc)
                self._give_up(GaveUp(f"task {child.name} failed: {exc}"))
                return
            except Exception as exc:
                log.exception("task %s died", child.name)
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if child.finite or self._closing:
                    return
                log.error("task %s ended unexpectedly", child.name)
                problem = "ended unexpectedly"
            now = time.monotonic()
            child.failures.append(now)
            while child.failures and now - child.failures[0] > self._window:
                child.failures.popleft()
            if len(child.failures) > self._max_restarts:
                self._give_up(
                    GaveUp(
                        f"task {child.name} failed {len(child.failures)} times within "
                        f"{self._window:g} s (last: {problem}); exiting so that the process "
                        "is restarted"
                    )
                )
                return
            delay = min(0.5 * 2 ** (len(child.failures) - 1), 30.0) * random.uniform(0.8, 1.2)
            self._conditions.set(condition, f"{condition} died ({problem}); restarting")
            log.warning("restarting task %s in %.1f s", child.name, delay)
            await asyncio.sleep(delay)
            self._conditions.clear(condition)
            if self._on_restart is not None:
                self._on_restart(child.name)

    def _give_up(self, failure: GaveUp) -> None:
        if self.failure is None:
            self.failure = failure
        self._conditions.set("supervisor", str(failure))
        self.failed.set()
