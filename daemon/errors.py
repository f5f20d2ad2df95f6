"""Error taxonomy: what happens to an exposure is decided by the class of its error."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["Fatal", "InvalidInput", "QUARANTINE_REASONS"]

#: Bounded set of quarantine reasons (metric label values).
QuarantineReason = Literal[
    "truncated",
    "not_fits",
    "no_image_data",
    "wrong_shape",
    "shape_mismatch",
    "no_valid_pixels",
    "unreadable",
    "stack_mismatch",
    "malformed_event",
    "oversized_event",
    "outside_roots",
    "not_a_file",
    "name_collision",
    "processing_error",
]
QUARANTINE_REASONS: tuple[str, ...] = get_args(QuarantineReason)


class InvalidInput(Exception):
    """An exposure that can never be processed: quarantine it with the reason, go on.

    Parameters
    ----------
    reason : str
        One of `QUARANTINE_REASONS`.
    detail : str
        Human-readable explanation.
    """

    def __init__(self, reason: QuarantineReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: QuarantineReason = reason
        self.detail = detail


class Fatal(Exception):
    """Configuration or programming error: stop cleanly with a non-zero exit."""
