"""Checking a claim-check event before anything acts on it: size, schema, allowed roots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from daemon.errors import InvalidInput
from daemon.events import ExposureEvent

__all__ = ["parse_exposure_event"]


def parse_exposure_event(
    raw: bytes | None, *, max_bytes: int, allowed_roots: Sequence[Path]
) -> ExposureEvent:
    """Validate one raw event; its URI must resolve inside an allowed root.

    Symbolic links and ``..`` are resolved before the check, so neither can lead out of
    the roots.

    Raises
    ------
    InvalidInput
        ``oversized_event``, ``malformed_event`` (not JSON, wrong schema or version,
        missing or extra fields) or ``outside_roots``.
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
    for root in allowed_roots:
        real_root = Path(os.path.realpath(root))
        if target == real_root or real_root in target.parents:
            return event.model_copy(update={"uri": str(target)})
    raise InvalidInput(
        "outside_roots", f"{event.uri} resolves to {target}, outside the allowed roots"
    )
