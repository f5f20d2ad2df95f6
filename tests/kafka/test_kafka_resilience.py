"""Nothing lost through kill -9, SIGTERM with events in flight, and a broker restart."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import pytest

from daemon.fileio.fits_io import check_fits_complete, read_exposure, write_exposure
from tests.conftest import products_in, running, small_exposure, wait_for_count, wait_until
from tests.kafka.helpers import (
    DaemonProcess,
    committed_offsets,
    event,
    kafka_overrides,
    kafka_settings,
    read_all,
    send,
    wait_sync,
)


def _exposures(tmp_path: Path, count: int, size: int) -> list[tuple[bytes, bytes]]:
    data = tmp_path / "data"
    data.mkdir()
    for index in range(count):
        write_exposure(small_exposure(index, size=size), data / f"e{index:02d}.fits")
    return [(b"SIMCAM/SIM1/J", event(f"e{i:02d}", data / f"e{i:02d}.fits")) for i in range(count)]


def _check_products(tmp_path: Path, count: int, size: int) -> None:
    products = products_in(tmp_path / "products")
    assert sorted(p.name for p in products) == [f"e{i:02d}_bsub.fits" for i in range(count)]
    for path in products:
        assert check_fits_complete(path)[0] == "complete"
        assert read_exposure(path).shape == (size, size)
    assert not [p for p in (tmp_path / "products").iterdir() if p.name.startswith(".")]


def _check_events(raw: list[bytes], count: int) -> None:
    copies: dict[str, set[bytes]] = defaultdict(set)
    for value in raw:
        copies[json.loads(value)["exposure_id"]].add(value)
    assert sorted(copies) == [f"e{i:02d}" for i in range(count)]
    # At least once; a duplicate is the very event published before.
    differing = {
        key: [json.loads(v) for v in versions] for key, versions in copies.items()
        if len(versions) > 1
    }  # fmt: skip
    assert not differing, {
        key: {f: [v[f] for v in versions] for f in versions[0] if versions[0][f] != versions[1][f]}
        for key, versions in differing.items()
    }


def test_kill_9_at_random_points_loses_nothing_and_corrupts_nothing(tmp_path, bootstrap) -> None:
    count, size = 16, 384
    overrides = kafka_overrides(tmp_path, bootstrap)
    topic = overrides["source"]["kafka"]["topic"]
    asyncio.run(send(bootstrap, topic, _exposures(tmp_path, count, size)))
    daemon = DaemonProcess(tmp_path, overrides)
    chooser = random.Random(20261121)
    try:
        for round_ in range(1, 4):
            daemon.start()
            wait_sync(lambda r=round_: daemon.log.read_text().count("partitions assigned") >= r,
                      90, "the daemon joined its group")  # fmt: skip
            time.sleep(chooser.uniform(0.05, 1.0))
            daemon.kill()
        daemon.start()
        wait_sync(
            lambda: len(products_in(tmp_path / "products")) == count,
            120,
            f"all products; the daemon's log:\n{daemon.log.read_text()[-3000:]}",
        )
        raw = asyncio.run(read_all(bootstrap, overrides["output"]["product_topic"]))
    finally:
        daemon.kill()
    _check_products(tmp_path, count, size)
    _check_events(raw, count)


def test_sigterm_with_events_in_flight_drains_and_commits(tmp_path, bootstrap) -> None:
    count, size = 12, 512
    overrides = kafka_overrides(tmp_path, bootstrap)
    kafka = overrides["source"]["kafka"]
    asyncio.run(send(bootstrap, kafka["topic"], _exposures(tmp_path, count, size)))
    daemon = DaemonProcess(tmp_path, overrides)
    try:
        daemon.start()
        wait_sync(lambda: len(products_in(tmp_path / "products")) >= 2, 90, "two products")
        assert daemon.terminate() == 0
        log = daemon.log.read_text()
        assert "stop requested" in log
        finished = products_in(tmp_path / "products")
        assert len(finished) < count, "the signal came too late to test anything"
        committed = asyncio.run(committed_offsets(bootstrap, kafka["group_id"], kafka["topic"]))
        assert committed == len(finished)  # every settled exposure, and nothing else
        stamps = {p.name: p.stat().st_mtime_ns for p in finished}

        daemon.start()
        wait_sync(lambda: len(products_in(tmp_path / "products")) == count, 120, "all products")
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    for name, stamp in stamps.items():
        assert (tmp_path / "products" / name).stat().st_mtime_ns == stamp, f"{name} redone"
    assert asyncio.run(committed_offsets(bootstrap, kafka["group_id"], kafka["topic"])) == count
    _check_products(tmp_path, count, size)


@pytest.mark.asyncio
async def test_broker_killed_and_restarted_the_daemon_recovers_alone(
    tmp_path, durable_broker
) -> None:
    bootstrap = durable_broker.bootstrap
    settings = kafka_settings(tmp_path, bootstrap)
    topic = settings.source.kafka.topic
    messages = _exposures(tmp_path, 8, 128)
    await send(bootstrap, topic, messages[:4])
    async with running(settings) as service:
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 4)  # fmt: skip
        durable_broker.kill()
        await asyncio.sleep(3)  # the daemon sees the outage
        durable_broker.start()
        await send(bootstrap, topic, messages[4:])
        await wait_until(lambda: len(products_in(settings.output.directory)) == 8, 90)
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 8, timeout=60)  # fmt: skip
        await wait_until(lambda: service.readiness()[0], 60)
    raw = await read_all(bootstrap, settings.output.product_topic)
    _check_events(raw, 8)
    assert await committed_offsets(bootstrap, settings.source.kafka.group_id, topic) == 8
