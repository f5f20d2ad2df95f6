"""Compiled per-pixel combination of a stack of background frames.

Pixels are processed in blocks of `LANES` side by side (the block's *lanes*). For every
block, each member's values are read in one contiguous stretch of its plane (a batch's
cube, or the occupied rows of a rolling stack's ring), and each lane's finite values are
sorted with a fixed sorting network: the cost does not depend on the data, and equal
values are indistinguishable, so the sorted columns depend on the member set alone.

The JWST rule (astropy ``sigma_clip``: median centre, population std, to convergence)
keeps a contiguous run of each sorted column. One vectorised pass over the block gives
every lane's sums of values and squares around its median; iteration 1 is decided for all
lanes at once, and only a lane that clips something goes on alone: a median lookup, the
bound checks at the two ends of its run and the removal of what they reject. Errors are
then summed over each lane's survivors (the members whose value lies in the run) in one
pass over the members, in the order given: with the members in a canonical order the
result never depends on arrival order or history.

Every kernel releases the GIL and keeps its scratch local: callers split the blocks
between threads. Loops run across the lanes of a row and touch few arrays, with the lane
count taken from the arrays, so that the compiler vectorises them.
"""

from __future__ import annotations

import functools

import numba as nb
import numpy as np

JWST, MEDIAN, BIWEIGHT, ERROR_CLIP = 0, 1, 2, 3
COMBINE_CODES = {"jwst": JWST, "median": MEDIAN, "biweight": BIWEIGHT, "error-clip": ERROR_CLIP}

#: Pixels per block: long rows keep the vectorised loops efficient, and a sorted block of
#: 32 members still fits in the L1 cache.
LANES = 256
_BIWEIGHT_C = 6.0
_MEDIAN_EFFICIENCY = np.sqrt(np.pi / 2.0)  # sigma of a median / sigma of a mean (Gaussian)
#: A removal that takes away this many times what remains leaves too few exact digits in
#: a running sum: the survivors' sums are then taken afresh.
_CANCELLATION = 2.0**20


@functools.lru_cache(maxsize=64)
def sorting_network(n: int) -> np.ndarray:
    """Comparators ``(i, j)`` of Batcher's odd-even merge sort for ``n`` keys (padded to 2^k)."""
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                pairs.extend(
                    (i + j, i + j + k)
                    for i in range(min(k, size - j - k))
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p)
                )
            k //= 2
        p *= 2
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@nb.njit(nogil=True, cache=True)
def _median_column(values, lane, a, b):
    m = b - a
    mid = a + m // 2
    if m % 2 == 1:
        return np.float64(values[mid, lane])
    return 0.5 * (np.float64(values[mid - 1, lane]) + np.float64(values[mid, lane]))


@nb.njit(nogil=True, cache=True)
def _workspace(rows, lanes):
    """Scratch of one thread: per-lane state and a column's worth of sort space."""
    return (
        np.zeros(lanes, np.float64),  # centre
        np.zeros(lanes, np.float64),  # s1
        np.zeros(lanes, np.float64),  # s2
        np.zeros(lanes, np.float64),  # e2: sum of err**2 of the members used
        np.zeros(lanes, np.float64),  # mean
        np.zeros(lanes, np.float64),  # low: smallest value used
        np.zeros(lanes, np.float64),  # high: largest value used
        np.zeros(lanes, np.int64),  # used
        np.ones(lanes, np.float64),  # efficiency
        np.zeros(max(rows, 1), np.float64),  # scratch
        np.zeros(max(rows, 1), np.float64),  # order
    )


# Row operations: one loop across the lanes of a row, touching few arrays, so that the
# compiler vectorises it (its run-time overlap checks stay few).


@nb.njit(nogil=True, cache=True)
def _row_gather(values, count, row, plane):
    """Row ``row`` of the block from one member's stretch; non-finite values sort last."""
    for lane in range(plane.shape[0]):
        v = plane[lane]
        finite = np.isfinite(v)
        count[lane] += finite
        values[row, lane] = v if finite else np.inf


@nb.njit(nogil=True, cache=True)
def _row_compare_swap(values, i, j):
    """One comparator of the sorting network, on every lane."""
    for lane in range(values.shape[1]):
        vi = values[i, lane]
        vj = values[j, lane]
        values[i, lane] = min(vi, vj)
        values[j, lane] = max(vi, vj)


@nb.njit(nogil=True, cache=True)
def _row_sums(values, count, centre, s1, s2, row):
    for lane in range(values.shape[1]):
        keep = row < count[lane]
        d = np.float64(values[row, lane]) - centre[lane]
        s1[lane] += d if keep else 0.0
        s2[lane] += d * d if keep else 0.0


@nb.njit(nogil=True, cache=True)
def _member_errors(plane, sigmas, low, high, e2):
    """Add err**2 of one member where its value lies in [low, high] (the values used)."""
    for lane in range(plane.shape[0]):
        v = np.float64(plane[lane])
        e = np.float64(sigmas[lane])
        used = np.isfinite(v) & (v >= low[lane]) & (v <= high[lane])
        e2[lane] += e * e if used else 0.0


@nb.njit(nogil=True, cache=True)
def _member_within_error(plane, sigmas, centre, k_err, s1, e2, used, e2_all):
    """error-clip: add one member where it lies within ``k_err`` of its ERR of the median."""
    for lane in range(plane.shape[0]):
        v = np.float64(plane[lane])
        e = np.float64(sigmas[lane])
        finite = np.isfinite(v)
        kept = finite & (abs(v - centre[lane]) <= k_err * abs(e))
        s1[lane] += v if kept else 0.0
        e2[lane] += e * e if kept else 0.0
        used[lane] += kept
        e2_all[lane] += e * e if finite else 0.0


@nb.njit(nogil=True, cache=True)
def _clip_lane(values, lane, n, centre, s1, s2, sigma_low, sigma_high, maxiters):
    """Clip one sorted column from its sums over all ``n`` values around ``centre``.

    Returns the survivors' mean and their run ``[a, b)``. Each iteration: bounds from the
    survivors' median and std, then the rejected values leave the sums (or, when what
    leaves dwarfs what stays, the survivors' sums are taken afresh).
    """
    a = 0
    b = n
    reference = centre  # the sums are around this value
    median = centre
    iteration = 0
    while iteration < maxiters:
        m = b - a
        shift = s1 / m
        std = np.sqrt(max(s2 / m - shift * shift, 0.0))
        lo = median - sigma_low * std
        hi = median + sigma_high * std
        new_a = a
        while new_a < b and values[new_a, lane] < lo:
            new_a += 1
        new_b = b
        while new_b > new_a and values[new_b - 1, lane] > hi:
            new_b -= 1
        iteration += 1
        if new_a == a and new_b == b:
            break
        if new_a == new_b:
            return 0.0, 0, 0
        removed = 0.0
        for j in range(a, new_a):
            d = np.float64(values[j, lane]) - reference
            s1 -= d
            s2 -= d * d
            removed = max(removed, d * d)
        for j in range(new_b, b):
            d = np.float64(values[j, lane]) - reference
            s1 -= d
            s2 -= d * d
            removed = max(removed, d * d)
        a = new_a
        b = new_b
        median = _median_column(values, lane, a, b)
        if not (removed < _CANCELLATION * s2 and np.isfinite(s2)):
            reference = median
            s1 = 0.0
            s2 = 0.0
            for j in range(a, b):
                d = np.float64(values[j, lane]) - reference
                s1 += d
                s2 += d * d
    return reference + s1 / (b - a), a, b


@nb.njit(nogil=True, cache=True)
def _first_bounds(values, count, centre, s1, s2, sigma_low, sigma_high, mean, low, high, used,
                  efficiency):  # fmt: skip
    """JWST rule, iteration 1 on every lane: a lane whose run fits its bounds is done.

    The others get ``efficiency`` 0 and go on in `_clip_lane` (which repeats this
    iteration with the same numbers).
    """
    for lane in range(values.shape[1]):
        n = count[lane]
        m = max(n, 1)
        shift = s1[lane] / m
        std = np.sqrt(max(s2[lane] / m - shift * shift, 0.0))
        first = np.float64(values[0, lane])
        last = np.float64(values[max(n - 1, 0), lane])
        fits = (first >= centre[lane] - sigma_low * std) & (
            last <= centre[lane] + sigma_high * std
        )
        mean[lane] = centre[lane] + shift
        low[lane] = first if n > 0 else np.inf
        high[lane] = last if n > 0 else -np.inf
        used[lane] = n
        efficiency[lane] = 1.0 if fits | (n == 0) else 0.0


@nb.njit(nogil=True, cache=True)
def _robust_lane(values, n, lane, method, scratch, order):
    """Median or biweight location of one sorted column."""
    centre = _median_column(values, lane, 0, n)
    if method == MEDIAN:
        return centre
    for j in range(n):  # biweight location (c = 6, MAD scale) around the median
        scratch[j] = abs(np.float64(values[j, lane]) - centre)
    order[:n] = np.sort(scratch[:n])
    m = n // 2
    mad = order[m] if n % 2 == 1 else 0.5 * (order[m - 1] + order[m])
    value = centre
    if mad > 0.0:
        num = 0.0
        den = 0.0
        for j in range(n):
            d = np.float64(values[j, lane]) - centre
            u = d / (_BIWEIGHT_C * mad)
            if abs(u) < 1.0:
                w = (1.0 - u * u) ** 2
                num += d * w
                den += w
        value = centre + num / den
    return value


@nb.njit(nogil=True, cache=True)
def _write(mean, e2, used, efficiency, has_err, out_data, out_err, start, width):
    """Write a block's results; a pixel with nothing to combine gets 0 and ERR 0 (JWST)."""
    for lane in range(width):
        out_data[start + lane] = mean[lane] if used[lane] > 0 else 0.0
    if has_err:
        for lane in range(width):
            m = used[lane]
            error = np.sqrt(e2[lane]) * efficiency[lane] / max(m, 1)
            error = error if error == error else np.nan  # one NaN, whatever the members held
            out_err[start + lane] = error if m > 0 else 0.0


@nb.njit(nogil=True, cache=True)
def combine_pixels(data, err, slots, network, method, sigma_low, sigma_high, maxiters, k_err,
                   out_data, out_err, first_block, last_block, lanes):  # fmt: skip
    """Combine the member rows ``slots`` of ``data`` (``(capacity, P)`` float32) per pixel.

    ``err`` is the same shape, one-sigma errors, or ``(0, P)`` when unknown (then
    ``out_err`` is not written); ``network`` the comparators of `sorting_network` for
    ``len(slots)``. Errors are summed in the order of ``slots``. Writes blocks
    ``first_block:last_block`` (of ``lanes`` pixels) of ``out_data``/``out_err``; returns
    the fewest members used at any of their pixels.
    """
    n_members = slots.shape[0]
    n_pixels = data.shape[1]
    has_err = err.shape[0] > 0
    rows = 1
    while rows < n_members:
        rows *= 2
    values = np.empty((rows, lanes), np.float32)
    count = np.zeros(lanes, np.int32)
    centre, s1, s2, e2, mean, low, high, used, efficiency, scratch, order = _workspace(rows, lanes)
    e2_all = np.zeros(lanes, np.float64)
    fewest = np.int64(1 << 30)
    for block in range(first_block, last_block):
        start = block * lanes
        stop = min(start + lanes, n_pixels)
        width = stop - start
        count[:] = 0
        values[:, :] = np.inf
        for j in range(n_members):
            _row_gather(values, count, j, data[slots[j], start:stop])
        for c in range(network.shape[0]):
            _row_compare_swap(values, network[c, 0], network[c, 1])
        e2[:] = 0.0
        efficiency[:] = 1.0
        if method == JWST:
            rows_used = 0
            for lane in range(lanes):
                n = count[lane]
                rows_used = max(rows_used, n)
                centre[lane] = _median_column(values, lane, 0, n) if n > 0 else 0.0
            s1[:] = 0.0
            s2[:] = 0.0
            for row in range(rows_used):
                _row_sums(values, count, centre, s1, s2, row)
            _first_bounds(values, count, centre, s1, s2, sigma_low, sigma_high, mean, low,
                          high, used, efficiency)  # fmt: skip
            for lane in range(width):
                if efficiency[lane] == 0.0:  # iteration 1 clipped something: go on
                    mean[lane], a, b = _clip_lane(values, lane, count[lane], centre[lane],
                                                  s1[lane], s2[lane], sigma_low, sigma_high,
                                                  maxiters)  # fmt: skip
                    used[lane] = b - a
                    low[lane] = values[a, lane] if b > a else np.inf
                    high[lane] = values[b - 1, lane] if b > a else -np.inf
                    efficiency[lane] = 1.0
            if has_err:
                for j in range(n_members):
                    _member_errors(data[slots[j], start:stop], err[slots[j], start:stop],
                                   low, high, e2)  # fmt: skip
        elif method == ERROR_CLIP:
            for lane in range(width):
                n = count[lane]
                centre[lane] = _median_column(values, lane, 0, n) if n > 0 else 0.0
            s1[:] = 0.0
            used[:] = 0
            e2_all[:] = 0.0
            for j in range(n_members):
                _member_within_error(data[slots[j], start:stop], err[slots[j], start:stop],
                                     centre, k_err, s1, e2, used, e2_all)  # fmt: skip
            for lane in range(width):
                if used[lane] > 0:
                    mean[lane] = s1[lane] / used[lane]
                else:  # every member disagrees beyond its error: fall back to the median
                    mean[lane] = centre[lane]
                    used[lane] = count[lane]
                    e2[lane] = e2_all[lane]
                    efficiency[lane] = _MEDIAN_EFFICIENCY
        else:
            for lane in range(width):
                n = count[lane]
                used[lane] = n
                low[lane] = -np.inf
                high[lane] = np.inf
                if n > 0:
                    mean[lane] = _robust_lane(values, n, lane, method, scratch, order)
                if method == MEDIAN:
                    efficiency[lane] = _MEDIAN_EFFICIENCY
            if has_err:
                for j in range(n_members):
                    _member_errors(data[slots[j], start:stop], err[slots[j], start:stop],
                                   low, high, e2)  # fmt: skip
        for lane in range(width):
            fewest = min(fewest, used[lane])
        _write(mean, e2, used, efficiency, has_err, out_data, out_err, start, width)
    return fewest
