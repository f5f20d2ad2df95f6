"""Product files: ``<stem><suffix>.fits`` plus a JSON sidecar, written atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import ValidationError

from daemon.app.settings import OutputSettings
from daemon.events import ExposureEvent, ProductEvent
from daemon.fileio.fits_io import remove_stale_temporaries, write_exposure, write_json
from processors import Exposure

__all__ = ["DirectorySink"]


class DirectorySink:
    """Writes products into the output folder.

    The product is renamed into place before its sidecar, and both before the input is
    acknowledged, so a crash leaves either nothing or a complete product (rewritten
    identically when the input is processed again).

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

    def product_path(self, exposure_id: str) -> Path:
        """Where the product of an exposure goes."""
        return self.folder / f"{exposure_id}{self._settings.suffix}.fits"

    def combined_background_path(self, exposure_id: str) -> Path:
        """Where the combined background used for an exposure is saved, if asked."""
        return self.folder / f"{exposure_id}_combinedbackground.fits"

    def write(self, product: Exposure, summary: ProductEvent) -> ProductEvent:
        """Write the product and its sidecar (blocking; call from a worker thread).

        Returns the summary with the product's write time added to its timings: exactly
        what the sidecar holds and what is published.
        """
        path = Path(summary.product_uri)
        start = time.perf_counter()
        write_exposure(product, path, fsync=self._settings.fsync)
        timings = dict(summary.timings)
        timings["write"] = round(timings.get("write", 0.0) + time.perf_counter() - start, 6)
        summary = summary.model_copy(update={"timings": timings})
        if self._settings.sidecar:
            write_json(
                summary.model_dump(mode="json", by_alias=True),
                path.with_suffix(".json"),
                fsync=self._settings.fsync,
            )
        return summary

    def existing_summary(self, event: ExposureEvent) -> ProductEvent | None:
        """The summary of a product already made from this very input, if there is one.

        A product counts only if its sidecar names the same input and is newer than the
        input file (a new file under an old name is processed again).
        """
        sidecar = self.product_path(event.exposure_id).with_suffix(".json")
        try:
            summary = ProductEvent.model_validate(json.loads(sidecar.read_bytes()))
            fresh = sidecar.stat().st_mtime >= event.path.stat().st_mtime
        except (OSError, ValueError, ValidationError):
            return None
        if summary.input_uri != str(event.path) or not fresh:
            return None
        if not Path(summary.product_uri).exists():
            return None
        return summary
