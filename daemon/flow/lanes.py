"""Lanes: one ordered, bounded queue and one worker task per stack key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from daemon.intake.delivery import Delivery
from daemon.ops.metrics import Metrics

__all__ = ["Lanes"]

log = logging.getLogger("skystream.lanes")

Handler = Callable[[Delivery, str], Awaitable[None]]


@dataclass
class _Lane:
    queue: asyncio.Queue[Delivery]
    task: asyncio.Task[None] | None = None
    busy: bool = False


class Lanes:
    """Routes deliveries to per-key lanes; each lane processes its items in order.

    A full lane makes `put` wait, which pauses whatever feeds it (backpressure).

    Parameters
    ----------
    handler : callable
        ``await handler(delivery, key)`` processes one item.
    queue_size : int
        Items waiting per lane.
    metrics : Metrics
        Lane depth gauge.
    """

    def __init__(self, handler: Handler, *, queue_size: int, metrics: Metrics) -> None:
        self._handler = handler
        self._queue_size = queue_size
        self._metrics = metrics
        self._lanes: dict[str, _Lane] = {}
        self._closing = False

    @property
    def saturated(self) -> list[str]:
        """Keys of lanes whose queue is full."""
        return [key for key, lane in self._lanes.items() if lane.queue.full()]

    @property
    def idle(self) -> bool:
        """True when no lane holds or processes anything."""
        return all(lane.queue.empty() and not lane.busy for lane in self._lanes.values())

    async def put(self, key: str, delivery: Delivery) -> None:
        """Queue a delivery on its lane, waiting while the lane is full."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(asyncio.Queue(self._queue_size))
            lane.task = asyncio.create_task(self._work(key, lane), name=f"lane {key}")
            log.info("new lane %s", key)
        await lane.queue.put(delivery)
        self._metrics.lane_depth.labels(key).set(lane.queue.qsize())

    async def join(self) -> None:
        """Wait until every item queued so far has been processed."""
        while not self.idle:
            await asyncio.gather(*(lane.queue.join() for lane in list(self._lanes.values())))

    async def _work(self, key: str, lane: _Lane) -> None:
        while not self._closing:
            delivery = await lane.queue.get()
            self._metrics.lane_depth.labels(key).set(lane.queue.qsize())
            lane.busy = True
            try:
                await self._handler(delivery, key)
            except Exception:
                # The handler settles every outcome itself; reaching here is a bug, and one
                # bad item must not silence the lane.
                log.exception("lane %s: unhandled error for %s", key, delivery.event.uri)
            finally:
                lane.busy = False
                lane.queue.task_done()

    async def stop(self, grace_seconds: float) -> int:
        """Let in-flight items finish (up to the grace period), then stop every lane.

        Items still queued are dropped unacknowledged; their source delivers them again
        (rescan, uncommitted offset). Returns how many were dropped.
        """
        self._closing = True
        busy = [lane.task for lane in self._lanes.values() if lane.busy and lane.task]
        idle = [lane.task for lane in self._lanes.values() if not lane.busy and lane.task]
        for task in idle:
            task.cancel()
        if busy:
            _, late = await asyncio.wait(busy, timeout=grace_seconds)
            for task in late:
                log.warning("grace period over: abandoning %s", task.get_name())
                task.cancel()
        for lane in self._lanes.values():
            if lane.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
        dropped = sum(lane.queue.qsize() for lane in self._lanes.values())
        self._lanes.clear()
        return dropped
