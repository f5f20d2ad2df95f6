"""Reference (master) backgrounds: which file an exposure gets, read once per version.

``background.reference.path`` names the one reference of every exposure;
``background.reference.folder`` holds several, and an exposure gets the one whose
``match_keys`` header values equal its own (as a calibration database selects a reference
by instrument, detector and filter). Headers and pixels are cached by path, size and
modification time, so a reference replaced in place is read again and an unchanged one is
never read twice (the last few used are kept in memory).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from astropy.io.fits import Header

from daemon.app.settings import ConfigError, ReferenceSettings
from daemon.errors import InvalidInput, Retriable
from daemon.fileio.fits_io import read_exposure, read_primary_header
from processors import Exposure

__all__ = ["Reference", "ReferenceBackgrounds"]

log = logging.getLogger("skystream.references")
#: File names in a reference folder that may be references (hidden files never are).
_SUFFIXES = (".fits", ".fit", ".fts")
#: A file's version: size and modification time (ns).
Stamp = tuple[int, int]


@dataclass(frozen=True, eq=False)
class Reference:
    """A reference background and the file it was read from."""

    path: Path
    exposure: Exposure


def _stamp(path: Path) -> Stamp:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def _value(header: Header, key: str) -> str | None:
    """A header value as compared between exposure and reference (case-insensitive)."""
    value = header.get(key)
    return None if value is None else str(value).strip().upper()


class ReferenceBackgrounds:
    """Chooses the reference background of each exposure; safe to call from worker threads.

    Parameters
    ----------
    settings : ReferenceSettings
        ``path`` or ``folder`` (absolute), and ``match_keys``.
    max_bytes : int
        Largest file read (``input.max_exposure_bytes``).
    keep : int, optional
        References kept in memory (least recently used leave first).

    Raises
    ------
    ConfigError
        If neither ``path`` nor ``folder`` is given, or ``path`` is not a file or
        ``folder`` not a folder at start (a misspelt path must not quarantine a night).
    """

    def __init__(self, settings: ReferenceSettings, *, max_bytes: int, keep: int = 4) -> None:
        if settings.path is not None and not settings.path.is_file():
            raise ConfigError(f"background.reference.path: {settings.path} is not a file")
        if settings.folder is not None and not settings.folder.is_dir():
            raise ConfigError(f"background.reference.folder: {settings.folder} is not a folder")
        if settings.path is None and settings.folder is None:
            raise ConfigError("background.reference: give path or folder")
        self._settings = settings
        self._max_bytes = max_bytes
        self._keep = keep
        self._lock = threading.Lock()
        self._headers: dict[Path, tuple[Stamp, Header]] = {}
        self._pixels: OrderedDict[Path, tuple[Stamp, Exposure]] = OrderedDict()

    def choose(self, header: Header) -> Reference:
        """The reference background of the exposure with ``header``.

        Raises
        ------
        InvalidInput
            ``reference_missing`` when the file is gone or unreadable, or no file of the
            folder matches; ``reference_ambiguous`` when several do.
        """
        folder = self._settings.folder
        path = self._match(header, folder) if folder is not None else self._settings.path
        if path is None:  # pragma: no cover - the constructor refuses neither
            raise ConfigError("background.reference: give path or folder")
        return Reference(path, self._read(path))

    # -- folder ---------------------------------------------------------------------------

    @staticmethod
    def _candidates(folder: Path) -> list[Path]:
        try:
            names = sorted(os.listdir(folder))
        except OSError as exc:
            raise InvalidInput(
                "reference_missing", f"reference folder {folder}: {exc.strerror or exc}"
            ) from exc
        return [
            folder / name
            for name in names
            if not name.startswith(".") and name.lower().endswith(_SUFFIXES)
        ]

    def _header(self, path: Path) -> Header | None:
        """The file's header (cached per version); None when it is not a readable FITS."""
        try:
            stamp = _stamp(path)
            with self._lock:
                known = self._headers.get(path)
            if known is not None and known[0] == stamp:
                return known[1]
            header = read_primary_header(path, max_bytes=self._max_bytes)
        except (OSError, InvalidInput, Retriable) as exc:
            log.warning("reference folder: %s skipped (%s)", path.name, exc)
            return None
        with self._lock:
            self._headers[path] = (stamp, header)
        return header

    def _match(self, header: Header, folder: Path) -> Path:
        keys = self._settings.match_keys
        wanted = {key: _value(header, key) for key in keys}
        absent = [key for key, value in wanted.items() if value is None]
        if absent:
            raise InvalidInput(
                "reference_missing",
                f"the exposure has no {', '.join(absent)}: no reference background matches",
            )
        candidates = self._candidates(folder)
        with self._lock:  # files gone from the folder leave the cache
            for gone in set(self._headers) - set(candidates):
                del self._headers[gone]
        matches = []
        for path in candidates:
            found = self._header(path)
            if found is not None and all(_value(found, k) == v for k, v in wanted.items()):
                matches.append(path)
        described = ", ".join(f"{key}={value}" for key, value in wanted.items())
        if not matches:
            raise InvalidInput(
                "reference_missing",
                f"no reference background in {folder} has {described}",
            )
        if len(matches) > 1:
            raise InvalidInput(
                "reference_ambiguous",
                f"{len(matches)} reference backgrounds have {described}: "
                f"{', '.join(p.name for p in matches)}",
            )
        return matches[0]

    # -- pixels ---------------------------------------------------------------------------

    def _read(self, path: Path) -> Exposure:
        """The reference's pixels, read again only when its size or mtime changed."""
        try:
            stamp = _stamp(path)
        except OSError as exc:
            raise InvalidInput(
                "reference_missing", f"reference background {path}: {exc.strerror or exc}"
            ) from exc
        with self._lock:
            known = self._pixels.get(path)
            if known is not None and known[0] == stamp:
                self._pixels.move_to_end(path)
                return known[1]
        try:
            exposure = read_exposure(path, allow_cubes=False, max_bytes=self._max_bytes)
        except (InvalidInput, Retriable) as exc:
            raise InvalidInput(
                "reference_missing", f"reference background {path} is unusable: {exc}"
            ) from exc
        except OSError as exc:
            raise InvalidInput(
                "reference_missing", f"reference background {path}: {exc.strerror or exc}"
            ) from exc
        log.info("reference background %s read (%d x %d)", path.name, *exposure.shape)
        with self._lock:
            self._pixels[path] = (stamp, exposure)
            self._pixels.move_to_end(path)
            while len(self._pixels) > self._keep:
                self._pixels.popitem(last=False)
        return exposure
