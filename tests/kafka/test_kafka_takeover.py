"""Two replicas in one group: one leaves mid-stream, the other rebuilds its stacks and goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from daemon.app.settings import merge_overrides
from daemon.fileio.fits_io import write_exposure
from tests.conftest import metric, products_in, running, small_exposure, wait_for_count, wait_until
from tests.kafka.helpers import (
    committed_offsets,
    create_topic,
    event,
    kafka_overrides,
    read_all,
    send,
)

pytestmark = pytest.mark.asyncio

FILTERS = {"J": 0, "H": 1}  # stack key filter -> partition


def _write(data: Path, name: str, filter_: str, index: int) -> Path:
    exposure = small_exposure(index, size=96)
    exposure.header["FILTER"] = filter_
    path = data / f"{name}.fits"
    write_exposure(exposure, path)
    return path


async def test_second_replica_takes_over_stacks_from_the_state_topic(tmp_path, bootstrap) -> None:
    overrides = kafka_overrides(tmp_path, bootstrap)
    kafka = overrides["source"]["kafka"]
    await create_topic(bootstrap, kafka["topic"], partitions=2)
    data = tmp_path / "data"
    data.mkdir()
    stack = {"method": "stack", "stack": {"min_members": 3, "when_insufficient": "skip"}}

    def replica(name: str):
        from tests.conftest import test_settings

        settings = test_settings(tmp_path / name, background=stack, **overrides)
        # Products go to storage both replicas share; state stays each replica's own.
        return merge_overrides(settings, {"output": {"directory": str(tmp_path / "products")}})

    backgrounds = {f: [f"bg_{f}{i}" for i in range(3)] for f in FILTERS}
    async with contextlib.AsyncExitStack() as stack_a:
        first = await stack_a.enter_async_context(running(replica("a")))
        for filter_, partition in FILTERS.items():
            messages = [
                (f"SIMCAM/SIM1/{filter_}".encode(),
                 event(name, _write(data, name, filter_, i), kind="background"))
                for i, name in enumerate(backgrounds[filter_])
            ]  # fmt: skip
            await send(bootstrap, kafka["topic"], messages, partition=partition)
        await wait_for_count(first, "skystream_exposures_processed_total",
                             {"outcome": "background"}, 6, timeout=60)  # fmt: skip
        async with running(replica("b")) as second:
            await wait_until(lambda: second.source.connected and first.source.connected, 60)
            await stack_a.aclose()  # the first replica leaves mid-stream
            await wait_until(lambda: metric(second, "skystream_kafka_rebalances_total") >= 2, 60)
            for filter_, partition in FILTERS.items():
                names = [f"sci_{filter_}{i}" for i in range(2)]
                messages = [
                    (f"SIMCAM/SIM1/{filter_}".encode(),
                     event(name, _write(data, name, filter_, 10 + i)))
                    for i, name in enumerate(names)
                ]  # fmt: skip
                await send(bootstrap, kafka["topic"], messages, partition=partition)
            await wait_for_count(second, "skystream_exposures_processed_total",
                                 {"outcome": "complete"}, 4, timeout=60)  # fmt: skip
            # It never saw a background frame itself: its stacks came from the state topic.
            assert metric(second, "skystream_exposures_processed_total",
                          {"outcome": "background"}) == 0  # fmt: skip
    names = sorted(p.name for p in products_in(tmp_path / "products"))
    assert names == sorted(f"sci_{f}{i}_bsub.fits" for f in FILTERS for i in range(2))
    for filter_ in FILTERS:
        for i in range(2):
            summary = json.loads(
                (tmp_path / "products" / f"sci_{filter_}{i}_bsub.json").read_text()
            )
            assert summary["status"] == "COMPLETE"
            assert summary["method"] == "stack"
            assert sorted(summary["inputs_used"]) == backgrounds[filter_]
    state = [json.loads(v) for v in await read_all(bootstrap, kafka["state_topic"], quiet=2)]
    assert {record["key"] for record in state} == {f"SIMCAM/SIM1/{f}" for f in FILTERS}
    events = [
        json.loads(v)
        for v in await read_all(bootstrap, overrides["output"]["product_topic"], quiet=2)
    ]
    assert sorted({e["exposure_id"] for e in events}) == sorted(
        f"sci_{f}{i}" for f in FILTERS for i in range(2)
    )


async def test_a_replica_drops_the_waiting_work_of_partitions_it_gives_away(
    tmp_path, bootstrap
) -> None:
    # Science exposures park in A's lanes waiting for their stacks. When B joins, the
    # partitions A gives away must not be processed by A later: A drops what it had not
    # started (without waiting out the revoke grace) and every exposure is done once.
    overrides = kafka_overrides(tmp_path, bootstrap, revoke_grace_seconds=120)
    kafka = overrides["source"]["kafka"]
    await create_topic(bootstrap, kafka["topic"], partitions=2)
    data = tmp_path / "data"
    data.mkdir()
    stack = {
        "method": "stack",
        "stack": {"min_members": 3, "when_insufficient": "wait", "wait_seconds": 600},
    }

    def replica(name: str):
        from tests.conftest import test_settings

        settings = test_settings(tmp_path / name, background=stack, **overrides)
        return merge_overrides(settings, {"output": {"directory": str(tmp_path / "products")}})

    science = {f: [f"sci_{f}{i}" for i in range(3)] for f in FILTERS}
    async with running(replica("a")) as first:
        for filter_, partition in FILTERS.items():
            messages = [
                (f"SIMCAM/SIM1/{filter_}".encode(),
                 event(name, _write(data, name, filter_, 10 + i)))
                for i, name in enumerate(science[filter_])
            ]  # fmt: skip
            await send(bootstrap, kafka["topic"], messages, partition=partition)
        await wait_until(lambda: first.lanes is not None and len(first.lanes) == 6, 60)
        async with running(replica("b")) as second:
            # Joining rebalances A; with a 120 s grace, only dropping its parked work lets
            # the group settle within the wait.
            await wait_until(lambda: second.source.connected and first.source.connected, 60)
            await wait_until(lambda: metric(first, "skystream_kafka_events_abandoned_total") >= 3,
                             60)  # fmt: skip
            for filter_, partition in FILTERS.items():
                messages = [
                    (f"SIMCAM/SIM1/{filter_}".encode(),
                     event(name, _write(data, name, filter_, i), kind="background"))
                    for i, name in enumerate(f"bg_{filter_}{k}" for k in range(3))
                ]  # fmt: skip
                await send(bootstrap, kafka["topic"], messages, partition=partition)
            replicas = (first, second)

            def total(outcome: str) -> float:
                return sum(
                    metric(r, "skystream_exposures_processed_total", {"outcome": outcome})
                    for r in replicas
                )

            await wait_until(lambda: total("complete") >= 6 and total("background") >= 6, 90)
            group = kafka["group_id"]
            await wait_until_async(
                lambda: committed_offsets(bootstrap, group, kafka["topic"]), 12, 60
            )
            assert total("complete") == 6  # each science exposure processed exactly once
            assert total("duplicate") == 0
    names = sorted(p.name for p in products_in(tmp_path / "products"))
    assert names == sorted(f"{n}_bsub.fits" for f in FILTERS for n in science[f])


async def wait_until_async(value, expected: int, timeout: float) -> None:
    """Wait until the awaitable made by ``value()`` gives ``expected``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await value()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{got} != {expected}"
        await asyncio.sleep(0.5)
