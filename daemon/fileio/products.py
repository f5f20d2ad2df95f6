"""Product files: ``<stem><suffix>.fits`` plus a JSON sidecar, written atomically."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from daemon.app.settings import OutputSettings
from daemon.errors import InvalidInput
from daemon.events import ExposureEvent, ProductEvent, path_of, uri_of
from daemon.fileio.fits_io import remove_stale_temporaries, write_exposure, write_json
from daemon.fileio.names import MAX_NAME_BYTES, bounded_name
from daemon.fileio.saved_background import Extension
from processors import Exposure

__all__ = ["DirectorySink"]

_COMBINED_TAIL = "_combinedbackground.fits"


def _read_sidecar(path: Path) -> ProductEvent | None:
    """The summary a sidecar holds, or None if there is no readable one."""
    try:
        return ProductEvent.model_validate(json.loads(path.read_bytes()))
    except (OSError, ValueError, ValidationError):
        return None


class DirectorySink:
    """Writes products into the output folder.

    The product is renamed into place before its sidecar, and both before the input is
    acknowledged, so a crash leaves either nothing or a complete product (rewritten
    identically when the input is processed again). Product names are bounded
    (`daemon.fileio.names.bounded_name`), and a product is never overwritten by the
    product of another input: its sidecar names the input it was made from.

    Parameters
    ----------
    settings : OutputSettings
        Folder, suffix, sidecar and fsync choices.
    """

    def __init__(self, settings: OutputSettings) -> None:
        self._settings = settings
        self.folder = settings.directory
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.folder)
        self._lock = threading.Lock()
        self._writing: dict[Path, str] = {}  # product being written -> its input

    def _path(self, exposure_id: str, tail: str) -> Path:
        return self.folder / (bounded_name(exposure_id, MAX_NAME_BYTES - len(tail)) + tail)

    def product_path(self, exposure_id: str) -> Path:
        """Where the product of an exposure goes."""
        return self._path(exposure_id, f"{self._settings.suffix}.fits")

    def combined_background_path(self, exposure_id: str) -> Path:
        """Where the combined background used for an exposure is saved, if asked."""
        return self._path(exposure_id, _COMBINED_TAIL)

    def check_name(self, exposure_id: str, input_uri: str) -> None:
        """Refuse an input whose product name is taken by the product of another input.

        Two inputs can map to one product (``x.fits`` and ``x.fit``; two events with one
        exposure id): the first keeps it, the second is refused.

        Raises
        ------
        InvalidInput
            ``name_collision``, naming the input that owns the product.
        """
        path = self.product_path(exposure_id)
        with self._lock:
            owner = self._writing.get(path)
        if owner in (None, input_uri):
            existing = _read_sidecar(path.with_suffix(".json"))
            owner = existing.input_uri if existing is not None else None
        if owner is not None and owner != input_uri:
            raise InvalidInput(
                "name_collision",
                f"{Path(input_uri).name}: its product {path.name} belongs to {owner}",
            )

    def write(
        self, product: Exposure, summary: ProductEvent, extensions: Sequence[Extension] = ()
    ) -> ProductEvent:
        """Write the product and its sidecar (blocking; call from a worker thread).

        Returns the summary with the product's write time added to its timings and the
        input's size and modification time: exactly what the sidecar holds and what is
        published. ``extensions`` follow DQ in the product (a saved background).

        Raises
        ------
        InvalidInput
            ``name_collision`` if the product name belongs to another input.
        """
        path = summary.product_path
        with self._lock:
            if self._writing.get(path, summary.input_uri) != summary.input_uri:
                raise InvalidInput(
                    "name_collision",
                    f"{Path(summary.input_uri).name}: its product {path.name} is being "
                    f"written for {self._writing[path]}",
                )
            self._writing[path] = summary.input_uri
        try:
            self.check_name(summary.exposure_id, summary.input_uri)
            return self._write(product, path, summary, extensions)
        finally:
            with self._lock:
                self._writing.pop(path, None)

    def _write(
        self, product: Exposure, path: Path, summary: ProductEvent, extensions: Sequence[Extension]
    ) -> ProductEvent:
        start = time.perf_counter()
        write_exposure(product, path, fsync=self._settings.fsync, extensions=extensions)
        timings = dict(summary.timings)
        timings["write"] = round(timings.get("write", 0.0) + time.perf_counter() - start, 6)
        update: dict[str, object] = {"timings": timings}
        if summary.input_size is None:
            try:
                info = os.stat(path_of(summary.input_uri))
                update |= {"input_size": info.st_size, "input_mtime_ns": info.st_mtime_ns}
            except OSError:
                pass  # the input vanished meanwhile: the product stands, unrecognisable
        summary = summary.model_copy(update=update)
        if self._settings.sidecar:
            write_json(
                summary.model_dump(mode="json", by_alias=True),
                path.with_suffix(".json"),
                fsync=self._settings.fsync,
            )
        return summary

    def existing_summary(self, event: ExposureEvent) -> ProductEvent | None:
        """The summary of a product already made from this very input, if there is one.

        A product counts only if its sidecar names the same input: the same path with the
        same size and modification time (sidecars written before those were recorded:
        a sidecar newer than the input), so a new file under an old name is processed
        again.
        """
        sidecar = self.product_path(event.exposure_id).with_suffix(".json")
        summary = _read_sidecar(sidecar)
        if summary is None or summary.input_uri != uri_of(event.path):
            return None
        try:
            info = event.path.stat()
            if summary.input_size is not None:
                same = (summary.input_size, summary.input_mtime_ns) == (
                    info.st_size,
                    info.st_mtime_ns,
                )
            else:
                same = sidecar.stat().st_mtime >= info.st_mtime
        except OSError:
            return None
        if not same or not summary.product_path.exists():
            return None
        return summary
