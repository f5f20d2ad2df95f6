"""JWST backgrounds with different numbers of integrations: each member collapsed first."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clip

from processors import DQ, Exposure, combine_backgrounds, subtract_background


def _member(nints: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A background exposure with cosmic rays; 2-D when ``nints`` is None."""
    rng = np.random.default_rng(seed)
    shape = (24, 30) if nints is None else (nints, 24, 30)
    sci = rng.normal(5.0 + seed, 0.2, shape)
    sci.flat[rng.integers(0, sci.size, 20)] += 300.0
    err = rng.uniform(0.1, 0.3, shape)
    dq = np.where(rng.random(shape) < 0.01, DQ.HOT, 0).astype(np.uint32)
    return sci, err, dq


def _jwst_reference(members: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple:
    """ALGORITHMS.md §1.2 with astropy: rateints clipped over integrations, then across."""
    planes, variances, flags = [], [], []
    for sci, err, dq in members:
        if sci.ndim == 3:
            planes.append(sigma_clip(sci, sigma=3, maxiters=None, axis=0).mean(axis=0).data)
            variances.append(sigma_clip(err**2, sigma=3, maxiters=None, axis=0).mean(axis=0).data)
            flags.append(np.bitwise_or.reduce(dq, axis=0))
        else:
            planes.append(sci)
            variances.append(err**2)
            flags.append(dq)
    clipped = sigma_clip(np.stack(planes), sigma=3, maxiters=None, axis=0)
    kept = ~clipped.mask
    value = clipped.mean(axis=0).data
    err = np.sqrt((np.stack(variances) * kept).sum(axis=0)) / kept.sum(axis=0)
    return value, err, np.bitwise_or.reduce(np.stack(flags), axis=0)


@pytest.mark.parametrize("nints", [(2, 3), (3, 2), (1, 4, 2), (None, 3), (2, None, 5)])
def test_members_with_different_nints_match_the_jwst_rule(nints) -> None:
    members = [_member(n, seed) for seed, n in enumerate(nints)]
    combined = combine_backgrounds(
        [m[0] for m in members], [m[1] for m in members], [m[2] for m in members]
    )
    value, err, dq = _jwst_reference(members)
    np.testing.assert_allclose(combined.sci, value, rtol=1e-5)
    np.testing.assert_allclose(combined.err, err, rtol=1e-5)
    np.testing.assert_array_equal(combined.dq, dq)


@pytest.mark.parametrize(("sci_nints", "bkg_nints"), [(2, (2, 3)), (3, (3, 2)), (2, (1, 5))])
def test_science_minus_mixed_rateints_backgrounds_is_nine(sci_nints, bkg_nints) -> None:
    """jwst test_miri_subarray_full_overlap with backgrounds of different NINTS."""
    science = Exposure(np.full((sci_nints, 10, 10), 10.0))
    backgrounds = [np.ones((n, 10, 10)) for n in bkg_nints]
    combined = combine_backgrounds(backgrounds, [np.full(b.shape, 0.1) for b in backgrounds])
    result = subtract_background(science, combined, errors="jwst", method="stack")
    np.testing.assert_array_equal(result.sci, 9.0)


def test_a_list_of_equal_members_is_the_stacked_array() -> None:
    members = [_member(3, seed) for seed in range(4)]
    as_list = combine_backgrounds([m[0] for m in members], [m[1] for m in members])
    as_array = combine_backgrounds(np.stack([m[0] for m in members]),
                                   np.stack([m[1] for m in members]))  # fmt: skip
    np.testing.assert_array_equal(as_list.sci, as_array.sci)
    np.testing.assert_array_equal(as_list.err, as_array.err)


def test_member_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="image shape"):
        combine_backgrounds([np.ones((2, 10, 10)), np.ones((3, 12, 10))])
    with pytest.raises(ValueError, match="1 err arrays for 2 members"):
        combine_backgrounds([np.ones((2, 5, 5)), np.ones((5, 5))], [np.ones((2, 5, 5))])
    with pytest.raises(ValueError, match="member 1: dq shape"):
        combine_backgrounds([np.ones((5, 5)), np.ones((2, 5, 5))], dq=[np.zeros((5, 5), int)] * 2)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        combine_backgrounds([np.ones(5)])
