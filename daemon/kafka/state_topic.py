"""Stack and skymatch-group membership on a compacted Kafka topic, for replicas taking over."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from daemon.kafka.publisher import EventPublisher

__all__ = ["STACK_PREFIX", "SKYMATCH_PREFIX", "StateTopic"]

log = logging.getLogger("skystream.state")

STACK_PREFIX = "stack/"
SKYMATCH_PREFIX = "skymatch/"


class StateTopic:
    """Publishes membership records keyed by ``stack/<key>`` or ``skymatch/<group>``.

    Only membership travels (member ids, files, observation times, cached pair
    statistics), never pixels: a replica rebuilds stacks and groups from the member files,
    which live on storage every replica reads. Last value per key wins; a closed group
    leaves a tombstone. Create the topic with ``cleanup.policy=compact``.

    Parameters
    ----------
    topic : str
        The state topic.
    publisher : EventPublisher
        Shared producer.
    options : dict
        Client options for the reader.
    """

    def __init__(self, topic: str, publisher: EventPublisher, options: dict[str, Any]) -> None:
        self.topic = topic
        self._publisher = publisher
        self._options = options

    async def publish(self, key: str, record: dict[str, Any] | None) -> None:
        """Record the latest membership of ``key`` (None: it is gone)."""
        payload = None if record is None else json.dumps(record).encode()
        await self._publisher.publish(self.topic, payload, key)

    async def read(self) -> dict[str, dict[str, Any]]:
        """Every live record, read from the beginning up to the current end of the topic."""
        consumer = AIOKafkaConsumer(**self._options, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.topic) or set()
            if not partitions:
                await consumer.topics()  # refresh metadata once: the topic may be new to us
                partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            if not tps:
                return {}
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            latest: dict[str, dict[str, Any] | None] = {}
            remaining = {tp for tp in tps if end[tp] > 0}
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000)
                for messages in batches.values():
                    for message in messages:
                        key = (message.key or b"").decode()
                        latest[key] = None if message.value is None else json.loads(message.value)
                for tp in list(remaining):
                    if await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        records = {key: value for key, value in latest.items() if value is not None}
        log.info("state topic %s: %d live record(s)", self.topic, len(records))
        return records
