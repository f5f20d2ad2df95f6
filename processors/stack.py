"""A rolling stack of background frames, combined when its membership changed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.combine import COMBINES, Combine, collapse_integrations
from processors.engines._bands import bands, map_bands
from processors.engines._combine_kernel import (
    COMBINE_CODES,
    LANES,
    combine_pixels,
    sorting_network,
)
from processors.exposure import Exposure

__all__ = ["RollingStack"]

#: A member's DQ: None when all zero, (flat indices, values) when sparse, else the plane.
_Flags = tuple[np.ndarray, np.ndarray] | np.ndarray | None
_SPARSE_SHARE = 8  # a DQ plane with fewer than 1/8 of its pixels flagged is kept sparse


@dataclass(frozen=True)
class _Member:
    slot: int
    obs_time: float
    has_err: bool
    dq: _Flags


def _flags(dq: np.ndarray) -> _Flags:
    flat = np.ascontiguousarray(dq, dtype=np.uint32).reshape(-1)
    where = np.flatnonzero(flat)
    if where.size == 0:
        return None
    if where.size * _SPARSE_SHARE < flat.size:
        return where.astype(np.int32 if flat.size < 2**31 else np.int64), flat[where]
    return flat.copy()


class RollingStack:
    """Bounded stack of background frames of one stack key, combined on demand.

    Members live in preallocated ring planes (SCI and ERR), so adding or expiring a member
    writes one plane and never rereads files; `combined` runs the compiled per-pixel
    combine over the occupied planes, on ``threads`` threads, only when the membership
    changed since the last call. Each pixel's members are sorted before they are
    combined, so the result is a function of the members alone: bit-identical to
    `processors.combine_backgrounds` of the same frames, whatever the order in which
    they came and went. DQ is kept per member as its flagged pixels only, and no DQ is
    combined at all while no member has a flag. 3-D members are averaged over their
    integrations on arrival (JWST rateints rule). If any member's ERR is unknown, the
    combined ERR is unknown too (never zeros).

    Not thread-safe by itself: one owner (the daemon's lane for this key) mutates it.

    Parameters
    ----------
    shape : (int, int)
        Image shape of every member.
    max_members : int
        Capacity; adding to a full stack evicts the member with the oldest ``obs_time``.
    max_age : float, optional
        Members older than this (same units as ``obs_time``, e.g. seconds) are dropped
        by `expire`.
    combine, sigma, maxiters, k_err
        As in `processors.combine_backgrounds`.
    threads : int, optional
        Threads sharing one combination (bands of pixels).

    Examples
    --------
    >>> import numpy as np
    >>> from processors import Exposure
    >>> stack = RollingStack((2, 2), max_members=3)
    >>> for i, level in enumerate([1.0, 1.0, 4.0]):
    ...     _ = stack.add(f"b{i}", Exposure(np.full((2, 2), level)), obs_time=float(i))
    >>> float(stack.combined().sci[0, 0])
    2.0
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        max_members: int,
        max_age: float | None = None,
        combine: Combine = "jwst",
        sigma: float = 3.0,
        maxiters: int | None = None,
        k_err: float = 3.0,
        threads: int = 2,
    ) -> None:
        if max_members < 1:
            raise ValueError(f"max_members must be >= 1, got {max_members}")
        if combine not in COMBINE_CODES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.max_members = max_members
        self.max_age = max_age
        self.combine = combine
        self.sigma = sigma
        self.maxiters = maxiters
        self.k_err = k_err
        self.threads = threads
        pixels = self.shape[0] * self.shape[1]
        self._sci = np.full((max_members, pixels), np.nan, dtype=np.float32)
        self._err = np.zeros((max_members, pixels), dtype=np.float32)
        self._members: dict[str, _Member] = {}
        self._cache: Exposure | None = None

    @property
    def nbytes(self) -> int:
        """Memory held by the member planes and the members' flagged pixels."""
        flags = 0
        for member in self._members.values():
            if isinstance(member.dq, tuple):
                flags += member.dq[0].nbytes + member.dq[1].nbytes
            elif member.dq is not None:
                flags += member.dq.nbytes
        return int(self._sci.nbytes + self._err.nbytes + flags)

    @property
    def depth(self) -> int:
        """Number of members."""
        return len(self._members)

    @property
    def member_ids(self) -> list[str]:
        """Member ids, oldest first (ties by id, so the order never depends on arrival)."""
        return sorted(self._members, key=lambda m: (self._members[m].obs_time, m))

    def obs_time(self, member_id: str) -> float:
        """Observation time of a member."""
        return self._members[member_id].obs_time

    def add(self, member_id: str, exposure: Exposure, obs_time: float) -> list[str]:
        """Add (or replace) a member; return the ids evicted to make room.

        Raises
        ------
        ValueError
            If the member's image shape differs from the stack's.
        """
        if exposure.image_shape != self.shape:
            raise ValueError(
                f"background {member_id} has image shape {exposure.image_shape}, the stack "
                f"holds {self.shape}"
            )
        frame = exposure
        if exposure.is_cube:
            frame = collapse_integrations(
                exposure.sci, exposure.err, exposure.dq, sigma=self.sigma,
                maxiters=self.maxiters,
            )  # fmt: skip
        evicted = []
        if member_id in self._members:
            slot = self._members.pop(member_id).slot
        elif len(self._members) < self.max_members:
            used = {m.slot for m in self._members.values()}
            slot = next(s for s in range(self.max_members) if s not in used)
        else:
            oldest = self.member_ids[0]
            evicted.append(oldest)
            slot = self._members.pop(oldest).slot
        self._sci[slot] = frame.sci.reshape(-1)
        if frame.err is not None:
            self._err[slot] = frame.err.reshape(-1)
        self._members[member_id] = _Member(
            slot, float(obs_time), frame.err is not None, _flags(frame.dq)
        )
        self._cache = None
        return evicted

    def remove(self, member_id: str) -> None:
        """Drop a member (its planes are simply no longer read)."""
        if self._members.pop(member_id, None) is not None:
            self._cache = None

    def expire(self, now: float) -> list[str]:
        """Drop members older than ``max_age`` at time ``now``; return their ids."""
        if self.max_age is None:
            return []
        old = [m for m, info in self._members.items() if now - info.obs_time > self.max_age]
        for member_id in old:
            self.remove(member_id)
        return old

    def combined(self) -> Exposure:
        """The combined background of the current members (cached until they change).

        Raises
        ------
        ValueError
            If the stack is empty.
        """
        if not self._members:
            raise ValueError("the stack is empty")
        if self._cache is not None:
            return self._cache
        err_known = all(m.has_err for m in self._members.values())
        if self.combine == "error-clip" and not err_known:
            raise ValueError("combine='error-clip' needs ERR for every member")
        pixels = self._sci.shape[1]
        # Members in observation order, not ring order: the ring slots depend on the history
        # of arrivals and evictions (a restart rebuilds them differently), and errors are
        # summed in this order.
        slots = np.array([self._members[m].slot for m in self.member_ids], dtype=np.int64)
        network = sorting_network(slots.size)
        errors = self._err if err_known else np.empty((0, pixels), np.float32)
        out = np.empty(pixels, np.float32)
        out_err = np.empty(pixels if err_known else 0, np.float32)
        iterations = 1_000_000 if self.maxiters is None else int(self.maxiters)
        method = COMBINE_CODES[self.combine]

        def run(first: int, last: int) -> int:
            fewest = combine_pixels(self._sci, errors, slots, network, method, self.sigma,
                                    self.sigma, iterations, self.k_err, out, out_err, first,
                                    last, LANES)  # fmt: skip
            return int(fewest)

        fewest = min(map_bands(run, bands(-(-pixels // LANES), self.threads)))
        result = Exposure(
            sci=out.reshape(self.shape),
            err=out_err.reshape(self.shape) if err_known else None,
            dq=self._combined_flags(),
        )
        result.header["NCOMBINE"] = (fewest, "fewest members combined at any pixel")
        self._cache = result
        return result

    def _combined_flags(self) -> np.ndarray:
        """OR of every member's DQ (all members, clipped ones too, as in JWST).

        While no member has a flag, a read-only view of zeros: nothing is combined.
        """
        if all(member.dq is None for member in self._members.values()):
            return np.broadcast_to(np.uint32(0), self.shape)
        flags = np.zeros(self._sci.shape[1], np.uint32)
        for member in self._members.values():
            if isinstance(member.dq, tuple):
                where, values = member.dq
                flags[where] |= values
            elif member.dq is not None:
                flags |= member.dq
        return flags.reshape(self.shape)
