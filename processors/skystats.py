"""Sky statistics with the semantics of ``stsci.imagestats.ImageStats`` (as skymatch uses it).

Iterative clipping around the *mean* (``nclip`` extra passes of ``lsigma``/``usigma``
times the sample standard deviation, inside the hard ``lower``/``upper`` cuts), then the
statistic: ``mean``; ``median`` (numpy median of the clipped values); ``mode`` (peak of a
histogram of ``binwidth`` sigma, refined parabolically); ``midpt`` (IRAF's histogram
pseudo-median). Two upstream quirks are kept on purpose because JWST's tolerances depend
on them: the histogram is built over *all* input values with spacing ``dz`` but positions
are converted back with ``hwidth``, and float32 arithmetic is used where imagestats uses
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["SKYSTATS", "SkyStatistic", "sky_statistic"]

SkyStat = Literal["mean", "median", "mode", "midpt"]
SKYSTATS: tuple[str, ...] = ("mean", "median", "mode", "midpt")
_TINY = 10.0 * float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class SkyStatistic:
    """How to measure the sky of a set of pixels (skymatch's ``SkyStats`` parameters)."""

    skystat: SkyStat = "mode"
    lower: float | None = None
    upper: float | None = None
    nclip: int = 5
    lsigma: float = 4.0
    usigma: float = 4.0
    binwidth: float = 0.1

    def __post_init__(self) -> None:
        if self.skystat not in SKYSTATS:
            raise ValueError(f"skystat must be one of {SKYSTATS}, got {self.skystat!r}")
        if self.nclip < 0:
            raise ValueError(f"nclip must be >= 0, got {self.nclip}")
        if self.lsigma <= 0 or self.usigma <= 0:
            raise ValueError(f"lsigma and usigma must be positive, got {self.lsigma}, "
                             f"{self.usigma}")  # fmt: skip
        if self.binwidth <= 0:
            raise ValueError(f"binwidth must be positive, got {self.binwidth}")

    def __call__(self, values: np.ndarray) -> tuple[float, int]:
        """The statistic and the number of pixels it used (see `sky_statistic`)."""
        return sky_statistic(values, self)


def _clipped_moments(x: np.ndarray, low: np.float32, high: np.float32) -> tuple:
    """Count, mean, sample std, min and max of ``low <= x <= high`` in imagestats' float32."""
    inside = x[(x >= low) & (x <= high)]
    n = inside.size
    if n == 0:
        return 0, 0.0, 0.0, 0.0, 0.0
    total = float(np.sum(inside, dtype=np.float64))
    squares = float(np.sum(inside * inside, dtype=np.float64))  # float32 products, as in C
    mean = np.float32(total / n)
    variance = (squares - float(mean) * total) / (n - 1) if n > 1 else np.nan
    std = np.float32(np.sqrt(variance)) if variance >= 0 else np.float32(np.nan)
    return n, float(mean), float(std), float(inside.min()), float(inside.max())


def _histogram(x: np.ndarray, nbins: int, dz: float, start: float) -> np.ndarray:
    low, high, width = np.float32(start), np.float32(start + dz * nbins), np.float32(dz)
    inside = x[(x >= low) & (x < high)]
    if inside.size == 0 or width == 0:
        return np.zeros(nbins, dtype=np.int64)
    index = ((inside - low).astype(np.float64) / float(width)).astype(np.int64)
    return np.bincount(np.clip(index, 0, nbins - 1), minlength=nbins)


def _mode(counts: np.ndarray, start: float, hwidth: float) -> float:
    nbins = counts.size
    if nbins == 1:
        return start + 0.5 * hwidth
    if nbins == 2:
        if counts[0] == counts[1]:
            return start + hwidth
        return start + (0.5 if counts[0] > counts[1] else 1.5) * hwidth
    peak = int(np.argmax(counts))
    if peak == 0:
        return start + 0.5 * hwidth
    if peak == nbins - 1:
        return start + (nbins - 0.5) * hwidth
    rise = int(counts[peak] - counts[peak - 1])
    fall = int(counts[peak] - counts[peak + 1])
    if rise + fall == 0:
        return start + (peak + 0.5) * hwidth
    return start + (peak + 0.5 + 0.5 * (rise - fall) / (rise + fall)) * hwidth


def _midpt(counts: np.ndarray, start: float, hwidth: float) -> float:
    cumulative = np.cumsum(counts).astype(np.float32)
    if cumulative[-1] == 0:
        return start
    cumulative = cumulative / cumulative[-1]
    lo = int(np.argmax(cumulative >= 0.5))
    edge = start + lo * hwidth
    below = float(cumulative[lo - 1]) if lo > 0 else 0.0
    step = float(cumulative[lo]) - below
    if step == 0:
        return edge
    return edge + (0.5 - below) / step * hwidth


def sky_statistic(values: np.ndarray, stat: SkyStatistic | None = None) -> tuple[float, int]:
    """Measure the sky of a set of pixel values as skymatch does.

    Parameters
    ----------
    values : ndarray
        Pixel values (any shape; cast to float32 as imagestats does). Non-finite values
        must already be excluded.
    stat : SkyStatistic, optional
        Statistic and clipping parameters; skymatch's defaults (mode, nclip 5, 4 sigma,
        binwidth 0.1) when omitted.

    Returns
    -------
    value : float
        The statistic.
    npix : int
        Pixels left after clipping (the weight skymatch gives this measurement).

    Raises
    ------
    ValueError
        If no pixel lies within the cuts.

    Examples
    --------
    >>> value, npix = sky_statistic(np.array([0.0, 1.0, 2.0, 3.0]), SkyStatistic("midpt"))
    >>> round(value, 6), npix
    (1.032796, 4)
    """
    stat = SkyStatistic() if stat is None else stat
    x = np.asarray(values, dtype=np.float32).ravel()
    if x.size == 0:
        raise ValueError("no pixels to measure the sky on")
    lower = float(x.min()) if stat.lower is None else float(stat.lower)
    upper = float(x.max()) if stat.upper is None else float(stat.upper)
    if lower > upper:
        raise ValueError(f"lower cut {lower} is above upper cut {upper}")
    clip_low, clip_high = lower, upper
    n = 0
    mean = std = smallest = largest = 0.0
    for iteration in range(stat.nclip + 1):
        n, mean, std, smallest, largest = _clipped_moments(
            x, np.float32(clip_low), np.float32(clip_high)
        )
        if n == 0:
            raise ValueError(f"no pixel within [{clip_low}, {clip_high}] (clip pass {iteration})")
        if iteration < stat.nclip:
            clip_low = max(lower, mean - stat.lsigma * std)
            clip_high = min(upper, mean + stat.usigma * std)
    if stat.skystat == "mean":
        return mean, n
    if stat.skystat == "median":
        chosen = x if stat.nclip == 0 else x[
            (x >= np.float32(clip_low)) & (x <= np.float32(clip_high))
        ]  # fmt: skip
        return float(np.median(chosen)), n
    hwidth = stat.binwidth * std
    span = largest - smallest
    if not np.isfinite(hwidth) or hwidth < _TINY or abs(span) < _TINY or hwidth > span:
        nbins, dz = 1, span
    else:
        nbins = int(span / hwidth) + 1
        dz = span / (nbins - 1)
    hwidth = hwidth if np.isfinite(hwidth) else 0.0
    counts = _histogram(x, nbins, dz, smallest)
    if stat.skystat == "mode":
        return _mode(counts, smallest, hwidth), n
    return _midpt(counts, smallest, hwidth), n
