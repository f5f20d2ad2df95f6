"""Product files: ``<stem><suffix>.fits`` plus a JSON sidecar, written atomically."""

from __future__ import annotations

from pathlib import Path

from daemon.events import ProductEvent
from daemon.fits_io import remove_stale_temporaries, write_exposure, write_json
from daemon.settings import OutputSettings
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

    def write(self, product: Exposure, summary: ProductEvent) -> Path:
        """Write the product and its sidecar (blocking; call from a worker thread)."""
        path = Path(summary.product_uri)
        write_exposure(product, path, fsync=self._settings.fsync)
        if self._settings.sidecar:
            write_json(
                summary.model_dump(mode="json", by_alias=True),
                path.with_suffix(".json"),
                fsync=self._settings.fsync,
            )
        return path
