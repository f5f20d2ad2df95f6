"""Publish ExposureEvents for files already on disk (``skystream simulate --kafka``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaProducer

from daemon.events import ExposureEvent

__all__ = ["announce_files"]


async def announce_files(
    bootstrap: str, topic: str, files: Sequence[tuple[Path, str]], *, client_id: str = "skystream"
) -> int:
    """Send one claim-check event per ``(path, stack_key)``, keyed by stack key.

    Returns the number of events the brokers acknowledged (``acks=all``).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, acks="all")
    await producer.start()
    try:
        for path, key in files:
            event = ExposureEvent.for_file(path.absolute())
            payload = event.model_dump_json(by_alias=True).encode()
            await producer.send_and_wait(topic, payload, key=key.encode())
    finally:
        await producer.stop()
    return len(files)
