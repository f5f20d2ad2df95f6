"""The image's compiled kernels: copied at start where numba loads them instead of compiling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from daemon.ops.kernel_cache import seed_kernel_cache

KERNEL = "import numba\n\n@numba.njit(cache=True)\ndef add(a, b):\n    return a + b\n"
ROOT = Path(__file__).resolve().parents[2]


def run(folder: Path, code: str, **env: str) -> str:
    """Run ``code`` next to the kernel module with numba's cache messages on stdout."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("SKYSTREAM_KERNEL_CACHE", "NUMBA_CACHE_DIR")}  # fmt: skip
    environment |= {"NUMBA_DEBUG_CACHE": "1", "NUMBA_CPU_NAME": "generic",
                    "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}", **env}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, env=environment,
                            capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return result.stdout


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# As the daemon does: the kernels' module is imported, the cache seeded, then they are called.
START = (
    "import kernel\nfrom daemon.ops.kernel_cache import seed_kernel_cache\nseed_kernel_cache()\n"
)


def test_a_fresh_cache_seeded_from_the_image_loads_instead_of_compiling(tmp_path) -> None:
    (tmp_path / "kernel.py").write_text(KERNEL)
    shipped = tmp_path / "image-cache"
    build = run(tmp_path, "import kernel\nassert kernel.add(1, 2) == 3",
                NUMBA_CACHE_DIR=str(shipped))  # fmt: skip
    assert "[cache] data saved" in build  # the image's build step compiled it
    fresh = tmp_path / "pod-cache"
    warm = run(tmp_path, START + "assert kernel.add(1, 2) == 3",
               NUMBA_CACHE_DIR=str(fresh), SKYSTREAM_KERNEL_CACHE=str(shipped))  # fmt: skip
    assert "[cache] data loaded" in warm and "[cache] data saved" not in warm
    assert files(fresh) == files(shipped)
    # Without the shipped kernels the same start compiles.
    cold = run(tmp_path, START + "assert kernel.add(1, 2) == 3",
               NUMBA_CACHE_DIR=str(tmp_path / "empty"))  # fmt: skip
    assert "[cache] data saved" in cold


def test_seeding_keeps_what_is_there_and_needs_both_folders(tmp_path) -> None:
    shipped = tmp_path / "shipped"
    (shipped / "sub").mkdir(parents=True)
    (shipped / "sub" / "a.nbi").write_bytes(b"image")
    (shipped / "sub" / "b.nbc").write_bytes(b"image")
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "a.nbi").write_bytes(b"own")
    environ = {"SKYSTREAM_KERNEL_CACHE": str(shipped), "NUMBA_CACHE_DIR": str(target)}
    assert seed_kernel_cache(environ) == 1
    assert (target / "sub" / "a.nbi").read_bytes() == b"own"
    assert (target / "sub" / "b.nbc").read_bytes() == b"image"
    assert seed_kernel_cache(environ) == 0
    assert seed_kernel_cache({"NUMBA_CACHE_DIR": str(target)}) == 0
    assert seed_kernel_cache({"SKYSTREAM_KERNEL_CACHE": str(shipped)}) == 0
