"""Streaming sky matching: products of one mosaic group matched as they arrive."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daemon.app.parameters import sky_matcher_parameters
from daemon.app.settings import SkyMatchSettings
from daemon.errors import InvalidInput, Retriable
from daemon.events import SkyMatchEvent, SkyMatchMember
from daemon.fileio.fits_io import read_exposure, remove_stale_temporaries, write_json
from daemon.fileio.names import safe_file_name
from daemon.ops.metrics import Metrics
from daemon.skymatch.skylist import SkyList
from processors import Exposure
from processors.sky_matcher import SkyMatcher
from processors.skymatch import PairStats, SkyKeywords, SkyMatchResult
from processors.user_sky import UserSkyMatcher

__all__ = ["SKYMATCH_KEYWORDS", "SkyMatchGroups"]

log = logging.getLogger("skystream.skymatch")

#: Products already record their subtracted *background* as BKGLEVEL/BKGSUB/BKGMETH, so
#: the skymatch result goes under its own names (S_SKYMAT is JWST's).
SKYMATCH_KEYWORDS = SkyKeywords(level="SKYMLVL", subtracted="SKYMSUB", method="SKYMMETH")

InPool = Callable[..., Awaitable[Any]]
#: Receives a closed group's `SkyMatchEvent`.
OnClosed = Callable[[SkyMatchEvent], Awaitable[None]]
#: Receives a group's state record (None once it closed), to share it with other replicas.
OnState = Callable[[str, dict[str, Any] | None], Awaitable[None]]


@dataclass
class _Group:
    name: str
    matcher: SkyMatcher | UserSkyMatcher
    products: dict[str, str] = field(default_factory=dict)  # exposure id -> product path
    last_arrival: float = field(default_factory=time.time)
    revision: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SkyMatchGroups:
    """Open mosaic groups: match each arrival, publish provisional levels, close.

    Each arrival measures only the pairs it forms (cached statistics for the rest), then
    the group table ``<output>/skymatch/<group>.json`` is rewritten with the provisional
    levels. A group closes on its end marker, at ``max_members``, or after
    ``close_after_seconds`` without arrivals; its final table goes to ``on_closed`` (which
    writes what closing yields) before the table on disk says ``closed``. The products
    themselves are never rewritten (`daemon.skymatch.stage` writes new ones). Open groups
    (members and cached pair statistics) are saved in the state folder and rebuilt from
    the products at start.

    A group holds no product: its matcher keeps, per member, only what the pair
    statistics need (`processors.skymatch.SkyImage`: sampled usable pixels, the
    usable-pixel mask as bits, the WCS; about 3 MiB for a 4096² member).

    Parameters
    ----------
    settings : SkyMatchSettings
        Method, statistic and closing rules.
    output : Path
        Product folder (group tables go to ``skymatch/`` inside it).
    state : Path
        State folder (open groups go to ``skymatch/`` inside it).
    metrics : Metrics
        Skymatch metrics.
    in_pool : callable
        Runs blocking work in the service's worker pool.
    fsync : bool
        fsync written files.
    on_closed : callable, optional
        Awaited with the final `SkyMatchEvent` of each group (Kafka publication).
    on_state : callable, optional
        Awaited with each group's state record after every change (the state topic).
    """

    def __init__(
        self,
        settings: SkyMatchSettings,
        *,
        output: Path,
        state: Path,
        metrics: Metrics,
        in_pool: InPool,
        fsync: bool = True,
        on_closed: OnClosed | None = None,
        on_state: OnState | None = None,
    ) -> None:
        self._settings = settings
        self._tables = output / "skymatch"
        self._state = state / "skymatch"
        self._tables.mkdir(parents=True, exist_ok=True)
        self._state.mkdir(parents=True, exist_ok=True)
        self._metrics = metrics
        self._in_pool = in_pool
        self._fsync = fsync
        self._groups: dict[str, _Group] = {}
        self._on_closed = on_closed
        self._on_state = on_state
        #: ``skymethod: user``: the levels (raises ConfigError for a missing or bad list).
        self._skylist = (
            SkyList(settings.skylist)
            if settings.skymethod == "user" and settings.skylist is not None
            else None
        )

    def _matcher(self) -> SkyMatcher | UserSkyMatcher:
        if self._skylist is not None:
            return UserSkyMatcher(subtract=self._settings.subtract, keywords=SKYMATCH_KEYWORDS)
        return SkyMatcher(**sky_matcher_parameters(self._settings), keywords=SKYMATCH_KEYWORDS)

    def _solve(self, state: _Group, closing: bool) -> SkyMatchResult:
        """The group's levels; with a sky list, its current levels (blocking)."""
        matcher = state.matcher
        if isinstance(matcher, UserSkyMatcher) and self._skylist is not None:
            matcher.levels = self._skylist.levels()
            for image_id in matcher.missing() if closing else ():
                log.warning("skymatch group %s: %s is not in the sky list %s: SKIPPED",
                            state.name, image_id, self._settings.skylist)  # fmt: skip
        return matcher.solve()

    def has(self, group: str, exposure_id: str) -> bool:
        """Whether ``exposure_id`` is already a member of the open group ``group``."""
        state = self._groups.get(group)
        return state is not None and exposure_id in state.products

    def forget(self, group: str) -> None:
        """Drop an open group without closing it: another replica continues it (blocking)."""
        self._groups.pop(group, None)
        (self._state / f"{safe_file_name(group)}.json").unlink(missing_ok=True)
        self._metrics.skymatch_groups_open.set(len(self._groups))

    # -- arrivals ------------------------------------------------------------------------

    async def add(
        self, group: str, exposure_id: str, product_path: str, product: Exposure, last: bool
    ) -> None:
        """Match a new product into its group; close the group when the rules say so."""
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _Group(group, self._matcher())
        async with state.lock:
            start = time.perf_counter()
            try:
                await self._in_pool(state.matcher.add, exposure_id, product)
            except ValueError as exc:
                log.warning("skymatch group %s: %s not matched (%s)", group, exposure_id, exc)
                return
            state.products[exposure_id] = product_path
            state.last_arrival = time.time()
            result = await self._in_pool(self._solve, state, False)
            state.revision += 1
            await self._in_pool(self._publish, state, result, False)
            record = await self._in_pool(self._save, state)
            if self._on_state is not None:
                await self._on_state(state.name, record)
            self._metrics.stage_seconds.labels("skymatch").observe(time.perf_counter() - start)
            self._metrics.skymatch_groups_open.set(len(self._groups))
            rms = state.matcher.residual_rms(result)
            if rms is not None:
                self._metrics.skymatch_residual.set(rms)
        if last or len(state.products) >= self._settings.max_members:
            await self.close(group, "end marker" if last else "member limit")

    async def close_idle(self, now: float | None = None) -> list[str]:
        """Close groups without arrivals for ``close_after_seconds``; return their names."""
        now = time.time() if now is None else now
        idle = [
            name
            for name, g in self._groups.items()
            if now - g.last_arrival >= self._settings.close_after_seconds
        ]
        for name in idle:
            await self.close(name, "idle timeout")
        return idle

    async def close(self, group: str, reason: str) -> None:
        """Publish the group's final levels, then forget it."""
        state = self._groups.get(group)
        if state is None:
            return
        async with state.lock:
            result = await self._in_pool(self._solve, state, True)
            state.revision += 1
            table = self._table(state, result, closed=True)
            # What closing yields (matched products) first: a table that says "closed"
            # means everything of the group is written.
            if self._on_closed is not None:
                await self._on_closed(table)
            await self._in_pool(self._write_table, table)
            (self._state / f"{safe_file_name(group)}.json").unlink(missing_ok=True)
            if self._on_state is not None:
                await self._on_state(group, None)
            self._groups.pop(group, None)
        self._metrics.skymatch_groups_open.set(len(self._groups))
        self._metrics.skymatch_group_images.observe(len(state.products))
        log.info("skymatch group %s closed (%s): %d image(s)", group, reason,
                 len(state.products))  # fmt: skip

    # -- files (worker threads) ----------------------------------------------------------

    @staticmethod
    def _table(state: _Group, result: SkyMatchResult, *, closed: bool) -> SkyMatchEvent:
        members = [
            SkyMatchMember(exposure_id=image_id, product=state.products.get(image_id),
                           level=level, valid=ok)
            for image_id, level, ok in zip(state.matcher.members, result.levels, result.valid,
                                           strict=True)
        ]  # fmt: skip
        return SkyMatchEvent(
            group=state.name, revision=state.revision, closed=closed, method=result.method,
            subtract=result.subtract, members=members,
        )  # fmt: skip

    def _write_table(self, table: SkyMatchEvent) -> None:
        write_json(
            table.model_dump(mode="json", by_alias=True),
            self._tables / f"{safe_file_name(table.group)}.json",
            fsync=self._fsync,
        )

    def _publish(self, state: _Group, result: SkyMatchResult, closed: bool) -> SkyMatchEvent:
        table = self._table(state, result, closed=closed)
        self._write_table(table)
        return table

    def _save(self, state: _Group) -> dict[str, Any]:
        pairs = [{"a": a, "b": b, **asdict(p)} for (a, b), p in state.matcher.pairs.items()]
        record = {
            "group": state.name, "products": state.products, "pairs": pairs,
            "members": {m: str(g.group) for m, g in state.matcher.members.items()},
            "last_arrival": state.last_arrival, "revision": state.revision,
        }  # fmt: skip
        write_json(record, self._state / f"{safe_file_name(state.name)}.json", fsync=self._fsync)
        return record

    def restore(self) -> list[str]:
        """Rebuild the open groups from their saved state and products (blocking)."""
        problems = []
        remove_stale_temporaries(self._state)  # left by a write that a crash interrupted
        for path in sorted(self._state.glob("*.json")):
            problems += self._rebuild(json.loads(path.read_text()))
        for problem in problems:
            log.warning(problem)
        self._metrics.skymatch_groups_open.set(len(self._groups))
        return problems

    def adopt(self, record: dict[str, Any]) -> list[str]:
        """Take over a group another replica published, unless a newer revision is here.

        Blocking (reads the member products); call before processing the partition.
        """
        held = self._groups.get(record["group"])
        if held is not None and held.revision >= record["revision"]:
            return []
        problems = self._rebuild(record)
        for problem in problems:
            log.warning(problem)
        self._metrics.skymatch_groups_open.set(len(self._groups))
        log.info("skymatch group %s taken over: %d image(s)", record["group"],
                 len(record["products"]))  # fmt: skip
        return problems

    def _rebuild(self, saved: dict[str, Any]) -> list[str]:
        problems = []
        state = _Group(saved["group"], self._matcher())
        pairs = {
            (p["a"], p["b"]): PairStats(p["sky_a"], p["npix_a"], p["sky_b"], p["npix_b"])
            for p in saved["pairs"]
        }
        for image_id, product in saved["products"].items():
            try:
                state.matcher.add(
                    image_id,
                    read_exposure(Path(product)),
                    group=saved["members"].get(image_id),
                    pairs=pairs,
                )
                state.products[image_id] = product
            except (ValueError, OSError, InvalidInput, Retriable) as exc:
                problems.append(f"skymatch group {state.name}: {image_id} dropped ({exc})")
        state.last_arrival = saved["last_arrival"]
        state.revision = saved["revision"]
        if state.products:
            self._groups[state.name] = state
        return problems
