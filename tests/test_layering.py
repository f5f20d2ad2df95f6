"""processors/ must stay pure: no asyncio, Kafka, watchdog, pydantic, metrics or daemon."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = (
    "asyncio", "aiokafka", "watchdog", "pydantic", "prometheus_client", "daemon", "aiohttp",
)  # fmt: skip
PROCESSORS = Path(__file__).resolve().parents[1] / "processors"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(PROCESSORS.rglob("*.py")), ids=lambda p: p.name)
def test_processor_module_imports_nothing_forbidden(path: Path) -> None:
    assert not _imported_roots(path) & set(FORBIDDEN)


def test_importing_processors_loads_no_forbidden_module() -> None:
    code = (
        "import sys, processors\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_processors_never_open_files() -> None:
    for path in PROCESSORS.rglob("*.py"):
        tree = ast.parse(path.read_text())
        calls = {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert "open" not in calls, path


def test_every_subpackage_is_packaged() -> None:
    """A plain ``pip install .`` must ship every package folder (not only editable installs)."""
    import tomllib

    from setuptools import find_packages

    root = PROCESSORS.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packaged = set(find_packages(where=str(root), include=include))
    folders = {
        ".".join(p.parent.relative_to(root).parts)
        for top in ("processors", "daemon")
        for p in (root / top).rglob("__init__.py")
    }
    assert folders <= packaged
