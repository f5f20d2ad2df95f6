"""The in-memory exposure: SCI, ERR and DQ planes with their header and WCS."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from astropy.io.fits import Header
from astropy.wcs import WCS

__all__ = ["Exposure"]


@dataclass(frozen=True, eq=False)
class Exposure:
    """One exposure in the JWST layout, 2-D ``(ny, nx)`` or 3-D ``(nints, ny, nx)``.

    The constructor normalises types: ``sci`` becomes float32, ``err`` float32 (or stays
    ``None``, meaning the uncertainty is unknown and is never invented), ``dq`` uint32
    (zeros when not given). Arrays are not copied when they already have the right dtype,
    so callers that keep a reference must not mutate it; processors never do.

    Parameters
    ----------
    sci : array_like
        Science data, 2-D or 3-D.
    err : array_like or None, optional
        One-sigma uncertainty of ``sci``, same shape, or ``None`` if unknown.
    dq : array_like or None, optional
        Data-quality bit flags (JWST values, see `processors.dq`), same shape.
    header : `~astropy.io.fits.Header` or None, optional
        Metadata; an empty header when not given.
    wcs : `~astropy.wcs.WCS` or None, optional
        Celestial WCS of the last two axes.

    Raises
    ------
    ValueError
        If ``sci`` is not 2-D or 3-D, or ``err``/``dq`` do not match its shape.
    """

    sci: np.ndarray
    err: np.ndarray | None = None
    dq: np.ndarray = None  # type: ignore[assignment]  # zeros of sci's shape after init
    header: Header = field(default_factory=Header)
    wcs: WCS | None = None

    def __post_init__(self) -> None:
        sci = np.asarray(self.sci, dtype=np.float32)
        if sci.ndim not in (2, 3):
            raise ValueError(f"sci must be 2-D or 3-D, got shape {sci.shape}")
        err = None if self.err is None else np.asarray(self.err, dtype=np.float32)
        if err is not None and err.shape != sci.shape:
            raise ValueError(f"err shape {err.shape} does not match sci shape {sci.shape}")
        given_dq: np.ndarray | None = self.dq
        if given_dq is None:
            dq = np.zeros(sci.shape, dtype=np.uint32)
        else:
            dq = np.asarray(given_dq)
            if dq.shape != sci.shape:
                raise ValueError(f"dq shape {dq.shape} does not match sci shape {sci.shape}")
            if not np.issubdtype(dq.dtype, np.integer):
                raise TypeError(f"dq must hold integer bit flags, got dtype {dq.dtype}")
            dq = dq.astype(np.uint32, copy=False)
        header = Header() if self.header is None else self.header
        object.__setattr__(self, "sci", sci)
        object.__setattr__(self, "err", err)
        object.__setattr__(self, "dq", dq)
        object.__setattr__(self, "header", header)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the science array."""
        return tuple(self.sci.shape)

    @property
    def image_shape(self) -> tuple[int, int]:
        """Shape ``(ny, nx)`` of one image plane."""
        ny, nx = self.sci.shape[-2:]
        return int(ny), int(nx)

    @property
    def is_cube(self) -> bool:
        """True for 3-D "rateints" data."""
        return self.sci.ndim == 3

    def with_changes(self, **changes: Any) -> Exposure:
        """Return a new exposure with some fields replaced; this one is untouched."""
        return replace(self, **changes)
