"""Combining background exposures: the JWST background average and robust alternatives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from processors.engines._bands import bands, map_bands
from processors.engines._combine_kernel import (
    COMBINE_CODES,
    JWST,
    LANES,
    combine_pixels,
    sorting_network,
)
from processors.exposure import Exposure

__all__ = ["COMBINES", "collapse_integrations", "combine_backgrounds"]

Combine = Literal["jwst", "median", "biweight", "error-clip"]
COMBINES: tuple[str, ...] = tuple(COMBINE_CODES)
_UNBOUNDED = 1_000_000


def _iterations(maxiters: int | None) -> int:
    if maxiters is not None and maxiters < 1:
        raise ValueError(f"maxiters must be >= 1 or None, got {maxiters}")
    return _UNBOUNDED if maxiters is None else int(maxiters)


def _run(
    data: np.ndarray,
    err: np.ndarray | None,
    dq: np.ndarray | None,
    *,
    method: int,
    sigma: float,
    maxiters: int,
    k_err: float,
    threads: int = 2,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
    """Combine ``(N, ...)`` planes pixel by pixel; returns value, ERR, DQ, fewest used.

    The compiled kernel reads the members where they are (float32 planes are not
    copied) on ``threads`` threads; only the results are allocated. DQ is the OR of all
    members (without DQ, a read-only view of zeros: no plane is allocated).
    """
    n, shape = data.shape[0], data.shape[1:]
    flat = np.ascontiguousarray(data.reshape(n, -1), dtype=np.float32)
    pixels = flat.shape[1]
    errors = (
        np.empty((0, pixels), np.float32)
        if err is None
        else np.ascontiguousarray(err.reshape(n, -1), dtype=np.float32)
    )
    out = np.empty(pixels, np.float32)
    out_err = np.empty(pixels if err is not None else 0, np.float32)
    slots = np.arange(n, dtype=np.int64)
    network = sorting_network(n)

    def run(first: int, last: int) -> int:
        fewest = combine_pixels(flat, errors, slots, network, method, sigma, sigma, maxiters,
                                k_err, out, out_err, first, last, LANES)  # fmt: skip
        return int(fewest)

    spans = bands(-(-pixels // LANES), threads)
    fewest = min(map_bands(run, spans))
    if dq is None:  # no flag anywhere: a read-only view of one zero, no plane
        flags = np.broadcast_to(np.uint32(0), shape)
    else:
        flags = np.bitwise_or.reduce(np.asarray(dq, dtype=np.uint32), axis=0)
    return (
        out.reshape(shape),
        None if err is None else out_err.reshape(shape),
        flags,
        fewest,
    )


def collapse_integrations(
    data: np.ndarray,
    err: np.ndarray | None = None,
    dq: np.ndarray | None = None,
    *,
    sigma: float = 3.0,
    maxiters: int | None = None,
) -> Exposure:
    """Average the integrations of one 3-D background as the JWST rateints path does.

    SCI: sigma-clipped mean over integrations; ERR: the variance ``err**2`` is clipped
    independently and its clipped mean taken (a mean variance, as JWST does), so ERR is
    its square root; DQ: OR over integrations.
    """
    iterations = _iterations(maxiters)
    mean, _, flags, _ = _run(data, None, dq, method=JWST, sigma=sigma, maxiters=iterations,
                             k_err=0.0)  # fmt: skip
    error = None
    if err is not None:
        variance, _, _, _ = _run(np.square(err, dtype=np.float32), None, None, method=JWST,
                                 sigma=sigma, maxiters=iterations, k_err=0.0)  # fmt: skip
        error = np.sqrt(variance, out=variance)
    return Exposure(sci=mean, err=error, dq=flags)


def _collapse_members(
    data: Sequence[np.ndarray],
    err: Sequence[np.ndarray] | np.ndarray | None,
    dq: Sequence[np.ndarray] | np.ndarray | None,
    *,
    sigma: float,
    maxiters: int | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Stack members given one by one, each 3-D one first averaged over its integrations.

    JWST's rateints path collapses every background exposure on its own, so members may
    have different numbers of integrations (and 2-D "rate" members are used as they are).
    """
    for name, other in (("err", err), ("dq", dq)):
        if other is not None and len(other) != len(data):
            raise ValueError(f"{len(other)} {name} arrays for {len(data)} members")
    planes: list[np.ndarray] = []
    errors: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    for k, member in enumerate(data):
        sci = np.asarray(member)
        e = None if err is None else np.asarray(err[k])
        f = None if dq is None else np.asarray(dq[k])
        for name, other in (("err", e), ("dq", f)):
            if other is not None and other.shape != sci.shape:
                raise ValueError(f"member {k}: {name} shape {other.shape} != {sci.shape}")
        if sci.ndim == 3:
            collapsed = collapse_integrations(sci, e, f, sigma=sigma, maxiters=maxiters)
            sci, e, f = collapsed.sci, collapsed.err, collapsed.dq
        elif sci.ndim != 2:
            raise ValueError(f"member {k} must be 2-D or 3-D, got shape {sci.shape}")
        if planes and sci.shape != planes[0].shape:
            raise ValueError(f"member {k} image shape {sci.shape} != {planes[0].shape}")
        planes.append(sci)
        if e is not None:
            errors.append(e)
        if f is not None:
            flags.append(f)
    return (
        np.stack(planes),
        np.stack(errors) if err is not None else None,
        np.stack(flags) if dq is not None else None,
    )


def combine_backgrounds(
    data: np.ndarray | Sequence[np.ndarray],
    err: np.ndarray | Sequence[np.ndarray] | None = None,
    dq: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    combine: Combine = "jwst",
    sigma: float = 3.0,
    maxiters: int | None = None,
    k_err: float = 3.0,
    threads: int = 2,
) -> Exposure:
    """Combine N background frames into one background, pixel by pixel.

    ``combine='jwst'`` (default) is the JWST background step's average: astropy-style
    sigma clipping across members (median centre, population std, ``sigma``,
    ``maxiters=None`` iterating to convergence, non-finite values masked), SCI = mean of
    the survivors, ERR = ``sqrt(sum err**2 of survivors) / n_survivors``, DQ = OR of all
    members (clipped ones too), and 0 with ERR 0 where no member is finite.

    That rule cannot reject a single outlier among fewer than 8 members (its distance
    from the median is ``N / sqrt(N - 1)`` sigmas). For small stacks:

    - ``'median'``: the per-pixel median, ERR = ``sqrt(pi/2)`` x the ERR of the mean;
      robust for any N >= 3, costs ~25 % more noise than a mean.
    - ``'biweight'``: Tukey biweight location (c=6 around the median, MAD scale), ERR as
      for the mean; nearly as robust as the median with nearly the noise of the mean.
    - ``'error-clip'``: members farther than ``k_err`` times their own ERR from the
      median are dropped, then the mean and ERR as in ``'jwst'``; the best choice when
      ERR is trustworthy (needs ERR). If no member survives, the median is used.

    Parameters
    ----------
    data : ndarray or sequence of ndarray
        ``(N, ny, nx)``, or ``(N, nints, ny, nx)`` "rateints" frames, which are first
        averaged over integrations (see `collapse_integrations`); or a list of members,
        each 2-D or 3-D with its own number of integrations (each 3-D one is collapsed
        on its own, as JWST does).
    err : ndarray or sequence of ndarray, optional
        One-sigma errors, same shape(s); None means unknown (the result's ERR is None).
    dq : ndarray of int or sequence of ndarray, optional
        DQ flags, same shape(s).
    combine : {'jwst', 'median', 'biweight', 'error-clip'}, optional
        The rule.
    sigma : float, optional
        Clipping threshold (``'jwst'`` and the rateints collapse).
    maxiters : int or None, optional
        Clipping iterations; None iterates until nothing more is rejected.
    k_err : float, optional
        ``'error-clip'`` threshold in units of each member's ERR.
    threads : int, optional
        Threads sharing the work (bands of pixels); the result does not depend on it.

    Returns
    -------
    Exposure
        2-D combined background with SCI, ERR (or None) and DQ, and the number of members
        used per pixel in ``header['NCOMBINE']`` (the minimum over pixels).

    Raises
    ------
    ValueError
        For a wrong shape or an unknown rule, or ``'error-clip'`` without ERR.

    Examples
    --------
    >>> import numpy as np
    >>> stack = np.array([[[0.0]], [[0.0]], [[0.0]], [[100.0]]])
    >>> float(combine_backgrounds(stack).sci[0, 0])  # JWST cannot clip 1 of 4
    25.0
    >>> float(combine_backgrounds(stack, combine="median").sci[0, 0])
    0.0
    """
    if not isinstance(data, np.ndarray):
        data, err, dq = _collapse_members(data, err, dq, sigma=sigma, maxiters=maxiters)
    cube = np.asarray(data)
    if cube.ndim not in (3, 4):
        raise ValueError(f"data must be (N, ny, nx) or (N, nints, ny, nx), got {cube.shape}")
    if combine not in COMBINE_CODES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    for name, other in (("err", err), ("dq", dq)):
        if other is not None and np.shape(other) != cube.shape:
            raise ValueError(f"{name} shape {np.shape(other)} does not match data {cube.shape}")
    if combine == "error-clip" and err is None:
        raise ValueError("combine='error-clip' needs err: each member is judged by its ERR")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    iterations = _iterations(maxiters)
    if cube.ndim == 4:
        collapsed = [
            collapse_integrations(
                cube[k],
                None if err is None else np.asarray(err)[k],
                None if dq is None else np.asarray(dq)[k],
                sigma=sigma,
                maxiters=maxiters,
            )
            for k in range(cube.shape[0])
        ]
        cube = np.stack([c.sci for c in collapsed])
        err = None if err is None else np.stack([np.asarray(c.err) for c in collapsed])
        dq = None if dq is None else np.stack([c.dq for c in collapsed])
    errors = None if err is None else np.asarray(err)
    flags_in = None if dq is None else np.asarray(dq)
    value, error, flags, used = _run(
        cube, errors, flags_in, method=COMBINE_CODES[combine], sigma=sigma, maxiters=iterations,
        k_err=k_err, threads=threads,
    )  # fmt: skip
    result = Exposure(sci=value, err=error, dq=flags)
    result.header["NCOMBINE"] = (used, "fewest members combined at any pixel")
    return result
