"""Sources turn the outside world into validated deliveries of ExposureEvents."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from daemon.errors import InvalidInput
from daemon.events import ExposureEvent
from daemon.ops.supervisor import Supervisor

__all__ = ["Delivery", "Source"]


@dataclass(frozen=True, eq=False)
class Delivery:
    """One exposure handed to the pipeline, with the way to acknowledge it.

    Attributes
    ----------
    event : ExposureEvent
        What to process.
    source : str
        Metric label of the source (``directory``, ``batch``).
    arrived : float
        ``time.monotonic()`` when the source first saw it (latency starts here).
    acknowledge : callable
        Awaited with the outcome (``complete``, ``skipped``, ``background`` or
        ``quarantined``) and the product path once the outcome is durable; the source then
        records or commits it. A delivery never acknowledged (the service stopped first)
        is delivered again by its source.
    problem : InvalidInput or None
        Set when the source already knows the input is bad (e.g. truncated).
    may_repeat : bool
        The source may deliver this again after a crash or a rebalance (Kafka): an
        existing product of the same input is then announced again, not recomputed.
    on_hold : callable or None
        Called with True when the delivery is held behind a full lane and with False when
        it enters the lane (Kafka pauses and resumes its partition); None: nothing to do.
    owned : callable or None
        False once the source has given the delivery away (its Kafka partition is revoked
        or being revoked: the new owner delivers it again); None: always owned.
    on_abandon : callable or None
        Called when the delivery is dropped unprocessed because it was given away (the
        source stops waiting for it; it is never acknowledged).
    retake : callable or None
        Takes back an input that changed after it was delivered (`InputChanged`): the
        source watches it again as a new arrival, nothing is acknowledged or refused.
        None: the source cannot (the input is refused with the reason it names).
    """

    event: ExposureEvent
    source: str
    arrived: float
    acknowledge: Callable[[str, str | None], Awaitable[None]]
    problem: InvalidInput | None = None
    may_repeat: bool = False
    on_hold: Callable[[bool], None] | None = None
    owned: Callable[[], bool] | None = None
    on_abandon: Callable[[], None] | None = None
    retake: Callable[[], None] | None = None

    def hold(self, held: bool) -> None:
        """Tell the source that this delivery is (True) or is no longer (False) held."""
        if self.on_hold is not None:
            self.on_hold(held)

    def given_away(self) -> bool:
        """Whether the source no longer owns this delivery (it must not be processed)."""
        return self.owned is not None and not self.owned()

    def abandon(self) -> None:
        """Tell the source that this given-away delivery was dropped unprocessed."""
        if self.on_abandon is not None:
            self.on_abandon()


class Source(Protocol):
    """What the service needs of a source."""

    name: str

    @property
    def connected(self) -> bool:
        """True once the source is running (for /readyz)."""
        ...

    async def start(self, supervisor: Supervisor) -> None:
        """Begin watching or consuming; long-lived loops run under ``supervisor``."""

    def deliveries(self) -> AsyncIterator[Delivery]:
        """Deliveries in arrival order; ends only for finite sources."""
        ...

    async def stop(self) -> None:
        """Stop; safe to call twice."""
