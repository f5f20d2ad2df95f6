"""Backpressure, Kafka metrics, readiness before the group is joined, SkyMatchEvents."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from daemon.app.service import Service
from daemon.app.settings import merge_overrides
from daemon.fileio.fits_io import write_exposure
from tests.conftest import (
    metric,
    products_in,
    running,
    small_exposure,
    test_settings,
    wait_for_count,
    wait_until,
)
from tests.daemon.test_skymatch_stream import OFFSETS, _tiles
from tests.kafka.helpers import event, free_port, kafka_overrides, kafka_settings, read, send

pytestmark = pytest.mark.asyncio


async def test_full_lane_pauses_the_partition_and_long_work_keeps_the_group(
    tmp_path, bootstrap
) -> None:
    count = 10
    settings = kafka_settings(tmp_path, bootstrap, pause_after=2, max_poll_interval_ms=1000)
    settings = merge_overrides(settings, {"lanes": {"queue_size": 1}})
    data = tmp_path / "data"
    data.mkdir()
    for index in range(count):
        write_exposure(small_exposure(index, size=1024), data / f"p{index}.fits")
    kafka = settings.source.kafka
    await send(bootstrap, kafka.topic,
               [(b"k", event(f"p{i}", data / f"p{i}.fits")) for i in range(count)])  # fmt: skip
    paused: list[float] = []
    async with running(settings) as service:

        async def sample() -> None:
            while True:
                paused.append(metric(service, "skystream_kafka_partitions_paused"))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, count, timeout=120)  # fmt: skip
        sampler.cancel()
        # Paused while the lane was full, resumed after; the group never lost this member
        # although the dispatcher waited far longer than max_poll_interval_ms.
        assert max(paused) == 1
        await wait_until(lambda: metric(service, "skystream_kafka_partitions_paused") == 0)
        assert metric(service, "skystream_kafka_rebalances_total") == 1
        assert metric(service, "skystream_exposures_received_total", {"source": "kafka"}) == count
        assert metric(service, "skystream_kafka_events_consumed_total",
                      {"topic": kafka.topic}) == count  # fmt: skip
        assert metric(service, "skystream_kafka_events_produced_total",
                      {"topic": settings.output.product_topic}) == count  # fmt: skip
        assert metric(service, "skystream_kafka_connected") == 1
        await wait_until(
            lambda: sum(metric(service, "skystream_kafka_consumer_lag", {"topic": kafka.topic,
                        "partition": str(p)}) for p in range(4)) == 0, 10)  # fmt: skip
        assert metric(service, "skystream_kafka_commit_seconds_count") >= 1
    assert len(products_in(settings.output.directory)) == count


async def test_readyz_is_false_until_the_group_is_joined_and_stop_is_bounded(tmp_path) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    settings = kafka_settings(tmp_path, dead)
    service = Service(settings, registry=CollectorRegistry())
    task = asyncio.create_task(service.run())
    try:
        await wait_until(lambda: service.health is not None and service.health.port is not None)
        base = f"http://127.0.0.1:{service.health.port}"
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(1.0)  # past the warm-up, into the connection retries
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert "source not connected" in (await response.json())["reasons"]
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 15)  # brokers down: shutdown still ends


async def test_closed_mosaic_group_is_published_as_a_skymatch_event(
    tmp_path, bootstrap, spitzer_path
) -> None:
    overrides = kafka_overrides(tmp_path, bootstrap)
    topic = overrides["source"]["kafka"]["topic"]
    overrides["output"]["skymatch_topic"] = f"skymatch-{topic}"
    settings = test_settings(
        tmp_path,
        background={"method": "stack", "stack": {"when_insufficient": "skip"}},
        skymatch={"enabled": True, "skystat": "median", "nclip": 3, "lsigma": 3, "usigma": 3,
                  "end_when": {"header": {"SKYEND": ["T"]}}},
        **overrides,
    )  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    messages = []
    for index, tile in enumerate(_tiles(spitzer_path)):
        write_exposure(tile, data / f"t{index}.fits")
        messages.append((b"mosaic-1", event(f"t{index}", data / f"t{index}.fits")))
    await send(bootstrap, topic, messages)
    async with running(settings):
        [published] = await read(bootstrap, f"skymatch-{topic}", 1, timeout=60)
    [path] = (settings.output.directory / "skymatch").glob("*.json")
    table = json.loads(path.read_text())
    assert published == table
    assert published["schema"] == "skystream.skymatch/1"
    assert published["closed"] is True
    assert [m["exposure_id"] for m in published["members"]] == ["t0", "t1", "t2", "t3"]
    levels = np.array([m["level"] for m in published["members"]])
    np.testing.assert_allclose(levels - levels[0], OFFSETS, atol=0.1)


async def test_a_sasl_password_is_never_logged(tmp_path, bootstrap, caplog, monkeypatch) -> None:
    secret = "never-log-me-9f3a"
    monkeypatch.setenv("KAFKA_PW", secret)
    settings = kafka_settings(tmp_path, bootstrap)
    security = {"protocol": "SASL_PLAINTEXT", "username": "u", "password_env": "KAFKA_PW"}
    settings = merge_overrides(settings, {"source": {"kafka": {"security": security}}})
    caplog.set_level("DEBUG")
    service = Service(settings, registry=CollectorRegistry())
    task = asyncio.create_task(service.run())
    try:
        await asyncio.sleep(4)  # start, try to authenticate against a broker without SASL
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 20)
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert secret not in caplog.text
