"""JSON Schema files of the events, generated from their pydantic models.

``python -m daemon.event_schemas [FOLDER]`` writes them (by default into ``schemas/``);
the committed files are checked against the models by the test suite. The exposure
schema describes what skystream accepts (fields it does not know are ignored); the
product and sky-match schemas describe what it publishes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from daemon.events import ExposureEvent, ProductEvent, SkyMatchEvent

__all__ = ["event_schemas", "main"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_MODELS: dict[str, tuple[type[BaseModel], Literal["validation", "serialization"]]] = {
    "skystream.exposure-1.schema.json": (ExposureEvent, "validation"),
    "skystream.product-1.schema.json": (ProductEvent, "serialization"),
    "skystream.skymatch-1.schema.json": (SkyMatchEvent, "serialization"),
}


def event_schemas() -> dict[str, str]:
    """The text of every event's JSON Schema file, by file name."""
    texts = {}
    for name, (model, mode) in _MODELS.items():
        schema = {"$schema": _DIALECT, "$id": name}
        schema |= model.model_json_schema(by_alias=True, mode=mode)
        texts[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return texts


def main(argv: list[str] | None = None) -> int:
    """Write the schema files into the folder given (default ``schemas``)."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "schemas")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in event_schemas().items():
        (folder / name).write_text(text)
        print(folder / name)  # the command's output: what it wrote
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
