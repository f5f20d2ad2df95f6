"""Wire models: the ExposureEvent that arrives; the ProductEvent and SkyMatchEvent published.

Readers are tolerant: a field this version does not know is ignored (a newer producer may
add fields within a schema version); a wrong ``schema`` version is refused. Times carry a
timezone: one given without (``2024-05-01T03:04:05``) is read as UTC, never as the
daemon's local time. URIs stay URIs: a product is named by a URI of the same kind as its
input's (``file://`` for a ``file://`` input, a plain path for a plain path).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote_to_bytes, urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import JsonDict

from daemon.fileio.names import bounded_name, readable

__all__ = [
    "MAX_ID_BYTES",
    "ExposureEvent",
    "ProductEvent",
    "SkyMatchEvent",
    "SkyMatchMember",
    "exposure_id_from_path",
    "path_of",
    "uri_of",
]

#: Longest exposure id in UTF-8 bytes: product names made from it stay under NAME_MAX.
MAX_ID_BYTES = 200
_FITS_SUFFIXES = (".fits.fz", ".fit.fz", ".fts.fz", ".fz", ".fits", ".fit", ".fts")
_OTHER_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _id_problem(value: str) -> str | None:
    """What makes ``value`` unfit to be an exposure id (and a file name), if anything."""
    if not value:
        return "is empty"
    odd = next((c for c in value if not c.isprintable()), None)
    if odd is not None:
        return f"holds the control character U+{ord(odd):04X}"
    if "/" in value or "\\" in value:
        return "holds a path separator"
    if value.startswith("."):
        return "starts with '.' (hidden and temporary file names are skystream's own)"
    size = len(value.encode())
    if size > MAX_ID_BYTES:
        return f"is {size} bytes long (at most {MAX_ID_BYTES})"
    return None


def _check_exposure_id(value: str) -> str:
    problem = _id_problem(value)
    if problem is not None:
        shown = repr(value[:60]) + ("..." if len(value) > 60 else "")
        raise ValueError(f"exposure_id {shown} {problem}")
    return value


def _as_utc(value: datetime) -> datetime:
    """A time without a timezone is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _check_uri(value: str) -> str:
    if value.startswith("file:"):
        host = urlparse(value).netloc
        if host not in ("", "localhost"):
            raise ValueError(f"file URI names the host {host!r}: only local files are read")
    elif _OTHER_SCHEME.match(value):
        raise ValueError("only file paths and file:// URIs are read")
    if "\0" in str(path_of(value)):
        raise ValueError("uri holds a NUL character")
    return value


#: An exposure id: printable, no path separator, no leading dot, at most MAX_ID_BYTES.
ExposureId = Annotated[
    str,
    AfterValidator(_check_exposure_id),
    Field(
        description=f"1 to {MAX_ID_BYTES} UTF-8 bytes of printable characters, no '/' or "
        "'\\', not starting with '.'; names the product.",
        json_schema_extra={"pattern": r"^[^./\\\x00-\x1f\x7f-\x9f][^/\\\x00-\x1f\x7f-\x9f]*$"},
    ),
]
#: The fields of a FAILED product event, and of the others, as a JSON Schema rule.
_FAILED_RULE: JsonDict = {
    "if": {"properties": {"status": {"const": "FAILED"}}},
    "then": {"properties": {"reason": {"type": "string"}, "detail": {"type": "string"},
                            "product_uri": {"type": "null"}}},
    "else": {"properties": {"reason": {"type": "null"}, "detail": {"type": "null"},
                            "product_uri": {"type": "string"}}},
}  # fmt: skip
#: A time with a timezone; one given without is UTC.
UtcTime = Annotated[datetime, AfterValidator(_as_utc)]


def path_of(uri: str) -> Path:
    """The local path a file path or ``file://`` URI names (percent-escapes decoded)."""
    if uri.startswith("file:"):
        return Path(os.fsdecode(unquote_to_bytes(urlparse(uri).path)))
    return Path(uri)


def uri_of(path: Path) -> str:
    """How an event names a local file: its path, or a ``file://`` URI if not UTF-8.

    A name that is not UTF-8 cannot be a JSON string; the URI's percent-escapes name its
    bytes exactly.
    """
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return path.absolute().as_uri()
    return name


def exposure_id_from_path(path: Path) -> str:
    """The exposure id of a file: its name without the FITS suffix, made a valid id.

    Control characters and backslashes become ``_``, and so does a leading dot; a stem
    longer than `MAX_ID_BYTES` is shortened with a hash (`daemon.fileio.names.bounded_name`).
    """
    name = "".join(c if c.isprintable() and c != "\\" else "_" for c in readable(path.name))
    for suffix in _FITS_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = re.sub(r"^\.", "_", name) or "_"
    return bounded_name(name, MAX_ID_BYTES)  # the id, and the product name made from it


class _Event(BaseModel):
    model_config = ConfigDict(
        extra="ignore",  # a tolerant reader: fields added within a schema version pass
        frozen=True,
        populate_by_name=True,
        json_schema_serialization_defaults_required=True,  # published events hold them all
    )


class ExposureEvent(_Event):
    """An exposure to process: a claim check pointing at a FITS file (``skystream.exposure/1``)."""

    schema_id: Literal["skystream.exposure/1"] = Field(
        "skystream.exposure/1", alias="schema", description="Schema name and version."
    )
    exposure_id: ExposureId
    uri: Annotated[str, AfterValidator(_check_uri)] = Field(
        min_length=1,
        max_length=4096,
        description="The FITS file: a path or a file:// URI, inside the allowed roots.",
    )
    kind: Literal["science", "background"] = Field(
        "science", description="background: a dedicated sky frame for the stack method."
    )
    stack_key: str | None = Field(
        None, description="Stack key; by default made from the header (routing.stack_key)."
    )
    group: str | None = Field(None, description="Mosaic group for sky matching.")
    obs_time: UtcTime | None = Field(
        None,
        description="Observation start, ISO 8601; without a timezone it is UTC. By default "
        "read from the header.",
    )
    meta: dict[str, Any] = Field(
        default_factory=dict, description="Free producer data, carried along unread."
    )

    @property
    def path(self) -> Path:
        """Local path the URI points at."""
        return path_of(self.uri)

    def uri_for(self, path: Path) -> str:
        """A URI naming ``path`` of the same kind as this event's (``file://`` or a path)."""
        return path.absolute().as_uri() if self.uri.startswith("file:") else str(path)

    @classmethod
    def for_file(cls, path: Path) -> ExposureEvent:
        """The event of a file found in a watched folder or named on the command line."""
        return cls(exposure_id=exposure_id_from_path(path), uri=uri_of(path))


class ProductEvent(_Event):
    """A finished product (``skystream.product/1``); also the JSON sidecar of the product.

    ``FAILED`` announces an exposure that a valid event announced but that was
    quarantined: it has a ``reason`` and a ``detail`` and no product.
    """

    model_config = ConfigDict(json_schema_extra={"allOf": [_FAILED_RULE]})

    schema_id: Literal["skystream.product/1"] = Field(
        "skystream.product/1", alias="schema", description="Schema name and version."
    )
    exposure_id: str = Field(description="Id of the input exposure.")
    input_uri: str = Field(description="The input file, as it was read.")
    product_uri: str | None = Field(
        None,
        description="The background-subtracted product, a URI of the same kind as the "
        "input's; null when FAILED.",
    )
    status: Literal["COMPLETE", "SKIPPED", "FAILED"] = Field(
        description="COMPLETE: subtracted; SKIPPED: copied unchanged (no background could "
        "be estimated); FAILED: quarantined, see reason and detail."
    )
    reason: str | None = Field(None, description="FAILED: the quarantine reason.")
    detail: str | None = Field(None, description="FAILED: what is wrong, in words.")
    method: str | None = Field(None, description="Background method used.")
    stack_key: str | None = Field(None, description="Stack key (also the Kafka key).")
    group: str | None = Field(
        None,
        description="Mosaic group for sky matching (the event's, else the header's); null: "
        "not matched.",
    )
    background_level: float | None = Field(None, description="Median background level.")
    background_rms: float | None = Field(None, description="Median background RMS.")
    background_params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters of the background estimate."
    )
    background_uri: str | None = Field(None, description="Combined background, if saved.")
    notes: list[str] = Field(default_factory=list, description="Remarks on this product.")
    errors: str | None = Field(None, description="How the ERR plane was treated.")
    inputs_used: list[str] = Field(
        default_factory=list, description="Exposure ids the background was made from."
    )
    shape: list[int] = Field(default_factory=list, description="Shape of the science data.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")
    software_version: str = Field(description="skystream version.")
    produced_at: UtcTime = Field(description="When the event was made (UTC).")
    input_size: int | None = Field(
        None, description="Size in bytes of the input that was processed."
    )
    input_mtime_ns: int | None = Field(
        None,
        description="Modification time (ns) of the input that was processed: with the size, "
        "it recognises the same input again when the state folder was lost.",
    )
    skymatch: dict[str, Any] | None = Field(
        None,
        description="On a sky-matched product (<stem>_skym.fits): its group, revision, level, "
        "method and source_product; null otherwise.",
    )

    @model_validator(mode="after")
    def _fields_of_status(self) -> ProductEvent:
        failed = self.status == "FAILED"
        if failed != (self.reason is not None and self.detail is not None):
            raise ValueError("reason and detail are given exactly when status is FAILED")
        if failed == (self.product_uri is not None):
            raise ValueError("product_uri is given exactly when status is not FAILED")
        return self

    @property
    def product_path(self) -> Path:
        """Local path of the product.

        Raises
        ------
        ValueError
            For a ``FAILED`` event, which has no product.
        """
        if self.product_uri is None:
            raise ValueError(f"{self.exposure_id}: a FAILED product event names no product")
        return path_of(self.product_uri)

    @classmethod
    def failed(
        cls,
        event: ExposureEvent,
        reason: str,
        detail: str,
        *,
        software_version: str,
        stack_key: str | None = None,
    ) -> ProductEvent:
        """The event announcing that ``event``'s exposure was quarantined."""
        return cls(
            exposure_id=event.exposure_id,
            input_uri=event.uri,
            status="FAILED",
            reason=reason,
            detail=readable(detail),
            stack_key=stack_key if stack_key is not None else event.stack_key,
            software_version=software_version,
            produced_at=datetime.now(UTC),
        )


class SkyMatchMember(_Event):
    """One image of a mosaic group and its matched sky level."""

    exposure_id: str = Field(description="Id of the member exposure.")
    product: str | None = Field(description="Its product, if one was written.")
    level: float | None = Field(description="Matched sky level; null when not matched.")
    valid: bool = Field(description="Whether the level could be determined.")


class SkyMatchEvent(_Event):
    """The sky levels of a mosaic group (``skystream.skymatch/1``); also its group table.

    Published when the group closes (``closed`` true) and written to
    ``<output>/skymatch/<group>.json`` at every revision.
    """

    schema_id: Literal["skystream.skymatch/1"] = Field(
        "skystream.skymatch/1", alias="schema", description="Schema name and version."
    )
    group: str = Field(description="Mosaic group.")
    revision: int = Field(description="Increases with every member added.")
    closed: bool = Field(description="True for the final table of the group.")
    method: str = Field(description="Sky-matching method.")
    subtract: bool = Field(description="Whether the levels were subtracted from products.")
    members: list[SkyMatchMember] = Field(description="Every image of the group.")
    produced_at: UtcTime = Field(
        default_factory=lambda: datetime.now(UTC), description="When this revision was made."
    )
