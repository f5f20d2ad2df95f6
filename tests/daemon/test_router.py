"""Routing: the stack key from the event or the header; unreadable input to its own lane."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.events import ExposureEvent
from daemon.fileio.fits_io import write_exposure
from daemon.flow.lanes import Lanes
from daemon.flow.router import INVALID_LANE, Router, stack_key_of
from daemon.intake.batch import BatchSource
from daemon.intake.delivery import Delivery
from daemon.ops.conditions import Conditions
from daemon.ops.metrics import Metrics
from daemon.ops.supervisor import Supervisor
from daemon.retry import Retrier
from tests.conftest import small_exposure


def test_stack_key_joins_the_configured_keywords_with_dashes_for_missing() -> None:
    header = {"INSTRUME": "NIRCAM", "FILTER": " F200W ", "DETECTOR": ""}
    assert stack_key_of(header, ["INSTRUME", "DETECTOR", "FILTER", "PUPIL"]) == (
        "NIRCAM/-/F200W/-"
    )


async def _in_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(func, *args, **kwargs)


@pytest.mark.asyncio
async def test_each_delivery_reaches_the_lane_of_its_key(tmp_path: Path) -> None:
    good = tmp_path / "good.fits"
    write_exposure(small_exposure(1), good, fsync=False)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"no FITS here" * 300)
    seen: list[tuple[str, str, str | None]] = []

    async def handler(delivery: Delivery, key: str, _may_park: bool) -> bool:
        problem = delivery.problem.reason if delivery.problem else None
        seen.append((delivery.event.exposure_id, key, problem))
        return False

    supervisor = Supervisor(Conditions())
    lanes = Lanes(handler, lambda _key, _delivery: True, supervisor=supervisor, queue_size=4,
                  park_seconds=1.0, metrics=Metrics(CollectorRegistry()))  # fmt: skip

    class Keyed(BatchSource):
        """One file announced with the producer's own stack key."""

        async def deliveries(self):  # type: ignore[override]
            async for delivery in super().deliveries():
                if delivery.event.exposure_id == "keyed":
                    event = ExposureEvent(exposure_id="keyed", uri=str(good), stack_key="NIR/1")
                    delivery = Delivery(event, delivery.source, delivery.arrived,
                                        delivery.acknowledge)  # fmt: skip
                yield delivery

    source = Keyed([good, junk, tmp_path / "keyed.fits"])
    heartbeat = supervisor.spawn("idle", asyncio.Event().wait)
    router = Router(
        lanes, ["INSTRUME", "DETECTOR", "FILTER"], _in_thread, max_keys=8, max_bytes=2**32,
        retrier=Retrier(Conditions(), initial_seconds=0.01),
    )  # fmt: skip
    await router.run(source, heartbeat)
    lanes.input_ended()
    await asyncio.wait_for(lanes.join(), 10)
    assert sorted(seen) == [
        ("good", "SIMCAM/SIM1/J", None),
        ("junk", INVALID_LANE, "not_fits"),
        ("keyed", "NIR/1", None),
    ]
    await supervisor.stop()


@pytest.mark.asyncio
async def test_a_key_beyond_the_limit_is_quarantined_as_too_many_keys(tmp_path: Path) -> None:
    paths = []
    for index, detector in enumerate(("D1", "D2", "D3", "D1")):
        exposure = small_exposure(index)
        exposure.header["DETECTOR"] = detector
        paths.append(tmp_path / f"e{index}.fits")
        write_exposure(exposure, paths[-1], fsync=False)
    seen: list[tuple[str, str, str | None]] = []

    async def handler(delivery: Delivery, key: str, _may_park: bool) -> bool:
        problem = delivery.problem.reason if delivery.problem else None
        seen.append((delivery.event.exposure_id, key, problem))
        return False

    supervisor = Supervisor(Conditions())
    lanes = Lanes(handler, lambda _key, _delivery: True, supervisor=supervisor, queue_size=4,
                  park_seconds=1.0, metrics=Metrics(CollectorRegistry()), max_keys=2,
                  idle_seconds=3600)  # fmt: skip
    heartbeat = supervisor.spawn("idle", asyncio.Event().wait)
    router = Router(lanes, ["DETECTOR"], _in_thread, max_keys=2, max_bytes=2**32,
                    retrier=Retrier(Conditions(), initial_seconds=0.01))  # fmt: skip
    await router.run(BatchSource(paths), heartbeat)
    lanes.input_ended()
    await asyncio.wait_for(lanes.join(), 10)
    assert sorted(seen) == [
        ("e0", "D1", None),
        ("e1", "D2", None),
        ("e2", INVALID_LANE, "too_many_keys"),
        ("e3", "D1", None),  # a key that has its lane goes on
    ]
    await supervisor.stop()
