"""The one retry policy: back off with jitter, acknowledge nothing, name the condition."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential,
    wait_random,
)

from daemon.errors import retriable_cause
from daemon.ops.conditions import Conditions
from daemon.ops.progress import beat

__all__ = ["Retrier"]

log = logging.getLogger("skystream.retry")
T = TypeVar("T")


class Retrier:
    """Runs an operation until it succeeds, retrying only what `retriable_cause` accepts.

    While an operation is failing its condition is held (``/readyz`` names it, with the
    time it began); the first success clears it. There is no attempt limit: a full disk
    or a broker outage lasts as long as it lasts, and the service's stop cancels the wait.
    Errors that would only repeat propagate at once.

    Parameters
    ----------
    conditions : Conditions
        Where failing operations are named.
    initial_seconds, max_seconds : float
        First and longest backoff; each wait doubles, with jitter.
    """

    def __init__(
        self, conditions: Conditions, *, initial_seconds: float = 0.5, max_seconds: float = 30.0
    ) -> None:
        self.conditions = conditions
        self._initial = initial_seconds
        self._max = max_seconds

    async def call(self, where: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Await ``operation()`` until it succeeds.

        Parameters
        ----------
        where : str
            The resource at stake, for people and as the condition's name
            (``"products folder"``, ``"ledger"``, ``"Kafka brokers"``).
        operation : callable
            Makes a fresh awaitable per attempt.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: retriable_cause(exc) is not None),
            wait=wait_exponential(multiplier=self._initial, max=self._max)
            + wait_random(0, self._initial),
            before_sleep=lambda state: self._failed(where, state),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                result = await operation()
        if self.conditions.clear(where):
            log.warning("%s: recovered", where)
        return result

    def _failed(self, where: str, state: RetryCallState) -> None:
        beat()  # waiting out a known condition is not being stuck
        exc = state.outcome.exception() if state.outcome is not None else None
        cause = retriable_cause(exc) if exc is not None else "unknown"
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        first = self.conditions.set(where, f"{where}: {cause}")
        # One line per attempt, without a traceback: the cause is the message.
        log.log(
            logging.ERROR if first else logging.WARNING,
            "%s: %s; attempt %d failed, retrying in %.1f s (nothing acknowledged meanwhile)",
            where, cause, state.attempt_number, delay,
        )  # fmt: skip
