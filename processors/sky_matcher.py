"""Incremental sky matching: each new image measures only the pairs it forms."""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.exposure import Exposure
from processors.skymatch import (
    JWST_KEYWORDS,
    PairStats,
    SkyImage,
    SkyKeywords,
    SkyMatchResult,
    local_sky,
    measure_pair,
    prepare_sky_image,
    solve_sky,
)
from processors.skystats import SkyStatistic

__all__ = ["SkyMatcher"]


@dataclass
class _Member:
    image: SkyImage
    group: object


@dataclass
class SkyMatcher:
    """A mosaic group matched as its images arrive.

    Pair statistics are cached per pair of sky groups, so adding an image costs the pairs
    it forms with the images already present (and its own local sky), never the whole
    group again; `solve` then re-solves the small least-squares system. After the last
    arrival the levels equal `processors.skymatch` run on all the images at once.

    An image is not kept: only what its pair statistics need (`SkyImage`: sampled usable
    pixels, the usable-pixel mask as bits, the WCS; about 3 MiB for a 4096² image), so a
    group of many large images stays small. The levels are applied to the images later,
    by whoever holds them (`processors.user_sky.record_sky_level`).

    Not thread-safe by itself: one owner adds and solves.
    """

    stat: SkyStatistic = field(default_factory=SkyStatistic)
    skymethod: str = "match"
    match_down: bool = True
    subtract: bool = False
    dqbits: int | str | None = "~DO_NOT_USE+NON_SCIENCE"
    keywords: SkyKeywords = JWST_KEYWORDS
    members: dict[str, _Member] = field(default_factory=dict)
    pairs: dict[tuple[object, object], PairStats] = field(default_factory=dict)
    local: dict[object, float | None] = field(default_factory=dict)

    def groups(self) -> list[object]:
        """Sky-group ids in arrival order."""
        return list(dict.fromkeys(m.group for m in self.members.values()))

    def _members_of(self, group: object) -> list[SkyImage]:
        return [m.image for m in self.members.values() if m.group == group]

    def add(
        self,
        image_id: str,
        exposure: Exposure,
        *,
        group: object | None = None,
        pairs: dict[tuple[object, object], PairStats] | None = None,
    ) -> int:
        """Add an image (its own sky group unless ``group`` is given); return pairs measured.

        ``pairs`` may carry statistics saved earlier (a restart), which are reused instead
        of measured again.

        Raises
        ------
        ValueError
            If the image cannot be matched at all (no WCS, 3-D, flipped subtract).
        """
        image = prepare_sky_image(
            exposure, dqbits=self.dqbits, subtract=self.subtract, keywords=self.keywords
        )
        gid = image_id if group is None else group
        self.members[image_id] = _Member(image, gid)
        known = pairs or {}
        order = self.groups()
        measured = 0
        # Only this group's pairs change: a new group forms new pairs, and a group that
        # gained a member has a new pixel set in each of its pairs.
        for other in order:
            if other == gid:
                continue
            key = (other, gid) if order.index(other) < order.index(gid) else (gid, other)
            if key in known:
                self.pairs[key] = known[key]
            else:
                self.pairs[key] = measure_pair(
                    self._members_of(key[0]), self._members_of(key[1]), self.stat
                )
                measured += 1
        if self.skymethod != "match":
            self.local[gid] = local_sky(self._members_of(gid), self.stat)
        return measured

    def residual_rms(self, result: SkyMatchResult) -> float | None:
        """Pixel-weighted RMS of ``(s_a - s_b) - (level_a - level_b)`` over measured pairs."""
        level: dict[object, float] = {}
        for member, value in zip(self.members.values(), result.levels, strict=True):
            if value is not None:
                level[member.group] = value - member.image.initial_sky
        total = weight = 0.0
        for (a, b), p in self.pairs.items():
            if p.sky_a is None or p.sky_b is None or a not in level or b not in level:
                continue
            w = 0.5 * (p.npix_a + p.npix_b)
            total += w * ((p.sky_a - p.sky_b) - (level[a] - level[b])) ** 2
            weight += w
        return float((total / weight) ** 0.5) if weight else None

    @property
    def nbytes(self) -> int:
        """Memory held for the members' images."""
        return sum(member.image.nbytes for member in self.members.values())

    def solve(self) -> SkyMatchResult:
        """Levels for every image from the cached statistics (cheap; call per arrival).

        The result carries levels only (``images`` is empty): the images are not here.
        """
        order = self.groups()
        index = {g: i for i, g in enumerate(order)}
        pairs = {(index[a], index[b]): p for (a, b), p in self.pairs.items()}
        local = [self.local.get(g) for g in order]
        increments, valid = solve_sky(
            len(order), pairs, local, skymethod=self.skymethod, match_down=self.match_down
        )
        levels: list[float | None] = []
        usable: list[bool] = []
        for member in self.members.values():
            increment = increments[index[member.group]]
            ok = valid[index[member.group]] and increment is not None
            levels.append(member.image.initial_sky + increment if ok else None)  # type: ignore[operator]
            usable.append(valid[index[member.group]])
        return SkyMatchResult(levels, usable, self.skymethod, self.subtract, [])
