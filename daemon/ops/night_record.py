"""What the live page shows of the night: the latest products and the sky level per key.

Fed on the event loop by the pipeline (each product) and the quicklook worker (each
picture); bounded in every direction (latest products, points per key, keys). At start it
is filled again from the newest product sidecars, so a restart keeps the night's trend.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from daemon.events import ProductEvent

__all__ = ["NightRecord", "ProductEntry", "SkyPoint"]

log = logging.getLogger("skystream.night")


@dataclass(frozen=True)
class SkyPoint:
    """One product's sky: when (Unix seconds), level and RMS."""

    time: float
    level: float
    rms: float | None


@dataclass
class ProductEntry:
    """A recent product and its quicklook, once rendered."""

    serial: int
    event: ProductEvent
    quicklook: Path | None = None
    thumbnail: bytes | None = None


class NightRecord:
    """The recent products and the per-stack-key sky trend, in memory.

    Parameters
    ----------
    latest : int
        Products listed (newest first).
    points_per_key : int
        Sky points kept per stack key (the oldest leave).
    max_keys : int
        Stack keys kept; the one silent longest leaves for a new one.
    """

    def __init__(self, *, latest: int = 12, points_per_key: int = 2000, max_keys: int = 32):
        self._latest: deque[ProductEntry] = deque(maxlen=latest)
        self._points_per_key = points_per_key
        self._max_keys = max_keys
        self._history: OrderedDict[str, deque[SkyPoint]] = OrderedDict()
        self._serial = 0

    def add_product(self, event: ProductEvent, quicklook: Path | None = None) -> None:
        """Record a finished product (a FAILED event is not a product and is ignored)."""
        if event.status == "FAILED":
            return
        self._serial += 1
        self._latest.appendleft(ProductEntry(self._serial, event, quicklook))
        if event.background_level is None:
            return
        key = event.stack_key or "(no key)"
        points = self._history.pop(key, None)
        if points is None:
            points = deque(maxlen=self._points_per_key)
            while len(self._history) >= self._max_keys:
                self._history.popitem(last=False)
        points.append(
            SkyPoint(event.produced_at.timestamp(), event.background_level, event.background_rms)
        )
        self._history[key] = points  # most recently seen last

    def add_quicklook(self, exposure_id: str, path: Path, thumbnail: bytes) -> None:
        """Attach a rendered quicklook to its product, if it is still listed."""
        entry = next((e for e in self._latest if e.event.exposure_id == exposure_id), None)
        if entry is not None:
            entry.quicklook = path
            entry.thumbnail = thumbnail

    def latest(self) -> list[ProductEntry]:
        """The listed products, newest first."""
        return list(self._latest)

    def entry(self, serial: int) -> ProductEntry | None:
        """A listed product by its serial number."""
        return next((e for e in self._latest if e.serial == serial), None)

    def history(self) -> dict[str, list[SkyPoint]]:
        """Sky points per stack key, oldest first."""
        return {key: list(points) for key, points in self._history.items()}

    def restore(self, folder: Path, suffix: str, limit: int = 2000) -> int:
        """Fill the record from the newest ``limit`` product sidecars (blocking).

        Returns the number of products restored; unreadable sidecars are skipped.
        """
        try:
            with os.scandir(folder) as entries:
                sidecars = [
                    (entry.stat().st_mtime, entry.path)
                    for entry in entries
                    if entry.name.endswith(f"{suffix}.json") and entry.is_file()
                ]
        except OSError as exc:
            log.warning("the night's products cannot be listed: %s", exc)
            return 0
        events = []
        for _, path in heapq.nlargest(limit, sidecars):
            try:
                events.append(ProductEvent.model_validate(json.loads(Path(path).read_bytes())))
            except (OSError, ValueError, ValidationError):
                continue
        for event in sorted(events, key=lambda e: e.produced_at):
            picture = event.product_path.with_suffix(".png")
            self.add_product(event, picture if picture.is_file() else None)
        return len(events)
