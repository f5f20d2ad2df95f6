"""Kafka with the daemon core: a full lane pauses only its partition; bad files are FAILED."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.fileio.fits_io import write_exposure
from tests.conftest import (
    metric,
    running,
    small_exposure,
    test_settings,
    wait_for_count,
    wait_until,
)
from tests.kafka.helpers import create_topic, event, kafka_overrides, read, send

pytestmark = pytest.mark.asyncio


def _write(data: Path, name: str, detector: str, index: int, size: int = 64) -> Path:
    exposure = small_exposure(index, size=size)
    exposure.header["DETECTOR"] = detector
    path = data / f"{name}.fits"
    write_exposure(exposure, path, fsync=False)
    return path


async def test_a_full_lane_pauses_exactly_its_partition(tmp_path, bootstrap) -> None:
    overrides = kafka_overrides(tmp_path, bootstrap, pause_after=2)
    kafka = overrides["source"]["kafka"]
    await create_topic(bootstrap, kafka["topic"], partitions=2)
    settings = test_settings(tmp_path, lanes={"queue_size": 1}, **overrides)
    data = tmp_path / "data"
    data.mkdir()
    # Key A (partition 0): large exposures, one after another in its lane, the rest held.
    # Key B (partition 1): small ones, which must not wait for A.
    a_count = 6
    a_events = [(b"A", event(f"a{i}", _write(data, f"a{i}", "A", i, size=2048),
                             stack_key="A")) for i in range(a_count)]  # fmt: skip
    b_events = [(b"B", event(f"b{i}", _write(data, f"b{i}", "B", 20 + i), stack_key="B"))
                for i in range(3)]  # fmt: skip
    async with running(settings) as service:
        await send(bootstrap, kafka["topic"], a_events, partition=0)
        await wait_until(lambda: metric(service, "skystream_kafka_partitions_paused") == 1)
        assert service.lanes.saturated == ["A"]
        await send(bootstrap, kafka["topic"], b_events, partition=1)
        out = settings.output.directory
        await wait_until(lambda: all((out / f"b{i}_bsub.fits").exists() for i in range(3)))
        # B went through while A's partition, and only it, stayed paused.
        a_done = len(list(out.glob("a*_bsub.fits")))
        assert metric(service, "skystream_kafka_partitions_paused") == 1
        assert a_done < a_count
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, a_count + 3, timeout=120)  # fmt: skip
        await wait_until(lambda: metric(service, "skystream_kafka_partitions_paused") == 0)
        products = await read(bootstrap, settings.output.product_topic, a_count + 3)
    assert sorted(p["exposure_id"] for p in products if p["stack_key"] == "A") == [
        f"a{i}" for i in range(a_count)
    ]


async def test_a_bad_file_behind_a_valid_event_is_failed_on_kafka_and_not_moved(
    tmp_path, bootstrap
) -> None:
    settings = test_settings(tmp_path, **kafka_overrides(tmp_path, bootstrap))
    assert settings.quarantine.move  # the default; Kafka inputs are the producer's all the same
    data = tmp_path / "data"
    data.mkdir()
    junk = data / "junk.fits"
    junk.write_bytes(b"this is not a FITS file at all" * 100)
    async with running(settings) as service:
        await send(bootstrap, settings.source.kafka.topic, [(b"k", event("junk", junk))])
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "quarantined"}, 1)  # fmt: skip
        [failed] = await read(bootstrap, settings.output.product_topic, 1)
    assert failed["status"] == "FAILED"
    assert failed["exposure_id"] == "junk"
    assert failed["reason"] == "not_fits"
    assert failed["product_uri"] is None
    assert junk.read_bytes() == b"this is not a FITS file at all" * 100  # left in place
    record = json.loads((settings.quarantine.directory / "junk.fits.reason.json").read_text())
    assert record["moved"] is False
    assert record["reason"] == "not_fits"
