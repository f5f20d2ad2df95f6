"""Synthetic exposures with a known sky: the truth that tests and the demo measure against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io.fits import Header
from astropy.wcs import WCS

from processors.dq import DQ
from processors.exposure import Exposure

__all__ = ["FieldModel", "simulate_exposure", "simulate_night"]

_FIELD_RA = 150.1
_FIELD_DEC = 2.2
_PIXEL_SCALE_DEG = 0.2 / 3600.0
_GAIN = 2.0  # e-/DN
_READ_NOISE = 5.0  # DN
_SATURATION = 60000.0  # DN
_REFERENCE_BORDER = 4  # px flagged REFERENCE_PIXEL | DO_NOT_USE, as on JWST detectors
_STAMP_HALF = 7
_NIGHT_START_MJD = 61000.0


@dataclass(frozen=True)
class FieldModel:
    """A fixed star field on the sky, shared by every exposure of a simulated night.

    Attributes
    ----------
    ra, dec : ndarray
        Star positions in degrees.
    flux : ndarray
        Total star fluxes in DN/s.
    """

    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray

    @classmethod
    def random(cls, seed: int, *, radius_deg: float = 0.2, n_stars: int = 4000) -> FieldModel:
        """Draw a field of ``n_stars`` stars with power-law fluxes around the field centre."""
        rng = np.random.default_rng([seed, 0xF1E1D])
        dra = rng.uniform(-radius_deg, radius_deg, n_stars) / np.cos(np.radians(_FIELD_DEC))
        ddec = rng.uniform(-radius_deg, radius_deg, n_stars)
        flux = 200.0 * (1.0 - rng.uniform(0.0, 0.999, n_stars)) ** -1.2
        return cls(ra=_FIELD_RA + dra, dec=_FIELD_DEC + ddec, flux=flux)


def _frame_wcs(shape: tuple[int, int], ra: float, dec: float, rotation_deg: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    wcs.wcs.crval = [ra, dec]
    theta = np.radians(rotation_deg)
    scale = _PIXEL_SCALE_DEG
    wcs.wcs.cd = scale * np.array(
        [[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    )
    wcs.wcs.set()
    return wcs


def _render_stars(
    shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray, fwhm: float
) -> np.ndarray:
    """Add Gaussian stars by scattering fixed-size stamps (vectorised over stars)."""
    image = np.zeros(shape[0] * shape[1], dtype=np.float64)
    if x.size == 0:
        return image.reshape(shape)
    sigma = fwhm / 2.3548
    offsets = np.arange(-_STAMP_HALF, _STAMP_HALF + 1)
    xc = np.rint(x).astype(np.int64)
    yc = np.rint(y).astype(np.int64)
    px = xc[:, None, None] + offsets[None, None, :]
    py = yc[:, None, None] + offsets[None, :, None]
    r2 = (px - x[:, None, None]) ** 2 + (py - y[:, None, None]) ** 2
    values = flux[:, None, None] * np.exp(-0.5 * r2 / sigma**2) / (2 * np.pi * sigma**2)
    inside = (px >= 0) & (px < shape[1]) & (py >= 0) & (py < shape[0])
    np.add.at(image, (py * shape[1] + px)[inside], values[inside])
    return image.reshape(shape)


def simulate_exposure(
    index: int = 0,
    *,
    size: int | tuple[int, int] = 1024,
    seed: int = 0,
    field: FieldModel | None = None,
    sky_level: float | None = None,
    nints: int | None = None,
    fwhm: float = 3.0,
) -> Exposure:
    """Simulate one exposure of a dithered night with a known sky.

    The sky is ``level + gx*(x - xc) + gy*(y - yc)`` (``xc``, ``yc`` the image centre), so
    its mean over the image is exactly ``level``. On top: stars of a fixed sky field seen
    through a TAN WCS with a dither offset and a small rotation, Poisson-like noise with
    read noise, cosmic rays (most flagged ``JUMP_DET``), hot pixels (``HOT``), saturated
    star cores (``SATURATED``) and a 4-pixel reference border (``REFERENCE_PIXEL |
    DO_NOT_USE``, values near 0).

    Parameters
    ----------
    index : int, optional
        Exposure number within the night; selects dither, sky level and time.
    size : int or (int, int), optional
        Image shape ``(ny, nx)``; an int means square.
    seed : int, optional
        Seed of the night; the same ``(seed, index)`` gives the same exposure.
    field : FieldModel, optional
        Star field; by default the field of ``seed``.
    sky_level : float, optional
        Mean sky in DN/s; by default a slow drift over the night around 300 DN/s.
    nints : int, optional
        Make a 3-D "rateints" exposure with this many integrations.
    fwhm : float, optional
        Stellar FWHM in pixels.

    Returns
    -------
    Exposure
        With ERR, DQ, a TAN WCS and a header whose ``TRUESKY``, ``TRUEGX``, ``TRUEGY`` and
        ``TRUENOIS`` cards hold the truth.

    Examples
    --------
    >>> exp = simulate_exposure(0, size=128, seed=1)
    >>> exp.shape, exp.header["TRUESKY"] > 0
    ((128, 128), True)
    """
    shape = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    ny, nx = shape
    rng = np.random.default_rng([seed, index])
    stars = field if field is not None else FieldModel.random(seed)

    level = 300.0 + 60.0 * np.sin(0.4 * index) if sky_level is None else float(sky_level)
    gx, gy = level * 0.1 * rng.uniform(-1.0, 1.0, 2) / np.array([nx, ny])
    dither = rng.uniform(-0.15, 0.15, 2) * np.array([nx, ny]) * _PIXEL_SCALE_DEG
    wcs = _frame_wcs(
        shape,
        _FIELD_RA + dither[0] / np.cos(np.radians(_FIELD_DEC)),
        _FIELD_DEC + dither[1],
        rng.uniform(-0.5, 0.5),
    )

    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = level + gx * (xx - (nx - 1) / 2.0) + gy * (yy - (ny - 1) / 2.0)
    sx, sy = wcs.all_world2pix(stars.ra, stars.dec, 0)
    near = (sx > -_STAMP_HALF) & (sx < nx + _STAMP_HALF) & (sy > -_STAMP_HALF)
    near &= sy < ny + _STAMP_HALF
    signal = sky + _render_stars(shape, sx[near], sy[near], stars.flux[near], fwhm)

    planes = 1 if nints is None else int(nints)
    variance = np.maximum(signal, 0.0) / _GAIN + _READ_NOISE**2
    sci = signal[None] + rng.standard_normal((planes, ny, nx)) * np.sqrt(variance)[None]
    err = np.broadcast_to(np.sqrt(variance), sci.shape).copy()
    dq = np.zeros(sci.shape, dtype=np.uint32)

    n_cr = max(1, ny * nx // 5000)
    cr_plane = rng.integers(0, planes, n_cr)
    cr_y, cr_x = rng.integers(0, ny, n_cr), rng.integers(0, nx, n_cr)
    sci[cr_plane, cr_y, cr_x] += rng.uniform(500.0, 20000.0, n_cr)
    flagged = rng.uniform(size=n_cr) < 0.7
    dq[cr_plane[flagged], cr_y[flagged], cr_x[flagged]] |= int(DQ.JUMP_DET)

    n_hot = max(1, ny * nx // 20000)
    hot_y, hot_x = rng.integers(0, ny, n_hot), rng.integers(0, nx, n_hot)
    sci[:, hot_y, hot_x] += 5000.0
    dq[:, hot_y, hot_x] |= int(DQ.HOT)

    saturated = sci >= _SATURATION
    sci[saturated] = _SATURATION
    dq[saturated] |= int(DQ.SATURATED)

    border = np.zeros(shape, dtype=bool)
    border[:_REFERENCE_BORDER] = border[-_REFERENCE_BORDER:] = True
    border[:, :_REFERENCE_BORDER] = border[:, -_REFERENCE_BORDER:] = True
    sci[:, border] = rng.normal(0.0, _READ_NOISE, (planes, int(border.sum())))
    dq[:, border] |= int(DQ.REFERENCE_PIXEL | DQ.DO_NOT_USE)

    header = Header()
    header["TELESCOP"] = ("SIMULATED", "skystream simulator")
    header["INSTRUME"] = ("SIMCAM", "instrument")
    header["DETECTOR"] = ("SIM1", "detector")
    header["FILTER"] = ("J", "filter")
    header["EXP_TYPE"] = ("SIM_IMAGE", "exposure type")
    header["EXPTIME"] = (60.0, "[s] exposure time")
    header["MJD-OBS"] = (_NIGHT_START_MJD + index * 90.0 / 86400.0, "start of exposure")
    header["BUNIT"] = ("DN/s", "units of SCI and ERR")
    header["TRUESKY"] = (level, "[DN/s] true mean sky level (simulation)")
    header["TRUEGX"] = (float(gx), "[DN/s/px] true sky gradient along x")
    header["TRUEGY"] = (float(gy), "[DN/s/px] true sky gradient along y")
    header["TRUENOIS"] = (
        float(np.sqrt(level / _GAIN + _READ_NOISE**2)),
        "[DN/s] sky noise sigma at the mean level",
    )
    header["SIMSEED"] = (seed, "simulation seed")
    header["SIMINDEX"] = (index, "exposure number in the night")
    header.update(wcs.to_header())

    squeeze = nints is None
    return Exposure(
        sci=sci[0] if squeeze else sci,
        err=err[0] if squeeze else err,
        dq=dq[0] if squeeze else dq,
        header=header,
        wcs=wcs,
    )


def simulate_night(
    count: int, *, size: int | tuple[int, int] = 1024, seed: int = 0
) -> list[Exposure]:
    """Simulate ``count`` dithered exposures of one field (see `simulate_exposure`)."""
    field = FieldModel.random(seed)
    return [simulate_exposure(i, size=size, seed=seed, field=field) for i in range(count)]
