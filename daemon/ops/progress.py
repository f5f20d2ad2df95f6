"""Heartbeats: how the supervisor tells a busy task from a stuck one."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

__all__ = ["Heartbeat", "beat"]

_current: contextvars.ContextVar[Heartbeat | None] = contextvars.ContextVar(
    "skystream_heartbeat", default=None
)


class Heartbeat:
    """Progress of one long-lived task.

    A task is stuck when it has been working (inside `working`) for longer than
    ``stall_seconds`` without a `beat`. Waiting for work is not being stuck.

    Parameters
    ----------
    name : str
        The task's name.
    stall_seconds : float
        How long work may go without a beat.
    """

    def __init__(self, name: str, stall_seconds: float) -> None:
        self.name = name
        self.stall_seconds = stall_seconds
        self._last = time.monotonic()
        self._depth = 0

    def beat(self) -> None:
        """Record progress."""
        self._last = time.monotonic()

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """Mark a unit of work; `beat` (also reached through the module's `beat`) inside it."""
        self._depth += 1
        self.beat()
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)
            self._depth -= 1
            self.beat()

    def stalled_for(self) -> float | None:
        """Seconds since the last beat when working past ``stall_seconds``, else None."""
        if self._depth == 0:
            return None
        silent = time.monotonic() - self._last
        return silent if silent > self.stall_seconds else None


def beat() -> None:
    """Record progress on the heartbeat of the work in hand, if any (retry loops call it)."""
    heartbeat = _current.get()
    if heartbeat is not None:
        heartbeat.beat()
