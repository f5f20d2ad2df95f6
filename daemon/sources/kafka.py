"""Consume ExposureEvents from Kafka; commit an offset only once its exposure is settled."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from daemon.claims import parse_exposure_event
from daemon.errors import InvalidInput
from daemon.metrics import Metrics
from daemon.settings import KafkaSourceSettings
from daemon.sources import RETRY, Delivery

__all__ = ["KafkaSource"]

log = logging.getLogger("skystream.source.kafka")


class KafkaSource:
    """Deliveries of the events of a Kafka topic, with at-least-once commits.

    Offsets are committed manually: for each partition, up to (not past) the oldest
    event not yet settled, so a crash re-delivers at most the unsettled ones. A malformed
    or refused event (bad JSON or schema, too large, a URI outside ``allowed_roots``) is
    published to the dead-letter topic with its reason, and its offset counts as settled
    only once that publish was acknowledged. A delivery handed back (`RETRY`) rewinds its
    partition to it, so it — and what followed it — comes again (products are idempotent).

    Parameters
    ----------
    settings : KafkaSourceSettings
        Brokers, topics, group, limits.
    metrics : Metrics
        Received counts.
    """

    name = "kafka"

    def __init__(self, settings: KafkaSourceSettings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._pending: dict[TopicPartition, set[int]] = defaultdict(set)
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    @property
    def connected(self) -> bool:
        """True once the consumer has partitions assigned."""
        return self._consumer is not None and bool(self._consumer.assignment())

    async def start(self) -> None:
        """Connect the consumer and the dead-letter producer."""
        s = self._settings
        servers = ",".join(s.bootstrap_servers)
        self._producer = AIOKafkaProducer(bootstrap_servers=servers, client_id=s.client_id,
                                          acks="all")  # fmt: skip
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            s.topic,
            bootstrap_servers=servers,
            group_id=s.group_id,
            client_id=s.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
        )
        await self._consumer.start()
        log.info("consuming %s from %s as group %s", s.topic, servers, s.group_id)

    async def stop(self) -> None:
        """Disconnect (bounded by the clients' own timeouts); safe to call twice."""
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Events in partition order; malformed ones go to the dead-letter topic."""
        while self._consumer is not None:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=64)
            for tp, messages in batches.items():
                for message in messages:
                    self._pending[tp].add(message.offset)
                    self._next[tp] = message.offset + 1
                    self._metrics.received.labels(self.name).inc()
                    try:
                        event = parse_exposure_event(
                            message.value,
                            max_bytes=self._settings.max_event_bytes,
                            allowed_roots=self._settings.allowed_roots,
                        )
                    except InvalidInput as exc:
                        await self._dead_letter(message, exc)
                        await self._settle(tp, message.offset)
                        continue
                    yield Delivery(
                        event=event,
                        source=self.name,
                        arrived=time.monotonic(),
                        acknowledge=self._acknowledger(tp, message.offset),
                    )

    def _acknowledger(self, tp: TopicPartition, offset: int) -> Any:
        async def acknowledge(outcome: str, _product: str | None) -> None:
            if outcome == RETRY and self._consumer is not None:
                self._pending[tp] = {o for o in self._pending[tp] if o < offset}
                self._consumer.seek(tp, offset)
                return
            await self._settle(tp, offset)

        return acknowledge

    async def _dead_letter(self, message: Any, exc: InvalidInput) -> None:
        if self._producer is None:
            raise RuntimeError("the Kafka source is not started")
        record = {
            "reason": exc.reason,
            "detail": exc.detail,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "original": (message.value or b"")[:4096].decode("utf-8", errors="replace"),
        }
        await self._producer.send_and_wait(
            self._settings.dead_letter_topic, json.dumps(record).encode(), key=message.key
        )
        self._metrics.quarantined.labels(exc.reason).inc()
        self._metrics.processed.labels("quarantined").inc()
        log.warning("dead-lettered %s[%d]@%d: %s (%s)", message.topic, message.partition,
                    message.offset, exc.reason, exc.detail)  # fmt: skip

    async def _settle(self, tp: TopicPartition, offset: int) -> None:
        self._pending[tp].discard(offset)
        position = min(self._pending[tp]) if self._pending[tp] else self._next[tp]
        if self._consumer is not None and position > self._committed.get(tp, -1):
            await self._consumer.commit({tp: position})
            self._committed[tp] = position
