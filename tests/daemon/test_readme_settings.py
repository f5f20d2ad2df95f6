"""The README's configuration table names every setting, and nothing that is not one."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from daemon.app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _settings(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of every leaf setting."""
    paths = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths |= _settings(kind, f"{path}.")
        else:
            paths.add(path)
    return paths


def _documented() -> set[str]:
    text = README.read_text()
    start = text.index("| section | keys |")
    table = text[start : text.index("\n\n", start)]
    paths = set()
    for line in table.splitlines()[2:]:
        section, keys = (cell.strip() for cell in line.strip("|").split("|"))
        # Only the first backquoted name of each comma-separated item is a key; what
        # follows in parentheses are its values.
        for item in re.sub(r"\([^)]*\)", "", keys).split(","):
            paths |= {f"{section.strip('`')}.{key}" for key in re.findall(r"`([a-z_.]+)`", item)}
    return paths


def test_the_readme_table_lists_exactly_the_settings() -> None:
    settings, documented = _settings(Settings), _documented()
    assert not settings - documented, f"not in the README table: {sorted(settings - documented)}"
    assert not documented - settings, f"not settings: {sorted(documented - settings)}"
