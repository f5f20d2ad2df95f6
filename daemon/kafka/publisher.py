"""Publish events to Kafka (products, sky matches, state, dead letters), acknowledged by all."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiokafka import AIOKafkaProducer

from daemon.events import ProductEvent
from daemon.kafka.options import BROKERS, started
from daemon.ops.metrics import Metrics
from daemon.retry import Retrier

__all__ = ["EventPublisher"]

log = logging.getLogger("skystream.sink.kafka")


class EventPublisher:
    """One producer (``acks=all``) shared by everything skystream publishes.

    `publish` returns only once the brokers acknowledged the record, retrying through
    broker outages with the service's retry policy; callers acknowledge their input after
    it.

    Parameters
    ----------
    options : dict
        Client options (`daemon.kafka.options.client_options`).
    metrics : Metrics
        Produced-events counter.
    retrier : Retrier
        The retry policy for connecting and sending.
    """

    def __init__(self, options: dict[str, Any], metrics: Metrics, retrier: Retrier) -> None:
        self._options = options
        self._producer: AIOKafkaProducer | None = None
        self._metrics = metrics
        self._retrier = retrier

    async def start(self) -> None:
        """Connect, retrying while the brokers are unreachable."""
        self._producer = await started(
            lambda: AIOKafkaProducer(**self._options, acks="all"), self._retrier
        )

    async def stop(self) -> None:
        """Flush and disconnect (bounded)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), timeout=10.0)
            except TimeoutError:
                log.warning("the Kafka producer did not flush within 10 s; abandoning it")

    async def publish(self, topic: str, payload: bytes | None, key: str) -> None:
        """Send one record (None: a tombstone) and wait until the brokers have it."""
        if self._producer is None:
            raise RuntimeError("the publisher is not started")
        producer = self._producer
        await self._retrier.call(
            BROKERS, lambda: producer.send_and_wait(topic, payload, key=key.encode())
        )
        self._metrics.kafka_produced.labels(topic).inc()

    async def publish_product(self, topic: str, summary: ProductEvent, key: str) -> None:
        """Publish a ProductEvent as canonical JSON (sorted keys, no spaces).

        An event announced again from its sidecar is then byte-identical to the first.
        """
        document = summary.model_dump(mode="json", by_alias=True)
        payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        await self.publish(topic, payload, key)
