"""Lanes: per-key order, no head-of-line blocking, parking that counts and releases in order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon.events import ExposureEvent
from daemon.flow.lanes import Lanes
from daemon.intake.delivery import Delivery
from daemon.ops.conditions import Conditions
from daemon.ops.metrics import Metrics
from daemon.ops.supervisor import Supervisor
from tests.conftest import wait_until

pytestmark = pytest.mark.asyncio


class Recorder:
    """A handler that records what it processed; chosen names block or park."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.park: set[str] = set()
        self.ready: set[str] = set()  # keys whose parked deliveries may go
        self.fail_once: set[str] = set()
        self.holds: list[tuple[str, bool]] = []
        self.given_away: set[str] = set()  # their source no longer owns them
        self.dropped: list[str] = []

    async def __call__(self, delivery: Delivery, key: str, may_park: bool) -> bool:
        name = delivery.event.exposure_id
        if delivery.given_away():  # as the pipeline does: not processed
            self.dropped.append(name)
            return False
        if name in self.fail_once:
            self.fail_once.discard(name)
            raise RuntimeError(f"bug while processing {name}")
        if name in self.gates:
            await self.gates[name].wait()
        if may_park and name in self.park and key not in self.ready:
            return True
        self.done.append(name)
        return False

    def delivery(self, name: str) -> Delivery:
        async def acknowledge(_outcome: str, _product: str | None) -> None:
            return None

        return Delivery(
            event=ExposureEvent.for_file(Path(f"/data/{name}.fits")),
            source="test",
            arrived=time.monotonic(),
            acknowledge=acknowledge,
            on_hold=lambda held: self.holds.append((name, held)),
            owned=lambda: name not in self.given_away,
        )


def make_lanes(recorder: Recorder, *, queue_size: int = 2, park_seconds: float = 60.0,
               **limits: float):  # fmt: skip
    supervisor = Supervisor(Conditions(), max_restarts=3, window_seconds=60)
    lanes = Lanes(
        recorder,
        lambda key, _delivery: key in recorder.ready,
        supervisor=supervisor,
        queue_size=queue_size,
        park_seconds=park_seconds,
        metrics=Metrics(CollectorRegistry()),
        **limits,  # type: ignore[arg-type]
    )
    return lanes, supervisor


async def test_a_blocked_key_never_delays_another_key() -> None:
    recorder = Recorder()
    recorder.gates["a1"] = asyncio.Event()  # key A's first exposure is very slow
    lanes, supervisor = make_lanes(recorder, queue_size=2)
    for name in ("a1", "a2", "a3", "a4"):
        lanes.put("A", recorder.delivery(name))
    for name in ("b1", "b2", "b3"):
        lanes.put("B", recorder.delivery(name))
    await wait_until(lambda: recorder.done == ["b1", "b2", "b3"])
    assert lanes.saturated == ["A"]
    # a1 in hand and a2 waiting fill A; a3 and a4 are held, and their source was told.
    assert [hold for hold in recorder.holds if hold[0][0] == "a"] == [
        ("a3", True), ("a4", True)
    ]  # fmt: skip
    recorder.gates["a1"].set()
    await lanes.join()
    assert recorder.done == ["b1", "b2", "b3", "a1", "a2", "a3", "a4"]
    assert [hold for hold in recorder.holds if hold[0][0] == "a"][2:] == [
        ("a3", False), ("a4", False)
    ]  # fmt: skip
    await supervisor.stop()


async def test_parked_exposure_goes_right_after_the_one_that_readies_its_stack() -> None:
    recorder = Recorder()
    recorder.park = {"sci"}
    lanes, supervisor = make_lanes(recorder, queue_size=4)

    original = recorder.__call__

    async def handler(delivery: Delivery, key: str, may_park: bool) -> bool:
        parked = await original(delivery, key, may_park)
        if delivery.event.exposure_id == "bkg2":
            recorder.ready.add(key)  # the second background completes the stack
        return parked

    lanes._handler = handler
    for name in ("sci", "bkg1", "bkg2", "later"):
        lanes.put("K", recorder.delivery(name))
    await lanes.join()
    # Deterministic: "sci" ran after bkg2 and before anything that arrived after it.
    assert recorder.done == ["bkg1", "bkg2", "sci", "later"]
    await supervisor.stop()


async def test_parked_exposures_count_for_the_drain_and_go_when_input_ends() -> None:
    recorder = Recorder()
    recorder.park = {"s1", "s2"}
    lanes, supervisor = make_lanes(recorder, queue_size=4)
    lanes.put("K", recorder.delivery("s1"))
    lanes.put("K", recorder.delivery("s2"))
    await wait_until(lambda: len(lanes) == 2 and not lanes.idle)
    assert recorder.done == []
    lanes.input_ended()
    await asyncio.wait_for(lanes.join(), 10)
    assert recorder.done == ["s1", "s2"]
    await supervisor.stop()


async def test_parked_exposures_are_bounded_by_the_lane_size() -> None:
    recorder = Recorder()
    recorder.park = {"s1", "s2", "s3"}
    lanes, supervisor = make_lanes(recorder, queue_size=2)
    for name in ("s1", "s2", "s3"):
        lanes.put("K", recorder.delivery(name))
    # Two parked fill the lane and s3 is held behind them: the oldest goes on (without its
    # stack) to make room; then s2 and s3 fill the lane with nothing waiting, and stay.
    await wait_until(lambda: recorder.done == ["s1"] and len(lanes) == 2)
    await asyncio.sleep(0.2)
    assert recorder.done == ["s1"]
    await supervisor.stop()


async def test_parked_exposure_goes_when_its_wait_is_over() -> None:
    recorder = Recorder()
    recorder.park = {"s1"}
    lanes, supervisor = make_lanes(recorder, queue_size=4, park_seconds=0.3)
    lanes.put("K", recorder.delivery("s1"))
    await wait_until(lambda: len(lanes) == 1)
    assert recorder.done == []
    await wait_until(lambda: recorder.done == ["s1"], timeout=10)
    await supervisor.stop()


async def test_a_crashing_lane_is_restarted_and_keeps_its_order() -> None:
    recorder = Recorder()
    recorder.fail_once = {"x2"}
    lanes, supervisor = make_lanes(recorder, queue_size=4)
    for name in ("x1", "x2", "x3"):
        lanes.put("K", recorder.delivery(name))
    await wait_until(lambda: recorder.done == ["x1", "x2", "x3"], timeout=10)
    assert supervisor.failure is None
    await supervisor.stop()


async def test_stop_lets_the_exposure_in_hand_finish_and_drops_the_rest() -> None:
    recorder = Recorder()
    recorder.gates["y1"] = asyncio.Event()
    lanes, supervisor = make_lanes(recorder, queue_size=4)
    for name in ("y1", "y2", "y3"):
        lanes.put("K", recorder.delivery(name))
    await wait_until(lambda: len(lanes) == 3)
    stopping = asyncio.create_task(lanes.stop(grace_seconds=10))
    await asyncio.sleep(0.1)
    recorder.gates["y1"].set()
    assert await stopping == 2  # y2 and y3: never started, left for redelivery
    assert recorder.done == ["y1"]
    await supervisor.stop()


async def test_idle_lanes_are_reaped_with_their_metric_series() -> None:
    recorder = Recorder()
    lanes, supervisor = make_lanes(recorder, max_keys=2, idle_seconds=0.2)
    lanes.put("old", recorder.delivery("o1"))
    lanes.put("busy", recorder.delivery("b1"))
    await lanes.join()
    registry = lanes._metrics.registry
    assert registry.get_sample_value("skystream_lane_depth", {"lane": "old"}) == 0
    assert lanes.accepts("busy")
    await asyncio.sleep(0.3)
    lanes.put("busy", recorder.delivery("b2"))  # busy stays active; old goes idle
    await lanes.join()
    assert lanes.accepts("new")  # at the limit, but "old" is reaped to make room
    assert registry.get_sample_value("skystream_lane_depth", {"lane": "old"}) is None
    assert registry.get_sample_value("skystream_lane_depth", {"lane": "busy"}) == 0
    lanes.put("new", recorder.delivery("n1"))
    await lanes.join()
    assert recorder.done == ["o1", "b1", "b2", "n1"]
    await supervisor.stop()


async def test_deliveries_given_away_leave_their_lane_at_once_parked_or_waiting() -> None:
    recorder = Recorder()
    recorder.park = {"p1", "p2"}
    lanes, supervisor = make_lanes(recorder, queue_size=8, park_seconds=60)
    for name in ("p1", "p2"):
        lanes.put("K", recorder.delivery(name))
    await wait_until(lambda: len(lanes) == 2)  # both parked for a minute
    recorder.given_away.add("p2")  # e.g. its Kafka partition is being revoked
    lanes.recheck_ownership()
    await wait_until(lambda: recorder.dropped == ["p2"])
    assert recorder.done == [] and len(lanes) == 1  # p1, still owned, stays parked

    recorder.gates["busy"] = asyncio.Event()
    for name in ("busy", "w1", "w2"):
        lanes.put("K", recorder.delivery(name))
    await wait_until(lambda: len(lanes) == 4)  # busy in hand, w1 and w2 behind it
    recorder.given_away.add("w1")
    lanes.recheck_ownership()
    recorder.gates["busy"].set()
    await wait_until(lambda: recorder.done == ["busy", "w2"])
    assert recorder.dropped == ["p2", "w1"] and len(lanes) == 1
    await supervisor.stop()
