"""Compiled numba kernels shipped in the image, copied to where numba can use them.

numba uses a cache folder only if it can write to it, and a pod's root filesystem is
read-only. So the container image compiles the kernels at build time into a folder of
its own (``SKYSTREAM_KERNEL_CACHE``, portable code: ``NUMBA_CPU_NAME=generic``), and at
start the daemon copies what is missing into ``NUMBA_CACHE_DIR`` (writable: an emptyDir
on ``/tmp``) before the kernels are first called. A new pod then loads them instead of
compiling them; if the copy is impossible, numba compiles into the writable folder as
before.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SHIPPED", "seed_kernel_cache"]

log = logging.getLogger("skystream.kernel_cache")

#: The environment variable naming the image's read-only folder of compiled kernels.
SHIPPED = "SKYSTREAM_KERNEL_CACHE"


def seed_kernel_cache(environ: Mapping[str, str] = os.environ) -> int:
    """Copy the shipped kernels into numba's cache folder; return how many files were copied.

    Files already in the cache folder are kept (a container restart finds its own).
    Nothing happens unless both ``SKYSTREAM_KERNEL_CACHE`` and ``NUMBA_CACHE_DIR`` are set.
    Call it before the kernels are first called (`processors.warm_up`).

    Parameters
    ----------
    environ : mapping, optional
        Where the two variables are read (the process environment by default).
    """
    shipped, target = environ.get(SHIPPED), environ.get("NUMBA_CACHE_DIR")
    if not shipped or not target:
        return 0
    source = Path(shipped)
    copied = 0
    try:
        for path in sorted(source.rglob("*")):
            if not path.is_file():
                continue
            destination = Path(target) / path.relative_to(source)
            if destination.exists():
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            partial = destination.with_name(destination.name + ".partial")
            shutil.copyfile(path, partial)
            os.replace(partial, destination)  # numba never sees half a file
            copied += 1
    except OSError as exc:
        log.warning("cannot copy the compiled kernels from %s to %s (%s): they are compiled "
                    "instead, which takes minutes", source, target, exc)  # fmt: skip
        return copied
    log.info("%d compiled kernel file(s) copied from %s to %s", copied, source, target)
    return copied
