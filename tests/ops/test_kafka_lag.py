"""Honest Kafka lag: from the broker's end offsets, for paused partitions too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon.fileio.fits_io import write_exposure
from tests.conftest import metric, running, small_exposure, test_settings, wait_until
from tests.kafka.helpers import committed_offsets, create_topic, event, kafka_overrides, send

pytestmark = pytest.mark.asyncio


def _file(data: Path, index: int) -> Path:
    path = data / f"e{index}.fits"
    write_exposure(small_exposure(index), path, fsync=False)
    return path


async def test_lag_keeps_counting_while_a_stall_pauses_the_partition(tmp_path, bootstrap) -> None:
    overrides = kafka_overrides(tmp_path, bootstrap, pause_after=2)
    topic = overrides["source"]["kafka"]["topic"]
    group = overrides["source"]["kafka"]["group_id"]
    await create_topic(bootstrap, topic, partitions=2)
    settings = test_settings(tmp_path, lanes={"queue_size": 1}, **overrides)
    data = tmp_path / "data"
    data.mkdir()
    files = [_file(data, index) for index in range(12)]
    products = settings.output.directory

    def lag(partition: int) -> float | None:
        labels = {"topic": topic, "partition": str(partition)}
        return service.metrics.registry.get_sample_value("skystream_kafka_consumer_lag", labels)

    async with running(settings) as service:
        await wait_until(lambda: metric(service, "skystream_kafka_connected") == 1)
        # Partition 1 flows and is committed before the stall.
        flowing = [(b"j", event(f"e{i}", files[i], stack_key="J")) for i in range(10, 12)]
        await send(bootstrap, topic, flowing, partition=1)
        await wait_until(lambda: len(list(products.glob("*_bsub.fits"))) == 2)
        shutil.rmtree(products)
        products.write_bytes(b"")  # every product write fails (ENOTDIR) and is retried
        first = [(b"k", event(f"e{i}", files[i], stack_key="K")) for i in range(4)]
        await send(bootstrap, topic, first, partition=0)
        await wait_until(lambda: metric(service, "skystream_kafka_partitions_paused") == 1)
        # Events keep coming to the paused partition: the lag says so (the fetch position's
        # high watermark would have stayed where the pause left it).
        more = [(b"k", event(f"e{i}", files[i], stack_key="K")) for i in range(4, 10)]
        await send(bootstrap, topic, more, partition=0)
        await wait_until(lambda: lag(0) == 10)
        assert metric(service, "skystream_kafka_partitions_paused") == 1
        assert lag(1) == 0  # read in the same refresh: every assigned partition has its lag
        assert metric(service, "skystream_backlog_exposures", {"source": "kafka"}) == 10
        assert metric(service, "skystream_oldest_unsettled_age_seconds") > 0

        products.unlink()
        products.mkdir()
        await wait_until(lambda: lag(0) == 0, timeout=60)
        assert metric(service, "skystream_kafka_partitions_paused") == 0
        assert metric(service, "skystream_backlog_exposures", {"source": "kafka"}) == 0
        assert metric(service, "skystream_oldest_unsettled_age_seconds") == 0
    assert await committed_offsets(bootstrap, group, topic) == 12
