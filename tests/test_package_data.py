"""A wheel built from the sources ships every file the packages read at run time (the live
page's template, style sheet and icon), not only the Python modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Generated on a developer's machine, never shipped: bytecode and numba's kernel cache.
_CACHES = {"__pycache__"}
_GENERATED_SUFFIXES = {".pyc", ".nbi", ".nbc"}


def _data_files() -> set[str]:
    """Every file of the packages that is neither Python source nor a cache."""
    return {
        path.relative_to(ROOT).as_posix()
        for top in ("daemon", "processors")
        for path in (ROOT / top).rglob("*")
        if path.is_file()
        and path.suffix != ".py"
        and path.suffix not in _GENERATED_SUFFIXES
        and not _CACHES & set(path.parts)
    }


def test_the_wheel_ships_every_data_file_of_the_packages(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for top in ("daemon", "processors"):
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns(*_CACHES))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("skystream-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = _data_files()
    assert "daemon/ops/sky_assets/sky.css" in expected
    assert expected <= shipped, sorted(expected - shipped)
