"""Checking a claim-check event before anything acts on it: size, schema, allowed roots."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from daemon.errors import InvalidInput
from daemon.events import ExposureEvent

__all__ = ["parse_exposure_event"]


def parse_exposure_event(
    raw: bytes | None, *, max_bytes: int, allowed_roots: Sequence[Path]
) -> ExposureEvent:
    """Validate one raw event; its URI must name a file inside an allowed root.

    Symbolic links and ``..`` are resolved before the check, so neither can lead out of
    the roots; the event returned names the resolved file, with a URI of the kind it came
    with (``file://`` or a path). Fields this schema version does not know are ignored.

    Raises
    ------
    InvalidInput
        ``oversized_event``; ``malformed_event`` (not JSON, wrong schema or version,
        missing or invalid fields, such as an exposure id with a path separator, a leading
        dot or a control character); ``outside_roots`` (the URI resolves outside every
        root, or to a root itself); ``not_a_file`` (it names a directory, FIFO, socket or
        device).
    """
    if raw is None:
        raise InvalidInput("malformed_event", "empty message")
    if len(raw) > max_bytes:
        raise InvalidInput("oversized_event", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        event = ExposureEvent.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<event>'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput("malformed_event", problems) from None
    target = Path(os.path.realpath(event.path))
    if not any(Path(os.path.realpath(root)) in target.parents for root in allowed_roots):
        raise InvalidInput(
            "outside_roots", f"{event.uri} resolves to {target}, outside the allowed roots"
        )
    try:
        regular = stat.S_ISREG(os.stat(target).st_mode)
    except OSError:
        regular = True  # missing or unreadable: reading it reports that, with its reason
    if not regular:
        raise InvalidInput("not_a_file", f"{event.uri} resolves to {target}, not a regular file")
    return event.model_copy(update={"uri": event.uri_for(target)})
