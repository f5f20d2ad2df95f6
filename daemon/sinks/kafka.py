"""Publish ProductEvents to Kafka, keyed by stack key, acknowledged by all replicas."""

from __future__ import annotations

import asyncio
import logging
import random

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from daemon.events import ProductEvent

__all__ = ["ProductPublisher"]

log = logging.getLogger("skystream.sink.kafka")


class ProductPublisher:
    """A producer (``acks=all``) for product events.

    Parameters
    ----------
    bootstrap_servers : list of str
        Kafka brokers.
    topic : str
        Product topic.
    client_id : str
        Client id shown to the brokers.
    """

    def __init__(self, bootstrap_servers: list[str], topic: str, client_id: str) -> None:
        self._topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=",".join(bootstrap_servers), client_id=client_id, acks="all"
        )

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self._producer.stop()

    async def publish(self, event: ProductEvent, key: str) -> None:
        """Send one event and wait for the brokers' acknowledgement, retrying with backoff."""
        payload = event.model_dump_json(by_alias=True).encode()
        delay = 0.5
        while True:
            try:
                await self._producer.send_and_wait(self._topic, payload, key=key.encode())
            except KafkaError as exc:
                # The cause is in the message; a traceback per retry would drown the log.
                log.error(  # noqa: TRY400
                    "cannot publish the product event of %s (%s); retrying in %.1f s",
                    event.exposure_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)
            else:
                return
