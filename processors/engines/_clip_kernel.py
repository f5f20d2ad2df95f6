"""Compiled per-box clipped statistics, shared by the fast mesh engine and the LSST engine.

Each box's unmasked values go, in one pass, into a fine histogram around a robust first
guess (a window of ``±reach`` sample sigmas, ~50 bins per sigma) or, when they fall outside
it, into a short sorted list kept exactly. Clipping keeps a value interval, so every
iteration's count, moments and order statistics come from cumulative bin counts and binary
searches in the sorted list: no pass over the pixels per iteration. A box whose first guess
is degenerate (zero spread, few pixels) or whose outliers are too many is done exactly, by
treating all of its values as the sorted list — the same code with an empty window.

Binning error: order statistics are interpolated within a bin (< 1/100 sigma); moments use
bin centres (variance bias ~3e-5 relative). Every kernel releases the GIL and keeps its
scratch buffers local, so any number of threads may call it at once.

A pixel is excluded when ``flags[y, x] & badbits`` is non-zero (``flags`` is a DQ array,
or a boolean mask viewed as uint8 with ``badbits=1``) or when it is not finite.
"""

from __future__ import annotations

import numba as nb
import numpy as np

SEXTRACTOR, BIWEIGHT, MEDIAN, MEAN, MODE = 0, 1, 2, 3, 4
ESTIMATOR_CODES = {"sextractor": SEXTRACTOR, "biweight": BIWEIGHT, "median": MEDIAN,
                   "mean": MEAN, "mode": MODE}  # fmt: skip

_NBINS = 512
_SAMPLE_SIDE = 11  # a grid of about 11 x 11 pixels seeds each box's first guess
_MIN_FOR_HISTOGRAM = 64
_MAX_BIN_SHARE = 16  # one bin holding over 1/16 of a box means the guess of sigma failed
_BIWEIGHT_C = 6.0
_IQR_TO_SIGMA = 0.741301109252802  # 1 / (2 * 0.6744897501960817), as in LSST afw


@nb.njit(nogil=True, cache=True)
def _buffers(capacity):
    return (
        np.empty((_SAMPLE_SIDE + 1) ** 2, np.float64),  # sample
        np.empty(capacity, np.float64),  # values
        np.empty(capacity, np.int32),  # bins
        np.empty(_NBINS + 2, np.int64),  # counts (+ outside the window, + masked)
        np.empty(_NBINS + 1, np.int64),  # cum
        np.empty(_NBINS + 1, np.float64),  # wsum
        np.empty(_NBINS + 1, np.float64),  # wsum2
        np.empty(capacity, np.float64),  # out
        np.empty(capacity + 1, np.float64),  # p1
        np.empty(capacity + 1, np.float64),  # p2
    )


@nb.njit(nogil=True, cache=True)
def _count(lo, hi, cum, start, width, nbins, out, nlow):
    """Values in [lo, hi] (relative to the box reference), with the index ranges used.

    ``out`` is sorted and splits at ``nlow`` into values below and above the window, so
    the outliers in [lo, hi] are ``out[a:b]``: ``out[a:min(b, nlow)]`` below the window and
    ``out[max(a, nlow):b]`` above it.
    """
    # Clamp in floating point before converting: int() of an infinity is undefined.
    klo = max(int(np.ceil(min(max((lo - start) / width - 0.5, -1.0), nbins + 1.0))), 0)
    khi = int(np.floor(min(max((hi - start) / width - 0.5, -2.0), nbins - 1.0)))
    inbins = cum[khi + 1] - cum[klo] if khi >= klo else 0
    a = np.searchsorted(out, lo, side="left")
    b = np.searchsorted(out, hi, side="right")
    below = max(min(b, nlow) - a, 0)
    above = max(b - max(a, nlow), 0)
    return below + inbins + above, klo, khi, a, b, below


@nb.njit(nogil=True, cache=True)
def _moments(lo, hi, cum, wsum, wsum2, start, width, nbins, out, p1, p2, nlow):
    m, klo, khi, a, b, _ = _count(lo, hi, cum, start, width, nbins, out, nlow)
    s1 = p1[b] - p1[a] if b > a else 0.0
    s2 = p2[b] - p2[a] if b > a else 0.0
    if khi >= klo:
        s1 += wsum[khi + 1] - wsum[klo]
        s2 += wsum2[khi + 1] - wsum2[klo]
    return m, s1, s2


@nb.njit(nogil=True, cache=True)
def _rank(r, lo, hi, cum, counts, start, width, nbins, out, nlow):
    """The value of rank ``r`` (0-based) among the values in [lo, hi]."""
    _, klo, khi, a, _, below = _count(lo, hi, cum, start, width, nbins, out, nlow)
    if r < below:
        return out[a + r]
    r -= below
    inbins = cum[khi + 1] - cum[klo] if khi >= klo else 0
    if r < inbins:
        target = cum[klo] + r
        k = np.searchsorted(cum, target, side="right") - 1  # cum[k] <= target < cum[k+1]
        return start + (k + (target - cum[k] + 0.5) / counts[k]) * width
    return out[max(a, nlow) + r - inbins]


@nb.njit(nogil=True, cache=True)
def _median(m, lo, hi, cum, counts, start, width, nbins, out, nlow):
    if m % 2 == 1:
        return _rank((m - 1) // 2, lo, hi, cum, counts, start, width, nbins, out, nlow)
    a = _rank(m // 2 - 1, lo, hi, cum, counts, start, width, nbins, out, nlow)
    b = _rank(m // 2, lo, hi, cum, counts, start, width, nbins, out, nlow)
    return 0.5 * (a + b)


@nb.njit(nogil=True, cache=True)
def _gather_exact(data, flags, badbits, y0, y1, x0, x1, ref, out):
    """Every good finite value of the box, relative to ``ref``, into ``out``; return count."""
    nout = 0
    for y in range(y0, y1):
        row = data[y]
        frow = flags[y]
        for x in range(x0, x1):
            v = row[x] - ref
            if (frow[x] & badbits) == 0 and np.isfinite(v):
                out[nout] = v
                nout += 1
    return nout


@nb.njit(nogil=True, cache=True)
def _bin_box(data, flags, badbits, y0, y1, x0, x1, ref, start, inv_width, counts, bins, out):
    """One pass over the box: window values counted in ``counts``, the others kept in ``out``.

    Each row is binned first in a loop the compiler vectorises (float32, as the data; bin
    ``_NBINS`` collects values outside the window and ``_NBINS + 1`` masked ones), then
    counted. Returns (values counted or kept, values kept).
    """
    counts[:] = 0
    nout = 0
    offset = np.float32(-(ref + start))
    scale = np.float32(inv_width)
    width = x1 - x0
    for y in range(y0, y1):
        row = data[y, x0:x1]
        frow = flags[y, x0:x1]
        for x in range(width):
            t = (row[x] + offset) * scale
            k = np.int32(t) if (t >= 0.0 and t < _NBINS) else np.int32(_NBINS)  # NaN: out
            bins[x] = k if (frow[x] & badbits) == 0 else np.int32(_NBINS + 1)
        for x in range(width):
            k = bins[x]
            counts[k] += 1
            if k == _NBINS:
                v = row[x] - ref
                if np.isfinite(v):
                    out[nout] = v
                    nout += 1
    n = nout
    for k in range(_NBINS):
        n += counts[k]
    return n, nout


@nb.njit(nogil=True, cache=True)
def _histogram_box(data, flags, badbits, y0, y1, x0, x1, reach, keep_values, buffers):
    """Fill the buffers for one box; return (n, gathered, nout, nlow, ref, start, width, nbins).

    ``values[:gathered]`` holds the box's good values relative to ``ref`` only when
    ``keep_values`` (the biweight needs them); otherwise ``gathered`` is 0.
    """
    sample, values, bins, counts, cum, wsum, wsum2, out, p1, p2 = buffers
    area = (y1 - y0) * (x1 - x0)
    step_y = max((y1 - y0) // _SAMPLE_SIDE, 1)
    step_x = max((x1 - x0) // _SAMPLE_SIDE, 1)
    ns = 0
    for y in range(y0, y1, step_y):
        for x in range(x0, x1, step_x):
            v = data[y, x]
            if ns < sample.size and (flags[y, x] & badbits) == 0 and np.isfinite(v):
                sample[ns] = v
                ns += 1
    if ns == 0:  # the sample grid missed every good pixel: seed with the first one found
        for y in range(y0, y1):
            for x in range(x0, x1):
                if ns == 0 and (flags[y, x] & badbits) == 0 and np.isfinite(data[y, x]):
                    sample[0] = data[y, x]
                    ns = 1
        if ns == 0:
            return 0, 0, 0, 0, 0.0, 0.0, 1.0, 0
    seed = sample[:ns]
    seed.sort()
    ref = seed[ns // 2]
    spread = (seed[(3 * ns) // 4] - seed[ns // 4]) * 2.0 * _IQR_TO_SIGMA

    gathered = 0
    if keep_values:
        for y in range(y0, y1):
            row = data[y]
            frow = flags[y]
            for x in range(x0, x1):
                values[gathered] = row[x] - ref
                gathered += (frow[x] & badbits) == 0

    use_window = spread > 0.0 and area >= _MIN_FOR_HISTOGRAM
    n = nout = nbins = 0
    start = 0.0
    width = 1.0
    if use_window:
        nbins = _NBINS
        start = -reach * spread
        width = 2.0 * reach * spread / _NBINS
        n, nout = _bin_box(data, flags, badbits, y0, y1, x0, x1, ref, start, 1.0 / width,
                           counts, bins, out)  # fmt: skip
        # Too heavy-tailed for the window, or bins too coarse for the data: go exact.
        use_window = nout * 4 <= n and counts[:_NBINS].max() * _MAX_BIN_SHARE <= n
    if not use_window:
        # Without a window there are no bins and every value is "low".
        nbins = 0
        start = 0.0
        width = 1.0
        counts[:] = 0
        nout = _gather_exact(data, flags, badbits, y0, y1, x0, x1, ref, out)
        n = nout
    outliers = out[:nout]
    outliers.sort()
    nlow = np.searchsorted(outliers, start, side="left") if use_window else nout
    # Prefix sums over the occupied bins only; constant on either side of them.
    first = 0
    while first < nbins and counts[first] == 0:
        first += 1
    last = nbins - 1
    while last > first and counts[last] == 0:
        last -= 1
    cum[: first + 1] = 0
    wsum[: first + 1] = 0.0
    wsum2[: first + 1] = 0.0
    for k in range(first, last + 1):
        centre = start + (k + 0.5) * width
        cum[k + 1] = cum[k] + counts[k]
        wsum[k + 1] = wsum[k] + counts[k] * centre
        wsum2[k + 1] = wsum2[k] + counts[k] * centre * centre
    if last + 2 <= nbins:
        cum[last + 2 : nbins + 1] = cum[last + 1]
        wsum[last + 2 : nbins + 1] = wsum[last + 1]
        wsum2[last + 2 : nbins + 1] = wsum2[last + 1]
    p1[0] = 0.0
    p2[0] = 0.0
    for i in range(nout):
        p1[i + 1] = p1[i] + out[i]
        p2[i + 1] = p2[i] + out[i] * out[i]
    return n, gathered, nout, nlow, ref, start, width, nbins


@nb.njit(nogil=True, cache=True)
def _biweight(values, lo, hi, med, m, cum, start, width, nbins, out, nlow):
    """Astropy's biweight_location (c=6, M=median) over the values in [lo, hi]."""
    # MAD: the half-width around the median that holds half the survivors (bisection).
    d_lo = 0.0
    d_hi = max(hi - med, med - lo)
    if not np.isfinite(d_hi):
        d_hi = 2.0 * max(abs(out[0]), abs(out[-1])) if out.size else 1.0
    for _ in range(60):
        d = 0.5 * (d_lo + d_hi)
        inside = _count(max(lo, med - d), min(hi, med + d), cum, start, width, nbins, out,
                        nlow)[0]  # fmt: skip
        if inside < m / 2.0:
            d_lo = d
        else:
            d_hi = d
    if d_hi == 0.0:
        return med
    num = 0.0
    den = 0.0
    scale = _BIWEIGHT_C * d_hi
    for dv in values:
        if lo <= dv <= hi:  # False for NaN
            u = (dv - med) / scale
            if abs(u) < 1.0:
                w = (1.0 - u * u) ** 2
                num += (dv - med) * w
                den += w
    return med + num / den if den > 0.0 else med


@nb.njit(nogil=True, cache=True)
def _sigma_clipped_box(
    data,
    flags,
    badbits,
    y0,
    y1,
    x0,
    x1,
    sigma_low,
    sigma_high,
    maxiters,
    median_centre,
    estimator,
    buffers,
):
    """astropy-style sigma clip of one box, then the estimator: (bkg, rms, n_survivors)."""
    reach = max(sigma_low, sigma_high) + 2.0
    n, gathered, nout, nlow, ref, start, width, nbins = _histogram_box(
        data, flags, badbits, y0, y1, x0, x1, reach, estimator == BIWEIGHT, buffers
    )
    if n == 0:
        return np.nan, np.nan, 0
    _, values, _, counts, cum, wsum, wsum2, out, p1, p2 = buffers
    outliers = out[:nout]  # the helpers search this view, never the unused tail
    lo = -np.inf
    hi = np.inf
    m, s1, s2 = _moments(lo, hi, cum, wsum, wsum2, start, width, nbins, outliers, p1, p2, nlow)
    for _ in range(maxiters):
        mean = s1 / m
        std = np.sqrt(max(s2 / m - mean * mean, 0.0))
        if median_centre:
            centre = _median(m, lo, hi, cum, counts, start, width, nbins, outliers, nlow)
        else:
            centre = mean
        # Clipped values stay clipped, so the survivors are always one interval.
        lo = max(lo, centre - sigma_low * std)
        hi = min(hi, centre + sigma_high * std)
        m_new, s1, s2 = _moments(lo, hi, cum, wsum, wsum2, start, width, nbins, outliers, p1,
                                 p2, nlow)  # fmt: skip
        done = m_new == m
        m = m_new
        if done or m == 0:
            break
    if m == 0:
        return np.nan, np.nan, 0
    mean = s1 / m
    std = np.sqrt(max(s2 / m - mean * mean, 0.0))
    med = _median(m, lo, hi, cum, counts, start, width, nbins, outliers, nlow)
    if estimator == MEAN:
        bkg = mean
    elif estimator == MEDIAN:
        bkg = med
    elif estimator == MODE:
        bkg = 3.0 * med - 2.0 * mean
    elif estimator == SEXTRACTOR:
        if std == 0.0:
            bkg = mean
        elif abs(mean - med) / std >= 0.3:
            bkg = med
        else:
            bkg = 2.5 * med - 1.5 * mean
    else:
        bkg = _biweight(values[:gathered], lo, hi, med, m, cum, start, width, nbins,
                        outliers, nlow)  # fmt: skip
    return bkg + ref, std, m


@nb.njit(nogil=True, cache=True)
def mesh_statistics(
    data,
    flags,
    badbits,
    box_y,
    box_x,
    sigma_low,
    sigma_high,
    maxiters,
    median_centre,
    estimator,
):
    """Clipped background, rms and survivor count of every box of an image.

    Boxes tile the image from the origin; the last row and column of boxes are partial
    when the box size does not divide the image. Returns three ``(ceil(ny/box_y),
    ceil(nx/box_x))`` arrays (float64, float64, int64); empty boxes hold NaN, NaN, 0.
    """
    ny, nx = data.shape
    nby = (ny + box_y - 1) // box_y
    nbx = (nx + box_x - 1) // box_x
    bkg = np.full((nby, nbx), np.nan)
    rms = np.full((nby, nbx), np.nan)
    ngood = np.zeros((nby, nbx), np.int64)
    buffers = _buffers(box_y * box_x)
    for iy in range(nby):
        y0 = iy * box_y
        y1 = min(y0 + box_y, ny)
        for ix in range(nbx):
            x0 = ix * box_x
            b, r, g = _sigma_clipped_box(
                data, flags, badbits, y0, y1, x0, min(x0 + box_x, nx), sigma_low, sigma_high,
                maxiters, median_centre, estimator, buffers,
            )  # fmt: skip
            bkg[iy, ix] = b
            rms[iy, ix] = r
            ngood[iy, ix] = g
    return bkg, rms, ngood


@nb.njit(nogil=True, cache=True)
def meanclip_cells(data, flags, badbits, y_edges, x_edges, n_sigma, n_iter):
    """LSST afw MEANCLIP of every cell between the given edges, with its error.

    Pass 0 keeps ``|x - median| < n_sigma * 0.7413 * IQR``; each further pass keeps
    ``|x - mean| < n_sigma * std`` of the previous pass (from all the cell's pixels, not
    nested); the result is the mean of the last pass. Returns (mean, variance of the
    mean, clipped std, n) arrays of shape ``(len(y_edges) - 1, len(x_edges) - 1)``.
    """
    ncy = y_edges.size - 1
    ncx = x_edges.size - 1
    mean_out = np.full((ncy, ncx), np.nan)
    var_out = np.full((ncy, ncx), np.nan)
    std_out = np.full((ncy, ncx), np.nan)
    n_out = np.zeros((ncy, ncx), np.int64)
    capacity = 0
    for iy in range(ncy):
        for ix in range(ncx):
            cap = (y_edges[iy + 1] - y_edges[iy]) * (x_edges[ix + 1] - x_edges[ix])
            capacity = max(capacity, cap)
    buffers = _buffers(capacity)
    reach = 4.0 * n_sigma + 4.0
    for iy in range(ncy):
        for ix in range(ncx):
            n, _, nout, nlow, ref, start, width, nbins = _histogram_box(
                data, flags, badbits, y_edges[iy], y_edges[iy + 1], x_edges[ix],
                x_edges[ix + 1], reach, False, buffers,
            )  # fmt: skip
            if n == 0:
                continue
            _, _, _, counts, cum, wsum, wsum2, out, p1, p2 = buffers
            outliers = out[:nout]
            q1 = _rank(n // 4, -np.inf, np.inf, cum, counts, start, width, nbins, outliers,
                       nlow)  # fmt: skip
            q3 = _rank((3 * n) // 4, -np.inf, np.inf, cum, counts, start, width, nbins,
                       outliers, nlow)  # fmt: skip
            centre = _median(n, -np.inf, np.inf, cum, counts, start, width, nbins, outliers,
                             nlow)  # fmt: skip
            half = n_sigma * _IQR_TO_SIGMA * (q3 - q1)
            m = 0
            mean = centre
            var = 0.0
            for _ in range(n_iter):
                m, s1, s2 = _moments(centre - half, centre + half, cum, wsum, wsum2, start,
                                     width, nbins, outliers, p1, p2, nlow)  # fmt: skip
                if m == 0:
                    break
                mean = s1 / m
                var = max(s2 / m - mean * mean, 0.0) * m / max(m - 1, 1)
                centre = mean
                half = n_sigma * np.sqrt(var)
            if m == 0:
                continue
            mean_out[iy, ix] = mean + ref
            var_out[iy, ix] = var / m
            std_out[iy, ix] = np.sqrt(var)
            n_out[iy, ix] = m
    return mean_out, var_out, std_out, n_out
