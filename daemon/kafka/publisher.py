"""Publish events to Kafka (products, sky matches, state, dead letters), acknowledged by all."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from daemon.kafka.options import started
from daemon.ops.metrics import Metrics

__all__ = ["EventPublisher"]

log = logging.getLogger("skystream.sink.kafka")


class EventPublisher:
    """One producer (``acks=all``) shared by everything skystream publishes.

    `publish` returns only once the brokers acknowledged the record, retrying with
    jittered backoff through broker outages; callers acknowledge their input after it.

    Parameters
    ----------
    options : dict
        Client options (`daemon.kafka.options.client_options`).
    metrics : Metrics
        Produced-events counter.
    """

    def __init__(self, options: dict[str, Any], metrics: Metrics) -> None:
        self._options = options
        self._producer: AIOKafkaProducer | None = None
        self._metrics = metrics

    async def start(self) -> None:
        """Connect, retrying while the brokers are unreachable."""
        self._producer = await started(lambda: AIOKafkaProducer(**self._options, acks="all"))

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
        delay = 0.5
        while True:
            try:
                await self._producer.send_and_wait(topic, payload, key=key.encode())
            except KafkaError as exc:
                # The cause is in the message; a traceback per retry would drown the log.
                log.error(  # noqa: TRY400
                    "cannot publish to %s (%s); retrying in %.1f s", topic, exc, delay
                )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)
            else:
                self._metrics.kafka_produced.labels(topic).inc()
                return
