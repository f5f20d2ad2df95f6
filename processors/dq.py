"""JWST data-quality flags and DQ masks from astropy bit-flag expressions."""

from __future__ import annotations

from enum import IntFlag

import numpy as np
from astropy.nddata.bitmask import bitfield_to_boolean_mask, extend_bit_flag_map

__all__ = ["DQ", "DQ_FLAG_MAP", "bad_pixel_mask"]


class DQ(IntFlag):
    """Pixel DQ bits with the values of ``stdatamodels.jwst.datamodels.dqflags.pixel``."""

    GOOD = 0
    DO_NOT_USE = 1 << 0
    SATURATED = 1 << 1
    JUMP_DET = 1 << 2
    DROPOUT = 1 << 3
    OUTLIER = 1 << 4
    PERSISTENCE = 1 << 5
    AD_FLOOR = 1 << 6
    CHARGELOSS = 1 << 7
    RESERVED = 1 << 8
    NON_SCIENCE = 1 << 9
    DEAD = 1 << 10
    HOT = 1 << 11
    WARM = 1 << 12
    LOW_QE = 1 << 13
    RC = 1 << 14
    TELEGRAPH = 1 << 15
    NONLINEAR = 1 << 16
    BAD_REF_PIXEL = 1 << 17
    NO_FLAT_FIELD = 1 << 18
    NO_GAIN_VALUE = 1 << 19
    NO_LIN_CORR = 1 << 20
    NO_SAT_CHECK = 1 << 21
    UNRELIABLE_BIAS = 1 << 22
    UNRELIABLE_DARK = 1 << 23
    UNRELIABLE_SLOPE = 1 << 24
    UNRELIABLE_FLAT = 1 << 25
    OPEN = 1 << 26
    ADJ_OPEN = 1 << 27
    FLUX_ESTIMATED = 1 << 28
    MSA_FAILED_OPEN = 1 << 29
    OTHER_BAD_PIXEL = 1 << 30
    REFERENCE_PIXEL = 1 << 31


#: Mnemonic map accepted by astropy's bit-flag parser (names are case-insensitive there).
DQ_FLAG_MAP = extend_bit_flag_map(
    "SkystreamDQ", **{flag.name: int(flag.value) for flag in DQ if flag.value and flag.name}
)


def bad_pixel_mask(dq: np.ndarray, dqbits: int | str | None) -> np.ndarray:
    """Boolean mask of pixels whose DQ excludes them from statistics.

    ``dqbits`` follows astropy's `~astropy.nddata.bitmask.bitfield_to_boolean_mask`
    ``ignore_flags`` convention, as the JWST steps use it: it names the bits to *ignore*,
    so ``0`` makes any set bit bad, ``"~DO_NOT_USE+NON_SCIENCE"`` makes only those two bits
    bad, and ``None`` ignores the DQ array altogether.

    Parameters
    ----------
    dq : ndarray of int
        Data-quality array.
    dqbits : int, str or None
        Bit-flag expression; mnemonic names from `DQ` are accepted.

    Returns
    -------
    ndarray of bool
        True where the pixel must be excluded.

    Raises
    ------
    ValueError
        If ``dqbits`` is not a valid bit-flag expression.

    Examples
    --------
    >>> import numpy as np
    >>> dq = np.array([0, 1, 2, 512], dtype=np.uint32)
    >>> bad_pixel_mask(dq, "~DO_NOT_USE+NON_SCIENCE").tolist()
    [False, True, False, True]
    >>> bad_pixel_mask(dq, 0).tolist()
    [False, True, True, True]
    """
    if dqbits is None or (isinstance(dqbits, str) and dqbits.strip().upper() == "NONE"):
        return np.zeros(dq.shape, dtype=bool)
    try:
        return np.asarray(
            bitfield_to_boolean_mask(
                dq, ignore_flags=dqbits, good_mask_value=False, flag_name_map=DQ_FLAG_MAP
            ),
            dtype=bool,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"dqbits {dqbits!r} is not a valid bit-flag expression: {exc}") from exc
