"""File names for things named by header values (stack keys, mosaic groups)."""

from __future__ import annotations

import hashlib

__all__ = ["safe_file_name"]


def safe_file_name(name: str) -> str:
    """A safe, stable file name for any text: readable characters plus a short hash.

    Stack keys and group ids hold ``/`` and arbitrary header values; the hash keeps two
    names that differ only in replaced characters apart.
    """
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
    return f"{readable}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"
