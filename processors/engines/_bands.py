"""Run a GIL-free kernel over horizontal bands of an image on several threads."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _shared_pool() -> ThreadPoolExecutor:
    # One process-wide pool, created on first use; its threads only run compiled kernels
    # that release the GIL, so callers on any thread may share it.
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="skystream-band")
        return _pool


def bands(n_rows: int, parts: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Split ``range(n_rows)`` into at most ``parts`` bands whose starts are multiples."""
    units = -(-n_rows // multiple)
    parts = max(1, min(parts, units))
    edges = [min(round(i * units / parts) * multiple, n_rows) for i in range(parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def map_bands(func: Callable[[int, int], T], spans: list[tuple[int, int]]) -> list[T]:
    """``[func(a, b) for a, b in spans]``, the spans on separate threads when there are several."""
    if len(spans) == 1:
        return [func(*spans[0])]
    pool = _shared_pool()
    futures = [pool.submit(func, a, b) for a, b in spans[1:]]
    first = func(*spans[0])  # the calling thread takes a share instead of waiting
    return [first, *(future.result() for future in futures)]
