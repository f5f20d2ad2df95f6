"""retain_freed_memory: freed planes stay in the process for the next exposure."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import os, sys
import numpy as np
from daemon.ops.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
plane = np.ones((4096, 4096 * 4), dtype=np.float32)  # 256 MB, written so it is resident
del plane
pages = int(open("/proc/self/statm").read().split()[1])
print(pages * os.sysconf("SC_PAGE_SIZE") // 2**20)
"""


def _resident_mb_after_free(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True,
                            text=True, check=True, timeout=60)  # fmt: skip
    return int(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_planes_stay_resident_only_when_retained() -> None:
    # By default glibc unmaps the 256 MB block on free; retained, it stays for reuse.
    assert _resident_mb_after_free("retain") - _resident_mb_after_free("default") > 200
