"""Two replicas, mosaic groups whose members have other stack keys on other partitions."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner

from daemon.app.service import Service
from daemon.app.settings import Settings, merge_overrides
from daemon.fileio.fits_io import read_exposure, write_exposure
from daemon.fileio.names import safe_file_name
from processors import skymatch
from tests.conftest import metric, running, test_settings, wait_until
from tests.daemon.test_skymatch_stream import _tiles
from tests.kafka.helpers import create_topic, event, kafka_overrides, read_all, send

pytestmark = pytest.mark.asyncio

FILTERS = ("J", "H")  # tile i has stack key CAM/<FILTERS[i % 2]>, on partition i % 2
SKYMATCH = {"enabled": True, "skystat": "median", "nclip": 3, "lsigma": 3, "usigma": 3,
            "max_members": 4, "subtract": True}  # fmt: skip


def _groups_on_both_partitions() -> list[str]:
    """Two group names that Kafka's default partitioner puts on partitions 0 and 1."""
    partitioner, names = DefaultPartitioner(), {}
    for letter in "abcdefgh":
        name = f"mosaic-{letter}"
        names.setdefault(partitioner(name.encode(), [0, 1], [0, 1]), name)
    return [names[0], names[1]]


def _replica(tmp_path: Path, name: str, overrides: dict[str, Any]) -> Settings:
    settings = test_settings(
        tmp_path / name,
        background={"method": "stack", "stack": {"when_insufficient": "skip"}},
        skymatch=SKYMATCH,
        **overrides,
    )
    # Products go to storage both replicas share; state stays each replica's own.
    return merge_overrides(settings, {"output": {"directory": str(tmp_path / "products")}})


async def _mosaic_topics(tmp_path: Path, bootstrap: str) -> tuple[dict[str, Any], Path]:
    """Overrides with a SkyMatchEvent topic, both topics made with 2 partitions, a data folder."""
    overrides = kafka_overrides(tmp_path, bootstrap)
    kafka = overrides["source"]["kafka"]
    overrides["output"]["skymatch_topic"] = f"skymatch-{kafka['topic']}"
    await create_topic(bootstrap, kafka["topic"], partitions=2)
    await create_topic(bootstrap, kafka["mosaic_topic"], partitions=2)
    data = tmp_path / "data"
    data.mkdir()
    return overrides, data


def _holds_one_of_each(service: Service) -> bool:
    mosaic = service.mosaic_source
    return (
        service.source is not None
        and len(getattr(service.source, "assignment", ())) == 1
        and mosaic is not None
        and len(mosaic.assignment) == 1
    )


@pytest.mark.slow
async def test_two_replicas_match_each_group_once_with_all_members(
    tmp_path, bootstrap, spitzer_path
) -> None:
    overrides, data = await _mosaic_topics(tmp_path, bootstrap)
    kafka = overrides["source"]["kafka"]
    groups = _groups_on_both_partitions()
    tiles = _tiles(spitzer_path)
    sent: dict[int, list[tuple[bytes, bytes]]] = {0: [], 1: []}
    for group in groups:
        for index, tile in enumerate(tiles):
            name = f"{group}-t{index}"
            write_exposure(tile, data / f"{name}.fits")
            stack_key = f"CAM/{FILTERS[index % 2]}"
            sent[index % 2].append((stack_key.encode(), event(
                name, data / f"{name}.fits", stack_key=stack_key, group=group)))  # fmt: skip
    async with contextlib.AsyncExitStack() as replicas:
        first = await replicas.enter_async_context(running(_replica(tmp_path, "a", overrides)))
        second = await replicas.enter_async_context(running(_replica(tmp_path, "b", overrides)))
        await wait_until(lambda: _holds_one_of_each(first) and _holds_one_of_each(second), 60)
        for partition, messages in sent.items():
            await send(bootstrap, kafka["topic"], messages, partition=partition)

        def both_closed() -> bool:
            return sum(metric(s, "skystream_skymatch_group_images_count")
                       for s in (first, second)) >= len(groups)  # fmt: skip

        await wait_until(both_closed, 90)
        # Stage 1 ran on both replicas (one stack key each), and so did stage 2 (one group each).
        for service in (first, second):
            assert metric(service, "skystream_exposures_processed_total",
                          {"outcome": "skipped"}) == len(tiles)  # fmt: skip
            assert metric(service, "skystream_skymatch_group_images_count") == 1
    tables = [
        json.loads(v) for v in await read_all(bootstrap, overrides["output"]["skymatch_topic"])
    ]
    assert sorted(t["group"] for t in tables) == sorted(groups)  # exactly one event per group
    products = tmp_path / "products"
    for table in tables:
        assert table["closed"] is True
        members = {m["exposure_id"]: m for m in table["members"]}
        names = [f"{table['group']}-t{i}" for i in range(len(tiles))]
        assert sorted(members) == sorted(names)
        # The same exposures matched in one process, all at once.
        batch = skymatch(
            [read_exposure(products / f"{n}_bsub.fits") for n in names],
            skymethod="match", skystat="median", nclip=3, lsigma=3, usigma=3,
        )  # fmt: skip
        np.testing.assert_allclose([members[n]["level"] for n in names], batch.levels, atol=1e-6)
        for n, level in zip(names, batch.levels, strict=True):
            assert json.loads((products / f"{n}_bsub.json").read_text())["skymatch"] is None
            matched = json.loads((products / f"{n}_bsub_skym.json").read_text())
            assert matched["skymatch"]["group"] == table["group"]
            assert matched["skymatch"]["level"] == pytest.approx(level, abs=1e-6)
    events = [
        json.loads(v) for v in await read_all(bootstrap, overrides["output"]["product_topic"])
    ]
    matched_events = [e for e in events if e["skymatch"] is not None]
    assert len(matched_events) == len(groups) * len(tiles)
    assert all(e["product_uri"].endswith("_bsub_skym.fits") for e in matched_events)


@pytest.mark.slow
async def test_a_group_continues_on_the_other_replica_when_its_owner_leaves(
    tmp_path, bootstrap, spitzer_path
) -> None:
    overrides, data = await _mosaic_topics(tmp_path, bootstrap)
    kafka = overrides["source"]["kafka"]
    tiles = _tiles(spitzer_path)
    messages = []
    for index, tile in enumerate(tiles):
        write_exposure(tile, data / f"g-t{index}.fits")
        stack_key = f"CAM/{FILTERS[index % 2]}"
        payload = event(f"g-t{index}", data / f"g-t{index}.fits", stack_key=stack_key, group="g")
        messages.append((index % 2, (stack_key.encode(), payload)))
    table = tmp_path / "products" / "skymatch" / f"{safe_file_name('g')}.json"

    def revision() -> int:
        return json.loads(table.read_text())["revision"] if table.exists() else 0

    async with contextlib.AsyncExitStack() as stack_a, contextlib.AsyncExitStack() as stack_b:
        replicas = {
            "a": (stack_a, await stack_a.enter_async_context(
                running(_replica(tmp_path, "a", overrides)))),
            "b": (stack_b, await stack_b.enter_async_context(
                running(_replica(tmp_path, "b", overrides)))),
        }  # fmt: skip
        services = [service for _, service in replicas.values()]
        await wait_until(lambda: all(_holds_one_of_each(s) for s in services), 60)
        for partition, message in messages[:2]:
            await send(bootstrap, kafka["topic"], [message], partition=partition)
        await wait_until(lambda: revision() == 2, 60)
        [owner] = [n for n, (_, s) in replicas.items()
                   if metric(s, "skystream_skymatch_groups_open") == 1]  # fmt: skip
        survivor = replicas["b" if owner == "a" else "a"][1]
        await replicas[owner][0].aclose()  # the group's owner leaves mid-group
        await wait_until(lambda: len(survivor.mosaic_source.assignment) == 2, 60)
        for partition, message in messages[2:]:
            await send(bootstrap, kafka["topic"], [message], partition=partition)
        await wait_until(
            lambda: metric(survivor, "skystream_skymatch_group_images_count") == 1, 60
        )
    [closing] = [
        json.loads(v) for v in await read_all(bootstrap, overrides["output"]["skymatch_topic"])
    ]
    names = [f"g-t{i}" for i in range(len(tiles))]
    members = {m["exposure_id"]: m["level"] for m in closing["members"]}
    assert sorted(members) == names  # the first two came from the state topic
    batch = skymatch(
        [read_exposure(tmp_path / "products" / f"{n}_bsub.fits") for n in names],
        skymethod="match", skystat="median", nclip=3, lsigma=3, usigma=3,
    )  # fmt: skip
    np.testing.assert_allclose([members[n] for n in names], batch.levels, atol=1e-6)
