"""Consume ExposureEvents from Kafka; commit an offset only once its exposure is settled."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from daemon.app.settings import KafkaSourceSettings
from daemon.errors import Fatal, InvalidInput
from daemon.events import ExposureEvent
from daemon.intake.claims import parse_exposure_event
from daemon.intake.delivery import Delivery
from daemon.kafka.options import BROKERS, started
from daemon.kafka.publisher import EventPublisher
from daemon.ops.metrics import Metrics
from daemon.ops.supervisor import Supervisor
from daemon.retry import Retrier

__all__ = ["KafkaSource", "Record"]

log = logging.getLogger("skystream.source.kafka")

#: Seconds between two readings of the partitions' end offsets (the lag gauges).
LAG_REFRESH_SECONDS = 5.0

#: Awaited with newly assigned partitions before any of their events is fetched.
OnAssigned = Callable[[set[TopicPartition]], Awaitable[None]]
#: Awaited with partitions given away, once what settled of them is committed.
OnRevoked = Callable[[set[TopicPartition]], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Record(Generic[T]):
    """One parsed event of a partition, with the ways to settle it and hold its partition."""

    value: T
    partition: TopicPartition
    acknowledge: Callable[[str, str | None], Awaitable[None]]
    on_hold: Callable[[bool], None]
    owned: Callable[[], bool]
    on_abandon: Callable[[], None]


@dataclass(eq=False)
class _Partition:
    """What this replica tracks of one assigned partition."""

    tp: TopicPartition
    committed: int
    pending: set[int] = field(default_factory=set)  # delivered, not yet settled
    abandoned: set[int] = field(default_factory=set)  # pending, dropped unprocessed (revoked)
    seen: dict[int, float] = field(default_factory=dict)  # fetched, unsettled: monotonic time
    lag: int = 0  # the broker's end offset - committed, at the last refresh
    next: int | None = None  # offset after the last delivered event
    buffered: int = 0  # fetched, not yet delivered
    held: int = 0  # delivered, waiting behind a full lane
    paused: bool = False
    revoking: bool = False

    def position(self) -> int | None:
        """The offset that may be committed: the oldest unsettled one, or past the last."""
        return min(self.pending) if self.pending else self.next


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source._revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._source._assign(set(assigned))


class KafkaSource:
    """Deliveries of the events of a Kafka topic, at least once, with backpressure.

    A supervised poll task keeps calling the consumer (so ``max_poll_interval_ms`` is
    never exceeded, however long the work) and buffers events per partition. A partition
    is paused while one of its events is held behind a full lane or its buffer reaches
    ``pause_after``, and resumed when neither holds: a full lane pauses exactly the
    partitions that feed it. Offsets are committed every ``commit_interval_seconds``, per
    partition up to (not past) the oldest event not yet settled, so a crash re-delivers at
    most the unsettled ones. A malformed or refused event (bad JSON or schema, too large,
    a URI outside ``allowed_roots``) is published to the dead-letter topic with its reason
    and counts as settled only once the brokers acknowledged that. Broker errors are
    retried with the service's retry policy. Before a partition is given away, its
    in-flight work may finish for ``revoke_grace_seconds`` and what settled is
    committed; later acknowledgements of it are ignored (the new owner redelivers them).

    Parameters
    ----------
    settings : KafkaSourceSettings
        Topics, group, limits.
    options : dict
        Client options (brokers, security) from `daemon.kafka.options.client_options`.
    metrics : Metrics
        Kafka and received counters.
    publisher : EventPublisher
        Producer for the dead-letter topic.
    retrier : Retrier
        The retry policy for broker errors.
    on_assigned : callable, optional
        Awaited with new partitions before their events are fetched (state takeover).
    on_revoking : callable, optional
        Called with partitions about to be given away, as soon as their deliveries stop
        counting as owned (lanes then drop the ones not started, and the revocation waits
        only for the work in hand).
    on_revoked : callable, optional
        Awaited with partitions given away, after their final commit.
    name : str
        Metric label of the source (``kafka``; the sky-matching stage's is ``kafka-skymatch``).
    """

    def __init__(
        self,
        settings: KafkaSourceSettings,
        options: dict[str, Any],
        metrics: Metrics,
        publisher: EventPublisher,
        retrier: Retrier,
        *,
        on_assigned: OnAssigned | None = None,
        on_revoking: Callable[[set[TopicPartition]], None] | None = None,
        on_revoked: OnRevoked | None = None,
        name: str = "kafka",
    ) -> None:
        self.name = name
        self._on_revoking = on_revoking
        self._on_revoked = on_revoked
        self._retrier = retrier
        self._supervisor: Supervisor | None = None
        self._settings = settings
        self._options = options
        self._metrics = metrics
        self._publisher = publisher
        self._on_assigned = on_assigned
        self._consumer: AIOKafkaConsumer | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._queue: asyncio.Queue[tuple[_Partition, Any] | None] = asyncio.Queue()
        self._commit_lock = asyncio.Lock()
        self._joined = False
        self._progress = asyncio.Event()  # set whenever a delivery settles

    @property
    def connected(self) -> bool:
        """True while the consumer is a member of its group (for /readyz)."""
        return self._joined

    @property
    def assignment(self) -> set[TopicPartition]:
        """The partitions this replica holds now."""
        return set(self._parts)

    async def start(self, supervisor: Supervisor) -> None:
        """Join the consumer group (retrying while the brokers are unreachable)."""
        s = self._settings
        consumer = await started(
            lambda: AIOKafkaConsumer(
                **self._options,
                group_id=s.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=s.session_timeout_ms,
                heartbeat_interval_ms=s.heartbeat_interval_ms,
                max_poll_interval_ms=s.max_poll_interval_ms,
                fetch_max_wait_ms=s.fetch_max_wait_ms,
            ),
            self._retrier,
        )
        consumer.subscribe([s.topic], listener=_Rebalance(self))
        self._consumer = consumer
        self._supervisor = supervisor
        supervisor.spawn(f"{self.name} poll", lambda: self._poll(consumer))
        supervisor.spawn(f"{self.name} lag", lambda: self._refresh_lag(consumer))
        log.info("consuming %s from %s as group %s", s.topic, self._options["bootstrap_servers"],
                 s.group_id)  # fmt: skip

    async def stop(self) -> None:
        """Commit what settled and leave the group; bounded, safe to call twice."""
        consumer, self._consumer = self._consumer, None
        if self._supervisor is not None:
            await self._supervisor.cancel(f"{self.name} poll")
            await self._supervisor.cancel(f"{self.name} lag")
            self._supervisor = None
        self._queue.put_nowait(None)
        if consumer is None:
            return
        try:
            await asyncio.wait_for(self._commit(consumer), timeout=5.0)
        except (TimeoutError, KafkaError) as exc:
            log.warning("final commit failed (%s): settled events may be delivered again", exc)
        try:
            await asyncio.wait_for(consumer.stop(), timeout=10.0)
        except TimeoutError:
            log.warning("the Kafka consumer did not stop within 10 s; abandoning it")
        self._joined = False
        self._metrics.kafka_connected.set(0)

    # -- fetching ------------------------------------------------------------------------

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        s = self._settings
        last_commit = time.monotonic()
        while True:
            batches = await self._retrier.call(
                BROKERS, lambda: consumer.getmany(timeout_ms=200, max_records=s.pause_after)
            )
            if time.monotonic() - last_commit >= s.commit_interval_seconds:
                await self._retrier.call(BROKERS, lambda: self._commit(consumer))
                last_commit = time.monotonic()
            if self._joined:
                self._metrics.kafka_connected.set(1)
            for tp, messages in batches.items():
                part = self._parts.get(tp)
                if part is None or part.revoking or part.paused:
                    # Fetched in a rebalance's window: fetch them again when it is over.
                    with contextlib.suppress(IllegalStateError):
                        consumer.seek(tp, messages[0].offset)
                    continue
                fetched = time.monotonic()
                for message in messages:
                    part.seen.setdefault(message.offset, fetched)
                    self._queue.put_nowait((part, message))
                part.buffered += len(messages)
                self._metrics.kafka_consumed.labels(tp.topic).inc(len(messages))
                self._flow(part)
            self._update_gauges()

    def _flow(self, part: _Partition) -> None:
        """Pause a partition that is held or full, resume it once neither (with hysteresis)."""
        consumer = self._consumer
        if consumer is None or self._parts.get(part.tp) is not part:
            return
        limit = self._settings.pause_after
        if not part.paused and (part.held or part.buffered >= limit):
            consumer.pause(part.tp)
            part.paused = True
        elif part.paused and not part.held and part.buffered <= limit // 2:
            consumer.resume(part.tp)
            part.paused = False
        self._metrics.kafka_paused.set(sum(p.paused for p in self._parts.values()))

    def _holder(self, part: _Partition) -> Callable[[bool], None]:
        def hold(held: bool) -> None:
            part.held += 1 if held else -1
            self._flow(part)

        return hold

    def _update_gauges(self) -> None:
        self._metrics.kafka_paused.set(sum(part.paused for part in self._parts.values()))

    async def _refresh_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Read every assigned partition's end offset from the brokers, paused or not.

        The fetch position's high watermark stops moving while a partition is paused, so
        the lag comes from a ListOffsets request of its own on a timer instead.
        """
        while True:
            parts = list(self._parts.values())
            if parts:
                try:
                    ends = await asyncio.wait_for(
                        consumer.end_offsets([part.tp for part in parts]), LAG_REFRESH_SECONDS
                    )
                except (TimeoutError, KafkaError) as exc:
                    log.debug("end offsets unavailable (%s): lag gauges keep their last value",
                              exc or type(exc).__name__)  # fmt: skip
                    ends = {}
                for part in parts:
                    if part.tp in ends and self._parts.get(part.tp) is part:
                        self._set_lag(part, ends[part.tp])
            await asyncio.sleep(LAG_REFRESH_SECONDS)

    def _set_lag(self, part: _Partition, end: int) -> None:
        part.lag = max(end - max(part.committed, 0), 0)
        self._metrics.kafka_lag.labels(part.tp.topic, str(part.tp.partition)).set(part.lag)

    def oldest_unsettled(self) -> float | None:
        """``time.monotonic()`` when the oldest fetched, unsettled event was fetched."""
        return min((t for part in self._parts.values() for t in part.seen.values()), default=None)

    def backlog(self) -> int:
        """Events of the assigned partitions not committed yet (at the last lag refresh)."""
        return sum(part.lag for part in self._parts.values())

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """ExposureEvents in partition order; malformed ones go to the dead-letter topic."""
        async for record in self.records(self._parse_exposure):
            yield Delivery(
                event=record.value,
                source=self.name,
                arrived=time.monotonic(),
                acknowledge=record.acknowledge,
                may_repeat=True,
                on_hold=record.on_hold,
                owned=record.owned,
                on_abandon=record.on_abandon,
            )

    def _parse_exposure(self, raw: bytes | None) -> ExposureEvent:
        limit, roots = self._settings.max_event_bytes, self._settings.allowed_roots
        return parse_exposure_event(raw, max_bytes=limit, allowed_roots=roots)

    async def records(self, parse: Callable[[bytes | None], T]) -> AsyncIterator[Record[T]]:
        """Events parsed by ``parse`` in partition order.

        ``parse`` raises `InvalidInput` for an event it refuses: that event goes to the
        dead-letter topic and settles once the brokers have it.
        """
        while True:
            item = await self._queue.get()
            if item is None:
                return
            part, message = item
            if self._parts.get(part.tp) is not part or part.revoking:
                continue  # given away: its new owner fetches it again
            part.buffered -= 1
            self._flow(part)
            part.pending.add(message.offset)
            part.next = message.offset + 1
            self._metrics.received.labels(self.name).inc()
            try:
                value = parse(message.value)
            except InvalidInput as exc:
                try:
                    await self._dead_letter(message, exc)
                except Exception as failure:  # retriable errors were retried already
                    # Its offset would stay pending and hold the partition's commits
                    # forever: stop, so that a restart delivers it again.
                    raise Fatal(f"cannot publish a dead letter ({failure})") from failure
                part.pending.discard(message.offset)
                part.seen.pop(message.offset, None)
                continue
            yield Record(value, part.tp, self._acknowledger(part, message.offset),
                         self._holder(part), functools.partial(self._owns, part),
                         functools.partial(self._abandon, part, message.offset))  # fmt: skip

    def _owns(self, part: _Partition) -> bool:
        """Whether this replica still owns ``part`` (not revoked, not being revoked)."""
        return self._parts.get(part.tp) is part and not part.revoking

    def _abandon(self, part: _Partition, offset: int) -> None:
        """A delivery of a revoked partition was dropped: its revocation need not wait.

        It stays pending, so no commit passes it: the new owner delivers it again.
        """
        part.abandoned.add(offset)
        self._metrics.kafka_abandoned.inc()
        self._progress.set()

    def _acknowledger(self, part: _Partition, offset: int) -> Any:
        async def acknowledge(outcome: str, _product: str | None) -> None:
            if self._parts.get(part.tp) is not part:
                return  # the partition was given away; its new owner delivers it again
            part.pending.discard(offset)
            part.seen.pop(offset, None)
            self._progress.set()

        return acknowledge

    async def _dead_letter(self, message: Any, exc: InvalidInput) -> None:
        record = {
            "reason": exc.reason,
            "detail": exc.detail,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "original": (message.value or b"")[:4096].decode("utf-8", errors="replace"),
        }
        await self._publisher.publish(
            self._settings.dead_letter_topic,
            json.dumps(record).encode(),
            (message.key or b"").decode("utf-8", errors="replace"),
        )
        self._metrics.kafka_dead_lettered.labels(exc.reason).inc()
        self._metrics.quarantined.labels(exc.reason).inc()
        self._metrics.processed.labels("quarantined").inc()
        log.warning("dead-lettered %s[%d]@%d: %s (%s)", message.topic, message.partition,
                    message.offset, exc.reason, exc.detail)  # fmt: skip

    # -- commits and rebalances ----------------------------------------------------------

    async def _commit(
        self, consumer: AIOKafkaConsumer, parts: list[_Partition] | None = None
    ) -> None:
        async with self._commit_lock:
            chosen = list(self._parts.values()) if parts is None else parts
            offsets = {}
            for part in chosen:
                position = part.position()
                if position is not None and position > part.committed:
                    offsets[part.tp] = position
            if not offsets:
                return
            start = time.perf_counter()
            await consumer.commit(offsets)
            self._metrics.kafka_commit_seconds.observe(time.perf_counter() - start)
            for part in chosen:
                if part.tp in offsets:
                    part.committed = offsets[part.tp]

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        self._joined = False
        parts = [self._parts[tp] for tp in revoked if tp in self._parts]
        for part in parts:
            part.revoking = True
        if parts and self._on_revoking is not None:
            self._on_revoking({part.tp for part in parts})
        deadline = time.monotonic() + self._settings.revoke_grace_seconds
        while any(part.pending - part.abandoned for part in parts) and time.monotonic() < deadline:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), deadline - time.monotonic())
        if self._consumer is not None:
            try:
                await self._commit(self._consumer, parts)
            except KafkaError as exc:
                log.warning("commit before giving partitions away failed (%s)", exc)
        for part in parts:
            if part.pending:
                log.warning("partition %s given away with %d exposure(s) unfinished (%d not "
                            "started): its new owner processes them", part.tp,
                            len(part.pending), len(part.abandoned))  # fmt: skip
            self._parts.pop(part.tp, None)
            with contextlib.suppress(KeyError):
                self._metrics.kafka_lag.remove(part.tp.topic, str(part.tp.partition))
        if parts:
            log.info("partitions revoked: %s", ", ".join(_names(revoked)))
            if self._on_revoked is not None:
                await self._on_revoked({part.tp for part in parts})

    async def _assign(self, assigned: set[TopicPartition]) -> None:
        self._metrics.kafka_rebalances.inc()
        consumer = self._consumer
        new = {tp for tp in assigned if tp not in self._parts}
        if consumer is not None and new:
            # Paused until the state is taken over: nothing of theirs may be processed first.
            consumer.pause(*new)
            for tp in new:
                committed = await consumer.committed(tp)
                self._parts[tp] = _Partition(tp, committed=-1 if committed is None else committed)
            if self._on_assigned is not None:
                await self._on_assigned(new)
            consumer.resume(*new)
        self._joined = True
        self._metrics.kafka_connected.set(1)
        log.info("partitions assigned: %s", ", ".join(_names(assigned)) or "none")


def _names(tps: set[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)]
