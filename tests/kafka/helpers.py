"""Helpers of the Kafka tests: settings, producing and reading topics, a daemon process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from daemon.app.settings import Settings
from tests.conftest import test_settings

#: Client timings the tansu broker needs (a group join takes session_timeout_ms / 2).
CLIENT = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def committed_offsets(bootstrap: str, group: str, topic: str) -> int:
    """Offsets the group committed, summed over the topic's partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, **CLIENT)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        offsets = [await consumer.committed(TopicPartition(topic, p)) for p in partitions]
    finally:
        await consumer.stop()
    return sum(offset or 0 for offset in offsets)


def kafka_overrides(tmp_path: Path, bootstrap: str, **kafka: Any) -> dict[str, Any]:
    """Nested overrides for a Kafka source on fresh topics, files under ``tmp_path/data``."""
    topic = f"exposures-{uuid.uuid4().hex[:8]}"
    return {
        "source": {"kind": "kafka", "kafka": {
            "bootstrap_servers": [bootstrap], "topic": topic, "group_id": f"g-{topic}",
            "dead_letter_topic": f"dead-{topic}", "state_topic": f"state-{topic}",
            "mosaic_topic": f"mosaic-{topic}", "mosaic_group_id": f"gm-{topic}",
            "allowed_roots": [str(tmp_path / "data")], "commit_interval_seconds": 0.2,
            **CLIENT, **kafka}},
        "output": {"product_topic": f"products-{topic}"},
    }  # fmt: skip


def kafka_settings(tmp_path: Path, bootstrap: str, **kafka: Any) -> Settings:
    """Test settings with a Kafka source (see `kafka_overrides`)."""
    return test_settings(tmp_path, **kafka_overrides(tmp_path, bootstrap, **kafka))


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create a topic with several partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def send(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], partition: int | None = None
) -> None:
    """Produce ``(key, value)`` records, acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def read(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[dict]:
    """The first ``count`` JSON records of a topic (fails after ``timeout``)."""
    return [json.loads(raw) for raw in await read_raw(bootstrap, topic, count, timeout)]


async def read_raw(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[bytes]:
    """The first ``count`` record values of a topic."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"reader-{uuid.uuid4().hex[:6]}", **CLIENT)  # fmt: skip
    await consumer.start()
    records: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    records.extend(m.value for m in messages)
    finally:
        await consumer.stop()
    return records


async def read_all(bootstrap: str, topic: str, quiet: float = 3.0) -> list[bytes]:
    """Every record value of a topic: read until nothing new came for ``quiet`` seconds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"reader-{uuid.uuid4().hex[:6]}", **CLIENT)  # fmt: skip
    await consumer.start()
    records: list[bytes] = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                records.extend(m.value for m in messages)
                last = time.monotonic()
    finally:
        await consumer.stop()
    return records


def event(exposure_id: str, path: Path, **fields: Any) -> bytes:
    """An ExposureEvent for a file."""
    return json.dumps({"schema": "skystream.exposure/1", "exposure_id": exposure_id,
                       "uri": f"file://{path}", **fields}).encode()  # fmt: skip


class DaemonProcess:
    """``skystream run`` in a child process with a config file (for kill -9 and signals)."""

    def __init__(self, tmp_path: Path, overrides: dict[str, Any]) -> None:
        self.cwd = tmp_path
        self.config = tmp_path / "config.yaml"
        tree = {"metrics": {"host": "127.0.0.1", "port": 0}, "background": {"box_size": 16},
                "shutdown": {"grace_seconds": 10.0}, **overrides}  # fmt: skip
        self.config.write_text(yaml.safe_dump(tree))
        self.proc: subprocess.Popen[str] | None = None
        self.log = tmp_path / "daemon.log"

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "daemon", "run", "--config", str(self.config)]
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(command, cwd=self.cwd, env=env, stderr=log,
                                         stdout=subprocess.DEVNULL, text=True,
                                         start_new_session=True)  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)

    def wait_log(self, needle: str, timeout: float = 90) -> None:
        wait_sync(lambda: needle in self.log.read_text(), timeout, f"'{needle}' in the log")


def wait_sync(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` from synchronous code."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s: {what}")
        time.sleep(0.05)
