"""Running blocking work in the bounded worker pool, with the caller's log fields."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

__all__ = ["run_in_pool"]

T = TypeVar("T")


async def run_in_pool(pool: Executor, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await ``func(*args, **kwargs)`` run in ``pool``.

    The call runs in a copy of the caller's context, so log lines written in the worker
    thread carry the same fields (exposure id, stack key) as the task that asked.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await loop.run_in_executor(pool, call)
