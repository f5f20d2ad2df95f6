"""Kafka in, Kafka out, against a real broker: claim checks, commits, dead letters."""

from __future__ import annotations

import asyncio
import json

import pytest

from daemon.fileio.fits_io import write_exposure
from tests.conftest import (
    metric,
    products_in,
    running,
    small_exposure,
    wait_for_count,
    wait_until,
)
from tests.kafka.helpers import committed_offsets, event, kafka_settings, read, send

pytestmark = pytest.mark.asyncio


async def test_events_in_products_and_product_events_out_committed(tmp_path, bootstrap) -> None:
    settings = kafka_settings(tmp_path, bootstrap)
    data = tmp_path / "data"
    data.mkdir()
    count = 8
    for index in range(count):
        write_exposure(small_exposure(index, size=64), data / f"k{index}.fits")
    kafka = settings.source.kafka
    events_in = [(b"SIMCAM/SIM1/J", event(f"k{i}", data / f"k{i}.fits")) for i in range(count)]
    await send(bootstrap, kafka.topic, events_in)
    async with running(settings) as service:
        await wait_until(lambda: len(products_in(settings.output.directory)) == count, 60)
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, count)  # fmt: skip
    names = sorted(p.name for p in products_in(settings.output.directory))
    assert names == sorted(f"k{i}_bsub.fits" for i in range(count))
    events = await read(bootstrap, settings.output.product_topic, count)
    assert {e["exposure_id"] for e in events} == {f"k{i}" for i in range(count)}
    assert all(e["schema"] == "skystream.product/1" and e["status"] == "COMPLETE" for e in events)

    # Committed: a restart in the same group processes nothing again.
    async with running(settings) as service:
        await asyncio.sleep(4)  # a group join and a few polls
        assert metric(service, "skystream_exposures_received_total", {"source": "kafka"}) == 0


async def test_bad_events_are_dead_lettered_and_the_partition_keeps_flowing(
    tmp_path, bootstrap
) -> None:
    settings = kafka_settings(tmp_path, bootstrap, max_event_bytes=2048)
    data = tmp_path / "data"
    data.mkdir()
    good = data / "good.fits"
    write_exposure(small_exposure(1, size=64), good)
    outside = tmp_path / "elsewhere.fits"
    write_exposure(small_exposure(2, size=64), outside)
    link = data / "sneaky.fits"
    link.symlink_to(outside)
    bad = [
        (b"not json at all", "malformed_event"),
        (
            json.dumps(
                {"schema": "skystream.exposure/9", "exposure_id": "x", "uri": str(good)}
            ).encode(),
            "malformed_event",
        ),
        (event("o", outside), "outside_roots"),
        (event("t", data / ".." / "elsewhere.fits"), "outside_roots"),
        (event("l", link), "outside_roots"),
        (
            json.dumps(
                {"exposure_id": "big", "uri": str(good), "meta": {"x": "y" * 5000}}
            ).encode(),
            "oversized_event",
        ),
    ]
    messages = [(b"k", raw) for raw, _ in bad] + [(b"k", event("good", good))]
    await send(bootstrap, settings.source.kafka.topic, messages)
    async with running(settings) as service:
        await wait_until(lambda: len(products_in(settings.output.directory)) == 1, 60)
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 1)  # fmt: skip
        assert metric(service, "skystream_exposures_quarantined_total",
                      {"reason": "outside_roots"}) == 3  # fmt: skip
    letters = await read(bootstrap, settings.source.kafka.dead_letter_topic, len(bad))
    assert [r["reason"] for r in letters] == [reason for _, reason in bad]
    assert all(r["detail"] for r in letters)

    kafka = settings.source.kafka
    assert await committed_offsets(bootstrap, kafka.group_id, kafka.topic) == len(messages)


async def test_simulate_publishes_events_the_daemon_processes(tmp_path, bootstrap) -> None:
    from daemon.app.cli import main

    settings = kafka_settings(tmp_path, bootstrap)
    data = tmp_path / "data"
    topic = settings.source.kafka.topic
    code = await asyncio.to_thread(
        main, ["simulate", "--out", str(data), "--count", "3", "--size", "128",
               "--kafka", bootstrap, "--topic", topic],
    )  # fmt: skip
    assert code == 0
    async with running(settings):
        await wait_until(lambda: len(products_in(settings.output.directory)) == 3, 60)
    events = await read(bootstrap, settings.output.product_topic, 3)
    assert sorted(e["exposure_id"] for e in events) == ["sim_0000", "sim_0001", "sim_0002"]
    assert {e["stack_key"] for e in events} == {"SIMCAM/SIM1/J"}
