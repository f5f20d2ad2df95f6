"""The sky list of ``skymatch.skymethod: user``: a level per exposure, from a text file.

Format (as JWST skymatch's ``skylist``): one exposure per line, two columns separated by
white space, the exposure id (in folder mode the input file's stem; a ``.fits``, ``.fit``
or ``.fts`` suffix is dropped, so a file name works too) and its sky level in the product's
units. ``#`` starts a comment; blank lines are ignored::

    # exposure      level [DN/s]
    night_0001      301.25
    night_0002.fits 298.70   # taken from the log

The file is read again whenever its size or modification time changes, so levels can be
added during the night; an edit that does not parse keeps the previous levels (logged).
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

from daemon.app.settings import ConfigError

__all__ = ["SkyList", "parse_skylist"]

log = logging.getLogger("skystream.skymatch")
_SUFFIXES = (".fits", ".fit", ".fts")


def _exposure_id(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_skylist(text: str) -> dict[str, float]:
    r"""The levels of a sky list, by exposure id.

    Raises
    ------
    ValueError
        Naming the line: not two columns, a level that is not a finite number, or an
        exposure listed twice.

    Examples
    --------
    >>> parse_skylist("# id level\na.fits 1.5\n\nb 2  # note\n")
    {'a': 1.5, 'b': 2.0}
    """
    levels: dict[str, float] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"line {number}: expected 'exposure level', got {line.strip()!r}")
        try:
            level = float(fields[1])
        except ValueError:
            level = math.nan
        if not math.isfinite(level):
            raise ValueError(f"line {number}: the level {fields[1]!r} is not a finite number")
        exposure_id = _exposure_id(fields[0])
        if exposure_id in levels:
            raise ValueError(f"line {number}: {exposure_id} is listed twice")
        levels[exposure_id] = level
    return levels


class SkyList:
    """The current levels of a sky-list file; safe to call from worker threads.

    Parameters
    ----------
    path : Path
        The sky list.

    Raises
    ------
    ConfigError
        If the file cannot be read or parsed at start (a wrong list must not skip a night).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._levels: dict[str, float] = {}
        try:
            self._read()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"skymatch.skylist: {path}: {exc}") from None

    def _read(self) -> None:
        info = self._path.stat()
        stamp = (info.st_size, info.st_mtime_ns)
        if stamp == self._stamp:
            return
        self._stamp = stamp  # a version that does not parse is reported once
        self._levels = parse_skylist(self._path.read_text())
        log.info("skymatch sky list %s: %d level(s)", self._path, len(self._levels))

    def levels(self) -> dict[str, float]:
        """The levels by exposure id, re-read if the file changed (blocking)."""
        with self._lock:
            try:
                self._read()
            except (OSError, ValueError) as exc:
                log.warning("skymatch sky list %s not re-read (%s): previous levels kept",
                            self._path, exc)  # fmt: skip
            return dict(self._levels)
