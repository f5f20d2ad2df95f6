"""Wire models: the ExposureEvent that arrives; the ProductEvent and SkyMatchEvent published."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field

from daemon.fileio.names import bounded_name

__all__ = [
    "ExposureEvent",
    "ProductEvent",
    "SkyMatchEvent",
    "SkyMatchMember",
    "exposure_id_from_path",
]

_FITS_SUFFIXES = (".fits", ".fit", ".fts")


def exposure_id_from_path(path: Path) -> str:
    """The exposure id of a file: its name without the FITS suffix.

    Control characters and backslashes, which no id may hold, become ``_``; a stem longer
    than 200 bytes is shortened with a hash (`daemon.fileio.names.bounded_name`).
    """
    name = re.sub(r"[\x00-\x1f\\]", "_", path.name)
    for suffix in _FITS_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return bounded_name(name)  # the id, and the product name made from it, stay short


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ExposureEvent(_Event):
    """An exposure to process: a claim check pointing at a FITS file (``skystream.exposure/1``)."""

    schema_id: Literal["skystream.exposure/1"] = Field(
        "skystream.exposure/1", alias="schema", description="Schema name and version."
    )
    exposure_id: str = Field(min_length=1, max_length=200, pattern=r"^[^/\\\x00-\x1f]+$")
    uri: str = Field(min_length=1, max_length=4096, description="File path or file:// URI.")
    kind: Literal["science", "background"] = "science"
    stack_key: str | None = None
    group: str | None = None
    obs_time: datetime | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def path(self) -> Path:
        """Local path the URI points at."""
        parsed = urlparse(self.uri)
        if parsed.scheme == "file":
            return Path(unquote(parsed.path))
        return Path(self.uri)

    @classmethod
    def for_file(cls, path: Path) -> ExposureEvent:
        """The event of a file found in a watched folder or named on the command line."""
        return cls(exposure_id=exposure_id_from_path(path), uri=str(path))


class ProductEvent(_Event):
    """A finished product (``skystream.product/1``); also the JSON sidecar of the product."""

    schema_id: Literal["skystream.product/1"] = Field("skystream.product/1", alias="schema")
    exposure_id: str
    input_uri: str
    product_uri: str
    status: Literal["COMPLETE", "SKIPPED", "FAILED"]
    method: str
    stack_key: str
    background_level: float | None
    background_rms: float | None
    background_params: dict[str, Any]
    background_uri: str | None = None
    notes: list[str] = Field(default_factory=list)
    errors: str
    inputs_used: list[str]
    shape: list[int]
    timings: dict[str, float] = Field(description="Seconds per stage.")
    software_version: str
    produced_at: datetime
    input_size: int | None = Field(
        None, description="Size in bytes of the input that was processed."
    )
    input_mtime_ns: int | None = Field(
        None,
        description="Modification time (ns) of the input that was processed: with the size, "
        "it recognises the same input again when the state folder was lost.",
    )
    skymatch: dict[str, Any] | None = Field(
        None, description="Sky-match result, added to the sidecar when the group closes."
    )


class SkyMatchMember(_Event):
    """One image of a mosaic group and its matched sky level."""

    exposure_id: str
    product: str | None
    level: float | None
    valid: bool


class SkyMatchEvent(_Event):
    """The sky levels of a mosaic group (``skystream.skymatch/1``); also its group table.

    Published when the group closes (``closed`` true) and written to
    ``<output>/skymatch/<group>.json`` at every revision.
    """

    schema_id: Literal["skystream.skymatch/1"] = Field("skystream.skymatch/1", alias="schema")
    group: str
    revision: int
    closed: bool
    method: str
    subtract: bool
    members: list[SkyMatchMember]
