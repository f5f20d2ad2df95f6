"""The one retry policy: back off with jitter, acknowledge nothing, name the condition."""

from __future__ import annotations

import logging
from collections import Counter
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
    time it began) until no caller of that resource is failing any more. There is no
    attempt limit: a full disk or a broker outage lasts as long as it lasts, and the
    service's stop cancels the wait.
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
        self._failing: Counter[str] = Counter()  # callers in backoff, per resource
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
        failed = succeeded = False

        def on_failure(state: RetryCallState) -> None:
            nonlocal failed
            if not failed:
                failed = True
                self._failing[where] += 1
            self._failed(where, state)

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: retriable_cause(exc) is not None),
            wait=wait_exponential(multiplier=self._initial, max=self._max)
            + wait_random(0, self._initial),
            before_sleep=on_failure,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await operation()
            succeeded = True
            return result
        finally:
            # The condition holds while any caller of ``where`` is failing; the last one to
            # stop (succeeded, given up on an error that would repeat, or cancelled) clears it.
            if failed:
                self._failing[where] -= 1
                if self._failing[where] == 0:
                    del self._failing[where]
                    if self.conditions.clear(where):
                        log.warning("%s: %s", where,
                                    "recovered" if succeeded else "no longer retried")  # fmt: skip

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
