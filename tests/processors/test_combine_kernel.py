"""The compiled combine on hostile stacks, against astropy; the rolling stack's DQ and threads."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clip

from processors import DQ, Exposure, RollingStack, combine_backgrounds


def _hostile(n_members: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Drifting levels, per-pixel ERR, cosmic rays, junk values, infinities and NaN errors."""
    rng = np.random.default_rng(seed)
    levels = np.linspace(100.0, 130.0, n_members)[:, None, None]
    data = (levels + rng.normal(0, 5, (n_members, 30, 41))).astype(np.float32)
    err = rng.uniform(1, 8, data.shape).astype(np.float32)
    data[rng.random(data.shape) < 0.02] += 5000.0
    data[rng.random(data.shape) < 0.02] = 1e30
    data[rng.random(data.shape) < 0.02] = -3e25
    data[rng.random(data.shape) < 0.01] = np.inf
    data[rng.random(data.shape) < 0.01] = np.nan
    err[rng.random(data.shape) < 0.01] = np.nan
    return data, err


def _astropy(data: np.ndarray, err: np.ndarray, maxiters: int | None):
    clipped = sigma_clip(data, axis=0, sigma=3, maxiters=maxiters)
    used = ~np.ma.getmaskarray(clipped)
    count = used.sum(axis=0)
    mean = np.where(count > 0, clipped.astype(np.float64).mean(axis=0).filled(0), 0)
    error = np.sqrt(np.where(used, err.astype(np.float64) ** 2, 0).sum(axis=0))
    error = np.divide(error, count, out=np.zeros_like(error), where=count > 0)
    return mean, error


@pytest.mark.parametrize("n_members", [3, 4, 8, 9, 16, 32, 33])
@pytest.mark.parametrize("maxiters", [None, 1, 3])
@pytest.mark.filterwarnings("ignore:Input data contains invalid values")
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_hostile_stacks_match_astropy(n_members: int, maxiters: int | None) -> None:
    data, err = _hostile(n_members, seed=n_members)
    result = combine_backgrounds(data, err, maxiters=maxiters)
    mean, error = _astropy(data, err, maxiters)
    np.testing.assert_allclose(result.sci, mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result.err, error, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(result.err).any()  # a surviving NaN ERR stays NaN, as in the reference


def test_threads_do_not_change_a_bit() -> None:
    data, err = _hostile(16, seed=2)
    one = combine_backgrounds(data, err, threads=1)
    two = combine_backgrounds(data, err, threads=2)
    assert one.sci.tobytes() == two.sci.tobytes()
    assert one.err is not None and two.err is not None
    assert one.err.tobytes() == two.err.tobytes()


def test_stack_dq_is_the_or_of_its_members_kept_sparse_or_dense() -> None:
    rng = np.random.default_rng(4)
    shape = (20, 30)
    clean = np.zeros(shape, np.uint32)
    sparse = np.zeros(shape, np.uint32)
    sparse[3, 4], sparse[10, 0] = DQ.SATURATED, DQ.JUMP_DET
    dense = rng.choice(np.array([0, 1, 512], np.uint32), shape)
    stack = RollingStack(shape, max_members=3)
    stack.add("clean", Exposure(np.ones(shape), dq=clean), obs_time=0)
    assert not stack.combined().dq.any()
    flat_bytes = stack.nbytes
    stack.add("sparse", Exposure(np.ones(shape), dq=sparse), obs_time=1)
    assert stack.nbytes - flat_bytes == 2 * (4 + 4)  # two flagged pixels: index and value
    stack.add("dense", Exposure(np.ones(shape), dq=dense), obs_time=2)
    np.testing.assert_array_equal(stack.combined().dq, sparse | dense)
    stack.add("clean2", Exposure(np.ones(shape), dq=clean), obs_time=3)  # evicts "clean"
    np.testing.assert_array_equal(stack.combined().dq, sparse | dense)
    stack.remove("dense")
    np.testing.assert_array_equal(stack.combined().dq, sparse)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_thirty_two_member_stack_equals_the_batch_after_a_day_of_arrivals() -> None:
    data, err = _hostile(48, seed=7)
    stack = RollingStack(data.shape[1:], max_members=32)
    for index in range(48):
        stack.add(f"m{index:02d}", Exposure(data[index], err=err[index]), obs_time=index)
    members = [int(m[1:]) for m in stack.member_ids]
    assert members == list(range(16, 48))
    batch = combine_backgrounds(data[members], err[members])
    combined = stack.combined()
    assert combined.sci.tobytes() == batch.sci.tobytes()
    assert combined.err is not None and batch.err is not None
    assert combined.err.tobytes() == batch.err.tobytes()
