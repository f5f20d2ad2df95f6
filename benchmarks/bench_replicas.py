"""The replica curve: 1, 2 and 3 replicas against one broker, with sky matching as stage 2.

Starts its own tansu broker (``test`` extra) and runs ``skystream run`` daemons as child
processes in one consumer group, on an exposures topic and a mosaic topic of
``--partitions`` partitions each. The stream is mixed: each mosaic group has four tiles
(simulated dithered frames with a TAN WCS) on two stack keys, ``CAM/D<n>/J`` (which has
dedicated background frames: the stack method) and ``CAM/D<n>/H`` (none: the model
fallback); a group closes at four members. Per replica count it reports

- throughput: a burst of every event; exposures/s until the last ProductEvent, and until
  the last SkyMatchEvent;
- latency p50/p95 of a paced stream (``--rate`` exposures/s): ExposureEvent produced ->
  its ProductEvent received;

then, with two replicas on a paced stream, a third replica is started mid-stream: the p95
latency of the events sent during the rebalance (the ``--window`` seconds after the start),
and whether every product and every group's single SkyMatchEvent arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from bench_kafka import CLIENT, _start_broker, _stop, _topic

from daemon.fileio.fits_io import write_exposure
from processors import simulate_exposure

DETECTORS = 12
TILES = 4  # per group: two per stack key


@dataclass
class Stream:
    """The events of one run and when their results arrived."""

    backgrounds: list[tuple[str, bytes]]
    science: list[tuple[str, str, bytes]]  # (exposure id, key, event)
    groups: set[str]
    sent: dict[str, float] = field(default_factory=dict)
    products: dict[str, float] = field(default_factory=dict)
    closings: dict[str, int] = field(default_factory=dict)
    last_closing: float = 0.0


def _files(data: Path, groups: int, size: int) -> Stream:
    backgrounds = []
    for detector in range(DETECTORS):
        for index in range(2):
            path = data / f"bg-D{detector}-{index}.fits"
            write_exposure(simulate_exposure(100 + index, size=size, seed=detector), path,
                           fsync=False)  # fmt: skip
            key = f"CAM/D{detector}/J"
            backgrounds.append((key, _event(path, key, None, "background")))
    science = []
    for group in range(groups):
        detector = group % DETECTORS
        for tile in range(TILES):
            key = f"CAM/D{detector}/{'JH'[tile % 2]}"
            path = data / f"m{group:04d}-t{tile}.fits"
            write_exposure(simulate_exposure(tile, size=size, seed=group), path, fsync=False)
            science.append((path.stem, key, _event(path, key, f"mosaic-{group:04d}", "science")))
    return Stream(backgrounds, science, {f"mosaic-{g:04d}" for g in range(groups)})


def _event(path: Path, key: str, group: str | None, kind: str) -> bytes:
    return json.dumps({"schema": "skystream.exposure/1", "exposure_id": path.stem,
                       "uri": str(path), "stack_key": key, "group": group,
                       "kind": kind}).encode()  # fmt: skip


def _config(base: Path, data: Path, bootstrap: str, topic: str) -> dict:
    return {
        "source": {"kind": "kafka", "kafka": {
            "bootstrap_servers": [bootstrap], "topic": topic, "group_id": f"g-{topic}",
            "dead_letter_topic": f"dead-{topic}", "state_topic": f"state-{topic}",
            "mosaic_topic": f"mosaic-{topic}", "mosaic_group_id": f"gm-{topic}",
            "allowed_roots": [str(data)], **CLIENT}},
        "output": {"product_topic": f"products-{topic}", "skymatch_topic": f"sky-{topic}",
                   "directory": str(base / "products")},
        "background": {"method": "stack", "stack": {"min_members": 2,
                                                    "when_insufficient": "model"}},
        "skymatch": {"enabled": True, "skystat": "median", "max_members": TILES,
                     "close_after_seconds": 60},
        "metrics": {"port": 0, "host": "127.0.0.1"},
    }  # fmt: skip


def _daemon(base: Path, config: dict, index: int) -> subprocess.Popen:
    folder = base / f"replica{index}"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    log = (folder / "daemon.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--config", "config.yaml"],
        cwd=folder, stderr=log, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _wait_joined(base: Path, replicas: range) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        logs = [(base / f"replica{i}" / "daemon.log").read_text() for i in replicas]
        if all(text.count("partitions assigned") >= 2 for text in logs):  # both stages
            break
        time.sleep(0.1)
    time.sleep(3)  # the groups settle after the last member joined


async def _collect(bootstrap: str, topic: str, stream: Stream, done: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(f"products-{topic}", f"sky-{topic}", bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=f"r-{uuid.uuid4().hex}",
                                fetch_max_wait_ms=10, **CLIENT)  # fmt: skip
    await consumer.start()
    try:
        while not done.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for tp, messages in batches.items():
                for message in messages:
                    record = json.loads(message.value)
                    if tp.topic.startswith("sky-"):
                        stream.closings[record["group"]] = (
                            stream.closings.get(record["group"], 0) + 1
                        )
                        stream.last_closing = now
                    elif record["skymatch"] is None:
                        stream.products.setdefault(record["exposure_id"], now)
            if len(stream.products) == len(stream.science) and \
                    len(stream.closings) == len(stream.groups):  # fmt: skip
                done.set()
    finally:
        await consumer.stop()


async def _run(bootstrap: str, topic: str, stream: Stream, rate: float | None,
               on_half: asyncio.Event | None = None) -> float:  # fmt: skip
    """Send the stream (a burst when ``rate`` is None); return when everything arrived."""
    done = asyncio.Event()
    collector = asyncio.create_task(_collect(bootstrap, topic, stream, done))
    await asyncio.sleep(2)  # the collector joins first
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    start = time.perf_counter()
    for key, payload in stream.backgrounds:
        await producer.send(topic, payload, key=key.encode())
    for index, (exposure_id, key, payload) in enumerate(stream.science):
        if rate is not None:
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
        if on_half is not None and index == len(stream.science) // 2:
            on_half.set()
        stream.sent[exposure_id] = time.perf_counter()
        await producer.send(topic, payload, key=key.encode())
    await producer.stop()
    try:
        await asyncio.wait_for(done.wait(), 600)
    finally:
        done.set()
        await collector
    return start


def _latencies(stream: Stream, ids: list[str] | None = None) -> list[float]:
    chosen = ids if ids is not None else list(stream.sent)
    return [stream.products[i] - stream.sent[i] for i in chosen if i in stream.products]


def _p(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="exposure side (pixels)")
    parser.add_argument("--groups", type=int, default=60, help="mosaic groups per burst")
    parser.add_argument("--paced-groups", type=int, default=30, help="groups per paced run")
    parser.add_argument("--rate", type=float, default=10.0, help="paced exposures/s")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--window", type=float, default=10.0, help="rebalance window (s)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="skystream-bench-replicas-"))
    broker, bootstrap = _start_broker()
    load = os.getloadavg()[0]
    try:
        print(f"# replica curve, {args.size}x{args.size}, {os.cpu_count()} cores, "
              f"{args.partitions} partitions, load average before: {load:.2f}")  # fmt: skip
        print("| replicas | burst: exposures/s (products) | burst: exposures/s (all groups "
              "closed) | paced p50 | paced p95 |")  # fmt: skip
        print("|---|---|---|---|---|")
        for replicas in (1, 2, 3):
            figures = []
            for paced in (False, True):
                topic = f"r{replicas}{'p' if paced else 'b'}-{uuid.uuid4().hex[:6]}"
                run = base / topic
                (run / "data").mkdir(parents=True)
                stream = _files(run / "data", args.paced_groups if paced else args.groups,
                                args.size)  # fmt: skip
                for name in (topic, f"mosaic-{topic}"):
                    asyncio.run(_topic(bootstrap, name, args.partitions))
                config = _config(run, run / "data", bootstrap, topic)
                daemons = [_daemon(run, config, i) for i in range(replicas)]
                _wait_joined(run, range(replicas))
                start = asyncio.run(_run(bootstrap, topic, stream, args.rate if paced else None))
                _stop(daemons)
                assert all(n == 1 for n in stream.closings.values()), stream.closings
                if paced:
                    latencies = _latencies(stream)
                    figures += [f"{_p(latencies, 50):.3f} s", f"{_p(latencies, 95):.3f} s"]
                else:
                    count = len(stream.science)
                    figures += [f"{count / (max(stream.products.values()) - start):.1f}",
                                f"{count / (stream.last_closing - start):.1f}"]  # fmt: skip
            print(f"| {replicas} | " + " | ".join(figures) + " |", flush=True)

        topic = f"rebalance-{uuid.uuid4().hex[:6]}"
        run = base / topic
        (run / "data").mkdir(parents=True)
        stream = _files(run / "data", args.paced_groups * 2, args.size)
        for name in (topic, f"mosaic-{topic}"):
            asyncio.run(_topic(bootstrap, name, args.partitions))
        config = _config(run, run / "data", bootstrap, topic)
        daemons = [_daemon(run, config, i) for i in range(2)]
        _wait_joined(run, range(2))

        async def with_third() -> float:
            half = asyncio.Event()

            async def add() -> None:
                await half.wait()
                added.append(time.perf_counter())
                daemons.append(_daemon(run, config, 2))

            added: list[float] = []
            adder = asyncio.create_task(add())
            await _run(bootstrap, topic, stream, args.rate, on_half=half)
            await adder
            return added[0]

        added = asyncio.run(with_third())
        _stop(daemons)
        during = [i for i, t in stream.sent.items() if added <= t <= added + args.window]
        before = [i for i, t in stream.sent.items() if t < added]
        lost = len(stream.science) - len(stream.products)
        repeated = sum(n - 1 for n in stream.closings.values())
        print(f"\nrebalance (2 -> 3 replicas at {args.rate:.0f} exposures/s): p95 before "
              f"{_p(_latencies(stream, before), 95):.3f} s, p95 in the {args.window:.0f} s after "
              f"the third replica started {_p(_latencies(stream, during), 95):.3f} s "
              f"(max {max(_latencies(stream, during)):.3f} s); products lost {lost}, groups "
              f"closed {len(stream.closings)}/{len(stream.groups)}, repeated closings "
              f"{repeated}")  # fmt: skip
        print(f"# load average after: {os.getloadavg()[0]:.2f}")
    finally:
        os.killpg(broker.pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
