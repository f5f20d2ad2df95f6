"""Sky matching of overlapping images (the JWST/stcal methods).

``local``, ``global``, ``match`` and ``global+match``, with overlaps measured in pixel
space from each image's WCS and real good-pixel mask rather than footprint polygons.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from processors._version import __version__
from processors.dq import bad_pixel_mask
from processors.engines._overlap_kernel import quadratic_hits
from processors.exposure import Exposure
from processors.skystats import SkyStatistic

__all__ = [
    "JWST_KEYWORDS",
    "PairStats",
    "SkyKeywords",
    "SkyImage",
    "SkyMatchResult",
    "SkyMatchWarning",
    "initial_sky",
    "measure_pair",
    "prepare_sky_image",
    "record_sky",
    "skymatch",
    "solve_sky",
]

_ALIASES = {"localmin": "local", "globalmin": "global", "globalmin+match": "global+match"}
METHODS: tuple[str, ...] = ("local", "global", "match", "global+match", "user", *_ALIASES)
_TARGET_SAMPLES = 250_000  # pixels sampled per image and pair: plenty for a sky statistic


@dataclass(frozen=True)
class SkyKeywords:
    """Header keywords that record a sky level, whether it was subtracted, and how.

    JWST's (``BKGLEVEL``, ``BKGSUB``, ``BKGMETH``) by default. A product that already
    records a subtracted *background* under those names gets its skymatch result under
    other names, so the two never blur (drizzlepac#58).
    """

    level: str = "BKGLEVEL"
    subtracted: str = "BKGSUB"
    method: str = "BKGMETH"


JWST_KEYWORDS = SkyKeywords()


class SkyMatchWarning(UserWarning):
    """A group of images could only be matched within disconnected subsets."""


@dataclass(frozen=True, eq=False)
class SkyImage:
    """One image prepared for matching: what its overlap statistics need, not its pixels.

    Attributes
    ----------
    samples : ndarray
        float32 pixels on the sampling grid (every ``step``-th row and column, from 0),
        NaN where a pixel may not be used (flagged by ``dqbits``, or not finite).
    good : ndarray
        The full-resolution usable-pixel mask, bits packed along rows (`numpy.packbits`):
        where another image's samples land.
    shape : (int, int)
        Shape of the image.
    wcs : `~astropy.wcs.WCS`
        Celestial WCS.
    initial_sky : float
        Sky already subtracted by an earlier run (``BKGLEVEL`` when ``BKGSUB`` and
        ``subtract``), else 0. Statistics are taken on the pixels as they are (already
        reduced by it), and new levels are cumulative on top of it.
    step : int
        Sampling stride.
    """

    samples: np.ndarray
    good: np.ndarray
    shape: tuple[int, int]
    wcs: WCS
    initial_sky: float
    step: int

    @property
    def nbytes(self) -> int:
        """Memory held by the samples and the mask (about 3 MiB for a 4096² image)."""
        return int(self.samples.nbytes + self.good.nbytes)

    def usable(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Whether the pixels ``(y, x)`` (integer arrays inside the image) may be used."""
        return ((self.good[y, x >> 3] >> (7 - (x & 7))) & 1).astype(bool)


@dataclass(frozen=True)
class PairStats:
    """Sky of image ``a`` and of image ``b`` inside their common footprint, with weights."""

    sky_a: float | None
    npix_a: int
    sky_b: float | None
    npix_b: int


@dataclass(frozen=True, eq=False)
class SkyMatchResult:
    """Per-image sky levels (None where the method could not determine one)."""

    levels: list[float | None]
    valid: list[bool]
    method: str
    subtract: bool
    images: list[Exposure]


def prepare_sky_image(
    exposure: Exposure,
    *,
    dqbits: int | str | None,
    subtract: bool,
    keywords: SkyKeywords = JWST_KEYWORDS,
) -> SkyImage:
    """Validate an exposure for matching and build its `SkyImage`.

    Raises
    ------
    ValueError
        Without a celestial WCS, for 3-D data, or when an earlier run recorded a different
        ``subtract`` (the JWST consistency rule: a flipped ``subtract`` is refused).
    """
    if exposure.wcs is None or not exposure.wcs.has_celestial:
        raise ValueError("skymatch needs a celestial WCS on every image")
    initial = initial_sky(exposure, subtract=subtract, keywords=keywords)
    mask = ~bad_pixel_mask(exposure.dq, dqbits) & np.isfinite(exposure.sci)
    step = max(1, int(np.sqrt(exposure.sci.size / _TARGET_SAMPLES)))
    grid = (slice(None, None, step), slice(None, None, step))
    samples = np.where(mask[grid], exposure.sci[grid], np.float32(np.nan)).astype(np.float32)
    return SkyImage(samples, np.packbits(mask, axis=1), exposure.image_shape,
                    exposure.wcs.celestial, initial, step)  # fmt: skip


def initial_sky(exposure: Exposure, *, subtract: bool, keywords: SkyKeywords) -> float:
    """Sky level an earlier run already recorded (0 if none), refusing a flipped ``subtract``.

    Parameters
    ----------
    exposure : Exposure
        A 2-D image, possibly matched before.
    subtract : bool
        Whether this run subtracts its levels.
    keywords : SkyKeywords
        Header keywords of the recorded level.

    Raises
    ------
    ValueError
        For a cube, or when an earlier run recorded the other ``subtract``.
    """
    if exposure.is_cube:
        raise ValueError(f"skymatch works on 2-D images, got shape {exposure.shape}")
    header = exposure.header
    if keywords.level in header and keywords.subtracted in header:
        previous = bool(header[keywords.subtracted])
        if previous != subtract:
            raise ValueError(
                f"image was matched before with subtract={previous}; refusing subtract="
                f"{subtract} (it would mix recorded and subtracted sky)"
            )
        if subtract:
            return float(header[keywords.level])
    return 0.0


def _footprint_box(a: SkyImage, b: SkyImage) -> tuple[int, int, int, int] | None:
    """Bounding box of b's footprint in a's pixel grid (None if it misses a entirely)."""
    ny, nx = b.shape
    xs = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5, (nx - 1) / 2])
    ys = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5, (ny - 1) / 2])
    ax, ay = a.wcs.world_to_pixel_values(*b.wcs.pixel_to_world_values(xs, ys))
    if not (np.isfinite(ax).all() and np.isfinite(ay).all()):
        return 0, a.shape[0], 0, a.shape[1]
    y0 = max(int(np.floor(ay.min())) - 2, 0)
    y1 = min(int(np.ceil(ay.max())) + 3, a.shape[0])
    x0 = max(int(np.floor(ax.min())) - 2, 0)
    x1 = min(int(np.ceil(ax.max())) + 3, a.shape[1])
    return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


def _design(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Quadratic terms of pixel coordinates (scaled to about unit range by the caller)."""
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)


@dataclass(frozen=True)
class _Quadratic:
    """A quadratic map of scaled pixel coordinates (terms of `_design`)."""

    coef_x: np.ndarray
    coef_y: np.ndarray
    sx: float
    sy: float


def _pixel_map(a: SkyImage, b: SkyImage) -> _Quadratic | Callable[[np.ndarray, np.ndarray], tuple]:
    """A map from a's pixel coordinates to b's.

    Going through the sky with WCSLIB costs ~1 µs per pixel; over one image the map
    between two celestial frames is smooth, so a quadratic fitted on a 9 x 9 grid is used
    when it reproduces the exact map to within 0.01 pixel at the cell centres in between,
    and the exact map otherwise (strong distortion, frames far apart).
    """

    def exact(x: np.ndarray, y: np.ndarray) -> tuple:
        return b.wcs.world_to_pixel_values(*a.wcs.pixel_to_world_values(x, y))

    ny, nx = a.shape
    gx, gy = np.meshgrid(np.linspace(-0.5, nx - 0.5, 9), np.linspace(-0.5, ny - 0.5, 9))
    cx, cy = np.meshgrid(np.linspace(-0.5, nx - 0.5, 17)[1::2],
                         np.linspace(-0.5, ny - 0.5, 17)[1::2])  # fmt: skip
    tx, ty = exact(gx.ravel(), gy.ravel())
    check_x, check_y = exact(cx.ravel(), cy.ravel())
    if not all(np.isfinite(v).all() for v in (tx, ty, check_x, check_y)):
        return exact
    sx, sy = 2.0 / max(nx, 1), 2.0 / max(ny, 1)
    design = _design(gx.ravel() * sx, gy.ravel() * sy)
    coef_x, *_ = np.linalg.lstsq(design, tx, rcond=None)
    coef_y, *_ = np.linalg.lstsq(design, ty, rcond=None)
    terms = _design(cx.ravel() * sx, cy.ravel() * sy)
    error = max(np.abs(terms @ coef_x - check_x).max(), np.abs(terms @ coef_y - check_y).max())
    return _Quadratic(coef_x, coef_y, sx, sy) if error < 0.01 else exact


def _hits(a: SkyImage, b: SkyImage, box: tuple[int, int, int, int]) -> np.ndarray:
    """Flat indices of a's usable samples inside ``box`` that land on a usable pixel of b."""
    y0, y1, x0, x1 = (-(-edge // a.step) for edge in box)  # sample rows/columns inside
    mapping = _pixel_map(a, b)
    if isinstance(mapping, _Quadratic):
        out = np.empty(max(y1 - y0, 0) * max(x1 - x0, 0), np.int64)
        count = quadratic_hits(a.samples, y0, y1, x0, x1, a.step, mapping.coef_x,
                               mapping.coef_y, mapping.sx, mapping.sy, b.good, b.shape[0],
                               b.shape[1], out)  # fmt: skip
        return out[:count]
    iy, ix = np.nonzero(np.isfinite(a.samples[y0:y1, x0:x1]))
    iy += y0
    ix += x0
    bx, by = mapping(ix * a.step, iy * a.step)
    jx, jy = np.rint(bx), np.rint(by)
    inside = (jx >= 0) & (jy >= 0) & (jx < b.shape[1]) & (jy < b.shape[0])
    hit = np.zeros(iy.size, dtype=bool)
    hit[inside] = b.usable(jy[inside].astype(np.int64), jx[inside].astype(np.int64))
    return iy[hit] * a.samples.shape[1] + ix[hit]


def _overlap_values(a: SkyImage, others: Sequence[SkyImage]) -> np.ndarray:
    """The usable samples of ``a`` that land on a usable pixel of any of ``others``."""
    chosen = []
    for b in others:
        box = _footprint_box(a, b)
        if box is not None:
            chosen.append(_hits(a, b, box))
    if not chosen:
        return np.empty(0, dtype=np.float32)
    flat = np.unique(np.concatenate(chosen)) if len(chosen) > 1 else chosen[0]
    return a.samples.reshape(-1)[flat]


def _measure(values: np.ndarray, step: int, stat: SkyStatistic) -> tuple[float | None, int]:
    if values.size == 0:
        return None, 0
    try:
        sky, npix = stat(values)
    except ValueError:
        return None, 0
    return (float(sky), npix * step * step) if np.isfinite(sky) else (None, 0)


def measure_pair(
    group_a: Sequence[SkyImage], group_b: Sequence[SkyImage], stat: SkyStatistic
) -> PairStats:
    """Sky of each group inside the other's footprint, on its own pixels.

    A group's value is the pixel-weighted mean of its members' statistics, each member
    measured on its pixels that fall on a good pixel of any member of the other group
    (so identical pointings, rotations and partial overlaps are all just pixel maps).
    """

    def side(own: Sequence[SkyImage], other: Sequence[SkyImage]) -> tuple[float | None, int]:
        total, weight = 0.0, 0
        for image in own:
            sky, npix = _measure(_overlap_values(image, other), image.step, stat)
            if sky is not None and npix > 0:
                total += sky * npix
                weight += npix
        return (total / weight, weight) if weight else (None, 0)

    sky_a, npix_a = side(group_a, group_b)
    sky_b, npix_b = side(group_b, group_a)
    return PairStats(sky_a, npix_a, sky_b, npix_b)


def local_sky(group: Sequence[SkyImage], stat: SkyStatistic) -> float | None:
    """A group's own sky: the minimum over members of each member's whole-image sky.

    Measured on the same sampling grid as the overlaps.
    """
    skies = []
    for image in group:
        sky, _ = _measure(image.samples[np.isfinite(image.samples)], image.step, stat)
        if sky is not None:
            skies.append(sky)
    return min(skies) if skies else None


def solve_sky(
    n_groups: int,
    pairs: dict[tuple[int, int], PairStats],
    local: Sequence[float | None],
    *,
    skymethod: str,
    match_down: bool = True,
) -> tuple[list[float | None], list[bool]]:
    """Sky increments per group from cached pair statistics and local skies.

    ``match`` minimises ``sum Wm_ij**2 ((d_i - d_j) - (s_i^(j) - s_j^(i)))**2`` over valid
    pairs (``Wm`` the mean pixel count of the pair) with the minimum-norm pseudo-inverse,
    then shifts by the minimum (``match_down``) or maximum; ``global`` gives every group
    the smallest local sky; ``global+match`` adds that smallest residual to the match.
    """
    method = _ALIASES.get(skymethod, skymethod)
    if method not in ("local", "global", "match", "global+match"):
        raise ValueError(f"skymethod must be one of {METHODS}, got {skymethod!r}")
    increments: list[float | None] = [None] * n_groups
    valid = [False] * n_groups
    if "match" in method:
        rows, rhs = [], []
        matched = np.zeros(n_groups, dtype=bool)
        for (i, j), p in pairs.items():
            if p.sky_a is None or p.sky_b is None or p.npix_a <= 0 or p.npix_b <= 0:
                continue
            weight = 0.5 * (p.npix_a + p.npix_b)
            row = np.zeros(n_groups)
            row[i], row[j] = weight, -weight
            rows.append(row)
            rhs.append(weight * (p.sky_a - p.sky_b))
            matched[[i, j]] = True
        if rows:
            design = np.array(rows)
            rank = np.linalg.matrix_rank(design, 1e-12)
            if rank < matched.sum() - 1:
                warnings.warn(
                    f"images form {int(matched.sum()) - rank} disconnected subsets; each is "
                    "matched within itself",
                    SkyMatchWarning,
                    stacklevel=2,
                )
            deltas = np.linalg.pinv(design, rcond=1e-12) @ np.array(rhs)
            finite = deltas[matched]
            shift = finite.min() if match_down else finite.max()
            for g in np.flatnonzero(matched):
                increments[g] = float(deltas[g] - shift)
                valid[g] = True
    if method in ("local", "global", "global+match"):
        residual = [
            None if local[g] is None else local[g] - (increments[g] or 0.0)  # type: ignore[operator]
            for g in range(n_groups)
        ]
        known = [r for r in residual if r is not None]
        if method == "local":
            increments = list(local)
            valid = [v is not None for v in local]
        elif known:
            floor = min(known)
            if method == "global":
                increments = [floor] * n_groups
            else:
                increments = [(inc or 0.0) + floor for inc in increments]
            valid = [True] * n_groups
    return increments, valid


def skymatch(
    images: Sequence[Exposure],
    *,
    skymethod: str = "match",
    skystat: str = "mode",
    match_down: bool = True,
    subtract: bool = False,
    dqbits: int | str | None = "~DO_NOT_USE+NON_SCIENCE",
    lower: float | None = None,
    upper: float | None = None,
    nclip: int = 5,
    lsigma: float = 4.0,
    usigma: float = 4.0,
    binwidth: float = 0.1,
    group_ids: Sequence[object] | None = None,
    user_sky: Sequence[float] | None = None,
) -> SkyMatchResult:
    """Match the sky levels of overlapping images (JWST ``SkyMatchStep`` semantics).

    Parameters
    ----------
    images : sequence of Exposure
        2-D images with celestial WCS (not needed for ``'user'``).
    skymethod : {'match', 'global+match', 'local', 'global', 'user'}, optional
        Also accepted: ``localmin``, ``globalmin``, ``globalmin+match``. ``'user'``
        takes the levels from ``user_sky`` (JWST's ``skylist``) instead of measuring.
    skystat : {'mode', 'median', 'mean', 'midpt'}, optional
        Sky statistic (stsci.imagestats semantics, see `processors.skystats`).
    match_down : bool, optional
        The reference is the lowest sky (True) or the highest.
    subtract : bool, optional
        Subtract the levels from the pixels, or only record them.
    dqbits : int, str or None, optional
        DQ bits to ignore (astropy bit-flag syntax); by default only DO_NOT_USE and
        NON_SCIENCE pixels are excluded.
    lower, upper, nclip, lsigma, usigma, binwidth
        Sky statistic parameters.
    group_ids : sequence, optional
        Images sharing an id (detectors of one exposure) get one common sky.
    user_sky : sequence of float, optional
        ``'user'``: the sky level of each image, in order. It is the total recorded in
        ``BKGLEVEL``; with ``subtract`` only what an earlier run has not yet subtracted
        is taken from the pixels.

    Returns
    -------
    SkyMatchResult
        Levels (cumulative with any earlier subtraction), validity, and new exposures
        with ``S_SKYMAT``, ``BKGLEVEL``, ``BKGSUB`` and ``BKGMETH`` (and subtracted pixels
        when ``subtract``). An image that cannot be matched is ``SKIPPED``, never an
        exception.

    Raises
    ------
    ValueError
        For invalid parameters, an image without WCS, or a flipped ``subtract``.
    """
    stat = SkyStatistic(skystat, lower, upper, nclip, lsigma, usigma, binwidth)  # type: ignore[arg-type]
    method = _ALIASES.get(skymethod, skymethod)
    if method == "user":
        return _user_levels(images, user_sky, subtract=subtract)
    if method not in ("local", "global", "match", "global+match"):
        raise ValueError(f"skymethod must be one of {METHODS}, got {skymethod!r}")
    prepared = [prepare_sky_image(e, dqbits=dqbits, subtract=subtract) for e in images]
    ids = list(range(len(images))) if group_ids is None else list(group_ids)
    if len(ids) != len(images):
        raise ValueError(f"{len(ids)} group_ids for {len(images)} images")
    order = list(dict.fromkeys(ids))
    groups = [[prepared[k] for k, g in enumerate(ids) if g == gid] for gid in order]
    pairs = {}
    if "match" in method:
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                pairs[(i, j)] = measure_pair(groups[i], groups[j], stat)
    local = [local_sky(g, stat) for g in groups] if method != "match" else [None] * len(groups)
    increments, valid = solve_sky(len(groups), pairs, local, skymethod=method,
                                  match_down=match_down)  # fmt: skip
    group_of = [order.index(g) for g in ids]
    return apply_sky(
        images,
        prepared,
        [increments[g] for g in group_of],
        [valid[g] for g in group_of],
        skymethod=method,
        subtract=subtract,
    )


def apply_sky(
    images: Sequence[Exposure],
    prepared: Sequence[SkyImage],
    increments: Sequence[float | None],
    valid: Sequence[bool],
    *,
    skymethod: str,
    subtract: bool,
    keywords: SkyKeywords = JWST_KEYWORDS,
) -> SkyMatchResult:
    """Record (and optionally subtract) solved sky increments on new exposures."""
    levels: list[float | None] = []
    out = []
    for exposure, image, increment, ok in zip(images, prepared, increments, valid, strict=True):
        if not ok or increment is None:
            header = exposure.header.copy()
            header["S_SKYMAT"] = ("SKIPPED", "sky matching step")
            levels.append(None)
            header.add_history(f"skystream {__version__}: sky matching skipped (no overlap)")
            out.append(exposure.with_changes(header=header))
            continue
        levels.append(image.initial_sky + increment)
        out.append(
            record_sky(exposure, image.initial_sky, increment, skymethod, subtract, keywords)
        )
    return SkyMatchResult(levels, list(valid), skymethod, subtract, out)


def record_sky(
    exposure: Exposure,
    initial: float,
    increment: float,
    skymethod: str,
    subtract: bool,
    keywords: SkyKeywords,
) -> Exposure:
    """A new exposure with the sky level recorded (and the increment subtracted).

    Parameters
    ----------
    exposure : Exposure
        The image.
    initial : float
        Level recorded before (`initial_sky`).
    increment : float
        This run's level on top of it.
    skymethod : str
        Method name for the header.
    subtract : bool
        Subtract ``increment`` from SCI.
    keywords : SkyKeywords
        Header keywords of the recorded level.
    """
    header = exposure.header.copy()
    header["S_SKYMAT"] = ("COMPLETE", "sky matching step")
    header[keywords.level] = (initial + increment, "sky level (skymatch)")
    header[keywords.subtracted] = (subtract, "skymatch level subtracted from SCI")
    header[keywords.method] = (skymethod, "sky matching method")
    sci = exposure.sci - np.float32(increment) if subtract else exposure.sci
    return exposure.with_changes(sci=sci, header=header)


def _user_levels(
    images: Sequence[Exposure], user_sky: Sequence[float] | None, *, subtract: bool
) -> SkyMatchResult:
    """``skymethod='user'``: the given levels, one per image, recorded (and subtracted)."""
    if user_sky is None:
        raise ValueError("skymethod 'user' needs user_sky: one sky level per image")
    levels = [float(level) for level in user_sky]
    if len(levels) != len(images):
        raise ValueError(f"{len(levels)} user_sky levels for {len(images)} images")
    if not all(np.isfinite(levels)):
        raise ValueError(f"user_sky levels must be finite, got {levels}")
    out = []
    for exposure, level in zip(images, levels, strict=True):
        keywords = JWST_KEYWORDS
        initial = initial_sky(exposure, subtract=subtract, keywords=keywords)
        out.append(record_sky(exposure, initial, level - initial, "user", subtract, keywords))
    return SkyMatchResult(list(levels), [True] * len(images), "user", subtract, out)
