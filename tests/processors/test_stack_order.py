"""A rolling stack is a function of its members, not of the order they arrived in."""

from __future__ import annotations

import numpy as np

from processors import Exposure, RollingStack


def _frame(rng: np.random.Generator, level: float) -> Exposure:
    sci = rng.normal(level, 1.0, (16, 16)).astype(np.float32)
    sci[:4] = level  # equal values in every member: their errors are summed in member order
    err = rng.uniform(0.5, 2.0, (16, 16)).astype(np.float32)
    return Exposure(sci=sci, err=err, dq=np.zeros((16, 16), np.uint32))


def _stack(arrivals: list[tuple[str, float]], frames: dict[str, Exposure]) -> RollingStack:
    stack = RollingStack((16, 16), max_members=3)
    for member_id, obs_time in arrivals:
        stack.add(member_id, frames[member_id], obs_time)
    return stack


def test_members_with_equal_times_leave_in_id_order_whatever_their_arrival() -> None:
    rng = np.random.default_rng(3)
    frames = {name: _frame(rng, 10.0) for name in "abcd"}
    one = _stack([("a", 0.0), ("b", 0.0), ("c", 0.0), ("d", 1.0)], frames)
    two = _stack([("c", 0.0), ("b", 0.0), ("a", 0.0), ("d", 1.0)], frames)
    assert one.member_ids == two.member_ids == ["b", "c", "d"]


def test_combined_is_bit_identical_after_evictions_and_a_rebuild() -> None:
    rng = np.random.default_rng(5)
    frames = {f"m{i}": _frame(rng, 10.0 + i) for i in range(7)}
    streamed = _stack([(f"m{i}", float(i)) for i in range(7)], frames)  # ring slots reused
    rebuilt = _stack([(m, streamed.obs_time(m)) for m in streamed.member_ids], frames)
    reversed_ = _stack([(m, streamed.obs_time(m)) for m in streamed.member_ids[::-1]], frames)
    expected = streamed.combined()
    for other in (rebuilt, reversed_):
        combined = other.combined()
        assert other.member_ids == streamed.member_ids
        assert combined.sci.tobytes() == expected.sci.tobytes()
        assert combined.err is not None and expected.err is not None
        assert combined.err.tobytes() == expected.err.tobytes()
        assert combined.dq.tobytes() == expected.dq.tobytes()
