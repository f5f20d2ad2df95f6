"""Sky levels given per image (JWST skymatch ``skymethod='user'`` with a ``skylist``).

`UserSkyMatcher` has the interface of `processors.sky_matcher.SkyMatcher` (``members``,
``pairs``, ``add``, ``solve``, ``residual_rms``) so a streaming mosaic group can use either:
nothing is measured, no WCS or overlap is needed, and an image gets the level listed for
its id. The levels are data handed in by the caller (the daemon reads the list).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from processors.exposure import Exposure
from processors.skymatch import (
    JWST_KEYWORDS,
    PairStats,
    SkyKeywords,
    SkyMatchResult,
    initial_sky,
    record_sky,
)

__all__ = ["UserSkyMatcher", "record_sky_level"]


def record_sky_level(
    exposure: Exposure,
    level: float,
    *,
    skymethod: str,
    subtract: bool,
    keywords: SkyKeywords = JWST_KEYWORDS,
) -> Exposure:
    """A new exposure with its total sky ``level`` recorded (and subtracted when asked).

    A level an earlier run already subtracted (``keywords.level`` with ``subtracted``) is
    taken into account, so only the difference is subtracted again.

    Raises
    ------
    ValueError
        For 3-D data, or when an earlier run recorded a different ``subtract``.

    Examples
    --------
    >>> import numpy as np
    >>> out = record_sky_level(Exposure(np.full((2, 2), 5.0)), 2.0, skymethod="user",
    ...                        subtract=True)
    >>> float(out.sci[0, 0]), out.header["BKGLEVEL"], out.header["S_SKYMAT"]
    (3.0, 2.0, 'COMPLETE')
    """
    initial = initial_sky(exposure, subtract=subtract, keywords=keywords)
    return record_sky(exposure, initial, level - initial, skymethod, subtract, keywords)


@dataclass
class _Member:
    group: object  # the image itself is not kept: a group holds no pixels


@dataclass
class UserSkyMatcher:
    """A mosaic group whose sky levels are listed, not measured.

    Attributes
    ----------
    levels : mapping of str to float
        The listed level of each image id; the caller may replace it between calls (a
        list edited during the night) and `solve` uses the current one.
    subtract : bool
        Subtract the levels from the pixels (else only record them).
    keywords : SkyKeywords
        Header keywords the level is recorded under.
    members : dict
        Images added, by id, in arrival order.
    pairs : dict
        Always empty: nothing is measured between images.
    """

    levels: Mapping[str, float] = field(default_factory=dict)
    subtract: bool = False
    keywords: SkyKeywords = JWST_KEYWORDS
    members: dict[str, _Member] = field(default_factory=dict)
    pairs: dict[tuple[object, object], PairStats] = field(default_factory=dict)

    def add(
        self,
        image_id: str,
        exposure: Exposure,
        *,
        group: object | None = None,
        pairs: dict[tuple[object, object], PairStats] | None = None,
    ) -> int:
        """Add an image; return the pairs measured (always 0).

        ``group`` and ``pairs`` are accepted for the interface of
        `processors.sky_matcher.SkyMatcher` and play no part.

        Raises
        ------
        ValueError
            For 3-D data, or an image recorded earlier with a different ``subtract``.
        """
        initial_sky(exposure, subtract=self.subtract, keywords=self.keywords)
        self.members[image_id] = _Member(image_id if group is None else group)
        return 0

    def missing(self) -> list[str]:
        """Ids of the images that have no listed level."""
        return [image_id for image_id in self.members if image_id not in self.levels]

    def solve(self) -> SkyMatchResult:
        """Each image's listed level (None and not valid where it is not listed).

        Levels only (``images`` is empty): the images are not kept; `record_sky_level`
        applies a level to an image.
        """
        levels = [self.levels.get(image_id) for image_id in self.members]
        levels = [None if level is None else float(level) for level in levels]
        valid = [level is not None for level in levels]
        return SkyMatchResult(levels, valid, "user", self.subtract, [])

    def residual_rms(self, result: SkyMatchResult) -> float | None:
        """None: listed levels are not fitted to anything."""
        return None
