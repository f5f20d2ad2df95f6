"""Lanes: one ordered, bounded lane per stack key, with room for exposures that must wait."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from daemon.intake.delivery import Delivery
from daemon.ops.metrics import Metrics
from daemon.ops.progress import Heartbeat
from daemon.ops.supervisor import Supervisor

__all__ = ["Handler", "Lanes"]

log = logging.getLogger("skystream.lanes")

#: ``await handler(delivery, key, may_park)`` settles a delivery and returns False, or, when
#: ``may_park`` and the delivery must wait (for its stack), returns True without settling.
Handler = Callable[[Delivery, str, bool], Awaitable[bool]]
#: ``can_go(key, delivery)``: whether a delivery parked in lane ``key`` may go on now.
CanGo = Callable[[str, Delivery], bool]


@dataclass(eq=False)
class _Parked:
    delivery: Delivery
    deadline: float  # time.monotonic() when it goes on without what it waits for


@dataclass(eq=False)
class _Lane:
    key: str
    waiting: deque[Delivery] = field(default_factory=deque)
    parked: deque[_Parked] = field(default_factory=deque)
    held: set[Delivery] = field(default_factory=set)  # beyond the lane's size
    busy: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    heartbeat: Heartbeat | None = None
    last_active: float = field(default_factory=time.monotonic)
    recheck: bool = False  # a source gave deliveries away: look for them in this lane

    @property
    def depth(self) -> int:
        return len(self.waiting) + len(self.parked) + self.busy

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.parked and not self.busy


class Lanes:
    """Per-key lanes: each processes its deliveries in order, and no key waits for another.

    `put` never blocks. A lane holds up to ``queue_size`` deliveries (waiting, parked and
    in hand); deliveries beyond that are *held*: their source is told through
    `Delivery.hold` (Kafka pauses exactly their partition; a folder's files simply wait),
    and they enter the lane as it drains. A delivery that must wait for its stack is
    *parked* in its lane: it counts towards the lane's size and the drain, and goes on
    right after the delivery that makes it ready (so what it gets does not depend on
    timing), when ``park_seconds`` pass, when parked deliveries fill the lane, or when a
    finite input has ended.

    Parameters
    ----------
    handler : Handler
        Processes one delivery.
    can_go : CanGo
        Whether a parked delivery may go on now.
    supervisor : Supervisor
        Runs each lane's worker.
    queue_size : int
        Deliveries per lane before further ones are held.
    park_seconds : float
        Longest wait of a parked delivery.
    metrics : Metrics
        Lane depth and parked gauges.
    max_keys : int
        Most lanes at once (`accepts` refuses a further key).
    idle_seconds : float
        Lanes idle this long are removed by `reap`, with their metric series.
    prefetch : callable, optional
        Told a lane's next delivery when the one before it starts (to read it meanwhile).
    """

    def __init__(
        self,
        handler: Handler,
        can_go: CanGo,
        *,
        supervisor: Supervisor,
        queue_size: int,
        park_seconds: float,
        metrics: Metrics,
        max_keys: int = 256,
        idle_seconds: float = 3600.0,
        prefetch: Callable[[Delivery], None] | None = None,
    ) -> None:
        self._prefetch = prefetch
        self._max_keys = max_keys
        self._idle_seconds = idle_seconds
        self._handler = handler
        self._can_go = can_go
        self._supervisor = supervisor
        self._queue_size = queue_size
        self._park_seconds = park_seconds
        self._metrics = metrics
        self._lanes: dict[str, _Lane] = {}
        self._input_ended = False
        self._stopping = False
        self._changed = asyncio.Event()

    @property
    def saturated(self) -> list[str]:
        """Keys of lanes that are full (further deliveries are held)."""
        return [key for key, lane in self._lanes.items() if lane.depth >= self._queue_size]

    @property
    def idle(self) -> bool:
        """True when no lane holds, parks or processes anything."""
        return all(lane.idle for lane in self._lanes.values())

    def __len__(self) -> int:
        return sum(lane.depth for lane in self._lanes.values())

    def accepts(self, key: str) -> bool:
        """Whether ``key`` has a lane or may get one (idle lanes are reaped to make room)."""
        if key in self._lanes or len(self._lanes) < self._max_keys:
            return True
        self.reap()
        return len(self._lanes) < self._max_keys

    def reap(self) -> list[str]:
        """Remove lanes idle for ``idle_seconds``, with their metric series; their keys."""
        now = time.monotonic()
        gone = [
            key
            for key, lane in self._lanes.items()
            if lane.idle and now - lane.last_active >= self._idle_seconds
        ]
        for key in gone:
            del self._lanes[key]
            self._supervisor.discard(f"lane {key}")
            for gauge in (self._metrics.lane_depth, self._metrics.lane_parked):
                with contextlib.suppress(KeyError):
                    gauge.remove(key)
        if gone:
            log.info("idle lanes removed: %s", ", ".join(gone))
        return gone

    async def reap_forever(self) -> None:
        """`reap` every quarter of ``idle_seconds`` (a supervised task)."""
        while True:
            await asyncio.sleep(self._idle_seconds / 4)
            self.reap()

    def put(self, key: str, delivery: Delivery) -> None:
        """Give a delivery to the lane of ``key`` (made on first use); never waits."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
            lane.heartbeat = self._supervisor.spawn(
                f"lane {key}", lambda: self._work(lane), finite=True
            )
            log.info("new lane %s", key)
        lane.waiting.append(delivery)
        if delivery.given_away():  # given away while routed: dropped when its lane gets to it
            lane.recheck = True
        lane.last_active = time.monotonic()
        self._rebalance(lane)
        lane.wake.set()

    def input_ended(self) -> None:
        """A finite input has nothing more: parked deliveries need not wait any longer."""
        self._input_ended = True
        for lane in self._lanes.values():
            lane.wake.set()

    async def join(self) -> None:
        """Wait until every lane is idle."""
        while not self.idle:
            self._changed.clear()
            await self._changed.wait()

    async def stop(self, grace_seconds: float) -> int:
        """Let deliveries in hand finish (up to the grace period), then stop every lane.

        Waiting, held and parked deliveries are dropped unacknowledged; their source
        delivers them again (rescan, uncommitted offset). Returns how many were dropped.
        """
        self._stopping = True
        try:
            await asyncio.wait_for(self._until_none_busy(), grace_seconds)
        except TimeoutError:
            busy = [key for key, lane in self._lanes.items() if lane.busy]
            log.warning("grace period over: abandoning the exposure in hand in %s",
                        ", ".join(busy))  # fmt: skip
        dropped = 0
        for key, lane in list(self._lanes.items()):
            await self._supervisor.cancel(f"lane {key}")
            dropped += len(lane.waiting) + len(lane.parked)
        self._lanes.clear()
        return dropped

    def recheck_ownership(self) -> None:
        """A source gave deliveries away: each lane hands those it holds to the handler next.

        Waiting and parked ones alike go to the handler at once (which drops them), so a
        revocation waits for nothing that has not started.
        """
        for lane in self._lanes.values():
            lane.recheck = True
            lane.wake.set()

    async def _until_none_busy(self) -> None:
        while any(lane.busy for lane in self._lanes.values()):
            self._changed.clear()
            await self._changed.wait()

    # -- one lane ------------------------------------------------------------------------

    def _rebalance(self, lane: _Lane) -> None:
        """Tell sources which deliveries are held beyond the lane's size, and publish gauges."""
        room = max(self._queue_size - len(lane.parked) - lane.busy, 0)
        for index, delivery in enumerate(lane.waiting):
            held = index >= room
            if held != (delivery in lane.held):
                if held:
                    lane.held.add(delivery)
                else:
                    lane.held.discard(delivery)
                delivery.hold(held)
        self._metrics.lane_depth.labels(lane.key).set(lane.depth)
        self._metrics.lane_parked.labels(lane.key).set(len(lane.parked))
        self._changed.set()

    def _release(self, lane: _Lane) -> _Parked | None:
        """The parked delivery that goes on now, if any (oldest first)."""
        if not lane.parked:
            return None
        first = lane.parked[0]
        if (
            self._can_go(lane.key, first.delivery)
            or (self._input_ended and not lane.waiting)
            or time.monotonic() >= first.deadline
            # Parked deliveries fill the lane and others wait behind them: make room.
            or (len(lane.parked) >= self._queue_size and bool(lane.waiting))
        ):
            return lane.parked.popleft()
        return None

    def _given_away(self, lane: _Lane) -> Delivery | None:
        """Take a waiting or parked delivery whose source gave it away, if any is left."""
        for entry in lane.parked:
            if entry.delivery.given_away():
                lane.parked.remove(entry)
                return entry.delivery
        for delivery in lane.waiting:
            if delivery.given_away():
                lane.waiting.remove(delivery)
                lane.held.discard(delivery)
                return delivery
        lane.recheck = False
        return None

    async def _work(self, lane: _Lane) -> None:
        while not self._stopping:
            given_away = self._given_away(lane) if lane.recheck else None
            if given_away is not None:
                await self._handle(lane, given_away, may_park=False)
                continue
            parked = self._release(lane)
            if parked is not None:
                await self._handle(lane, parked.delivery, may_park=False)
                continue
            if not lane.waiting:
                lane.wake.clear()
                timeout = (
                    max(lane.parked[0].deadline - time.monotonic(), 0.0) if lane.parked else None
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.wake.wait(), timeout)
                continue
            delivery = lane.waiting.popleft()
            lane.held.discard(delivery)
            if await self._handle(lane, delivery, may_park=True):
                lane.parked.append(_Parked(delivery, time.monotonic() + self._park_seconds))
                log.info("%s parked in lane %s until its stack is ready",
                         delivery.event.path.name, lane.key)  # fmt: skip
                self._rebalance(lane)

    async def _handle(self, lane: _Lane, delivery: Delivery, *, may_park: bool) -> bool:
        assert lane.heartbeat is not None
        lane.busy = True
        try:
            self._rebalance(lane)
            if self._prefetch is not None and lane.waiting:
                self._prefetch(lane.waiting[0])  # its read overlaps this one's work
            with lane.heartbeat.working():
                return await self._handler(delivery, lane.key, may_park)
        except BaseException:
            # Not settled: back to the front, in order, for the restarted worker (or the
            # next start) to take again.
            lane.waiting.appendleft(delivery)
            raise
        finally:
            lane.busy = False
            lane.last_active = time.monotonic()
            self._rebalance(lane)
