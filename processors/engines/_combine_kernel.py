"""Compiled per-pixel combination of a stack of background frames.

For every pixel the finite member values are sorted (a rank sort: stacks are short) and
combined by one of four rules. Sigma clipping keeps a contiguous run of the sorted
values, so each iteration is a median lookup, one pass for the moments and two bound
searches. Scratch arrays are local: any number of threads may call at once (no GIL).
"""

from __future__ import annotations

import numba as nb
import numpy as np

JWST, MEDIAN, BIWEIGHT, ERROR_CLIP = 0, 1, 2, 3
COMBINE_CODES = {"jwst": JWST, "median": MEDIAN, "biweight": BIWEIGHT, "error-clip": ERROR_CLIP}

_BIWEIGHT_C = 6.0
_MEDIAN_EFFICIENCY = np.sqrt(np.pi / 2.0)  # sigma of a median / sigma of a mean (Gaussian)


@nb.njit(nogil=True, cache=True)
def _median_sorted(values, a, b):
    m = b - a
    mid = a + m // 2
    return values[mid] if m % 2 == 1 else 0.5 * (values[mid - 1] + values[mid])


@nb.njit(nogil=True, cache=True)
def _clip_sorted(values, n, sigma_low, sigma_high, maxiters, p1, p2):
    """Astropy ``sigma_clip`` (median centre, population std) on sorted values: [a, b).

    Moments come from prefix sums of the values relative to their median, so every
    iteration costs a median lookup and two bound searches.
    """
    ref = _median_sorted(values, 0, n)
    p1[0] = 0.0
    p2[0] = 0.0
    for j in range(n):
        d = values[j] - ref
        p1[j + 1] = p1[j] + d
        p2[j + 1] = p2[j] + d * d
    a = 0
    b = n
    for _ in range(maxiters):
        m = b - a
        centre = _median_sorted(values, a, b)
        mean = (p1[b] - p1[a]) / m
        std = np.sqrt(max((p2[b] - p2[a]) / m - mean * mean, 0.0))
        lo = centre - sigma_low * std
        hi = centre + sigma_high * std
        new_a = a
        while new_a < b and values[new_a] < lo:
            new_a += 1
        new_b = b
        while new_b > new_a and values[new_b - 1] > hi:
            new_b -= 1
        if new_a == a and new_b == b:
            break
        a = new_a
        b = new_b
        if a == b:
            break
    return a, b


@nb.njit(nogil=True, cache=True)
def combine_pixels(
    data,
    err,
    dq,
    slots,
    method,
    sigma_low,
    sigma_high,
    maxiters,
    k_err,
    out_data,
    out_var,
    out_dq,
    out_n,
):
    """Combine the member rows ``slots`` of ``data[:, p]`` for every pixel ``p``.

    ``data`` is ``(capacity, P)`` and ``slots`` the rows in use (a rolling stack keeps its
    members in a ring and passes the occupied rows; a batch passes all of them);
    ``err`` is the same shape holding one-sigma errors (squared here, so no variance cube
    is ever allocated), or ``(0, P)`` when unknown; ``dq`` is
    the same shape or ``(0, P)``. Writes the combined value, its variance (NaN when
    unknown), the OR of all members' DQ and the number of members used. A pixel with no
    finite member gets value 0 and variance 0, as in JWST.
    """
    n_members = slots.shape[0]
    n_pixels = data.shape[1]
    has_err = err.shape[0] > 0
    has_dq = dq.shape[0] > 0
    column = np.empty(n_members, np.float64)
    members = np.empty(n_members, np.int64)
    values = np.empty(n_members, np.float64)
    order = np.empty(n_members, np.int64)
    weights = np.empty(n_members, np.float64)
    p1 = np.empty(n_members + 1, np.float64)
    p2 = np.empty(n_members + 1, np.float64)
    for p in range(n_pixels):
        flags = 0
        n = 0
        for i in slots:
            if has_dq:
                flags |= dq[i, p]
            v = data[i, p]
            column[n] = v
            members[n] = i
            n += np.isfinite(v)
        out_dq[p] = flags
        # Rank sort: branch-free compares beat an insertion sort's mispredictions here.
        for i in range(n):
            v = column[i]
            rank = 0
            for j in range(n):
                rank += (column[j] < v) | ((column[j] == v) & (j < i))
            values[rank] = v
            order[rank] = members[i]
        if n == 0:
            out_data[p] = 0.0
            out_var[p] = 0.0
            out_n[p] = 0
            continue
        a = 0
        b = n
        efficiency = 1.0
        if method == JWST:
            a, b = _clip_sorted(values, n, sigma_low, sigma_high, maxiters, p1, p2)
        elif method == MEDIAN:
            efficiency = _MEDIAN_EFFICIENCY
        elif method == ERROR_CLIP and has_err:
            centre = _median_sorted(values, 0, n)
            kept = 0
            for j in range(n):
                if abs(values[j] - centre) <= k_err * abs(err[order[j], p]):
                    values[kept] = values[j]
                    order[kept] = order[j]
                    kept += 1
            if kept == 0:  # every member disagrees beyond its error: fall back to the median
                kept = n
                efficiency = _MEDIAN_EFFICIENCY
            b = kept
        m = b - a
        if m == 0:
            out_data[p] = 0.0
            out_var[p] = 0.0
            out_n[p] = 0
            continue
        if method == MEDIAN or efficiency != 1.0:
            value = _median_sorted(values, a, b)
        elif method == BIWEIGHT:
            centre = _median_sorted(values, a, b)
            for j in range(a, b):
                weights[j] = abs(values[j] - centre)
            mad_values = np.sort(weights[a:b])
            mad = _median_sorted(mad_values, 0, m)
            value = centre
            if mad > 0.0:
                num = 0.0
                den = 0.0
                for j in range(a, b):
                    u = (values[j] - centre) / (_BIWEIGHT_C * mad)
                    if abs(u) < 1.0:
                        w = (1.0 - u * u) ** 2
                        num += (values[j] - centre) * w
                        den += w
                value = centre + num / den
        else:
            value = 0.0
            for j in range(a, b):
                value += values[j]
            value /= m
        out_data[p] = value
        out_n[p] = m
        if has_err:
            total = 0.0
            for j in range(a, b):
                e = err[order[j], p]
                total += e * e
            out_var[p] = total * efficiency * efficiency / (m * m)
        else:
            out_var[p] = np.nan
    return out_data
