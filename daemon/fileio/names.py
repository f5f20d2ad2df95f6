"""File names skystream makes: safe for header values, bounded for long input names."""

from __future__ import annotations

import hashlib

__all__ = ["MAX_NAME_BYTES", "bounded_name", "readable", "safe_file_name"]

#: Longest file name skystream makes, in UTF-8 bytes. File systems allow 255; the rest is
#: room for the hidden temporary name of an atomic write (``.<name>.tmp-<pid>``) and for
#: the reason files of the quarantine.
MAX_NAME_BYTES = 200
_HASH_CHARS = 12


def readable(text: str) -> str:
    """``text`` as valid UTF-8; other text is kept as it is.

    A file name's undecodable bytes (held in surrogates) become backslash-x escapes, so
    that JSON readers, SQLite and logs take it.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def safe_file_name(name: str) -> str:
    """A safe, stable file name for any text: readable characters plus a short hash.

    Stack keys and group ids hold ``/`` and arbitrary header values; the hash keeps two
    names that differ only in replaced characters apart.
    """
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
    return f"{readable}-{_digest(name)[:10]}"


def bounded_name(text: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``text`` itself if it fits in ``max_bytes`` UTF-8 bytes, else a prefix and a hash.

    The shortened form is the longest prefix that fits, ``-`` and 12 hex digits of the
    SHA-1 of the whole text, so two long names that share their beginning stay apart and
    the same text always gives the same name.

    Examples
    --------
    >>> bounded_name("short")
    'short'
    >>> len(bounded_name("x" * 300).encode())
    200
    """
    encoded = text.encode("utf-8", "surrogateescape")
    if len(encoded) <= max_bytes:
        return text
    room = max_bytes - 1 - _HASH_CHARS
    if room < 1:
        raise ValueError(f"max_bytes must leave room for a prefix and a hash, got {max_bytes}")
    prefix = encoded[:room].decode("utf-8", "ignore")  # never cut a character in half
    return f"{prefix}-{_digest(text)[:_HASH_CHARS]}"
