"""What the demo simulates for each background method, and the settings it runs them with.

- ``model`` and ``rolling-sky``: science frames whose sky drifts over the night.
- ``stack``: a few star-free sky frames (``sky_*.fits``, background frames by the file-name
  rule set here) dropped first, then science frames of the same constant sky: a stack of
  dedicated backgrounds assumes the sky did not change in between.
- ``reference``: a flat reference background of `REFERENCE_LEVEL` written into
  ``calibration/`` (the simulation's sky model has mean ``TRUESKY``; its gradient differs
  per frame), scaled to each frame by the JWST fit, so each factor should come out
  ``TRUESKY / REFERENCE_LEVEL``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daemon.fileio.fits_io import write_exposure
from processors import Exposure, FieldModel, simulate_exposure

__all__ = ["DEMO_METHODS", "REFERENCE_LEVEL", "STACK_SKY", "DemoInputs", "demo_inputs"]

DEMO_METHODS: tuple[str, ...] = ("model", "stack", "rolling-sky", "reference")
#: Sky frames dropped before the science of the stack demo.
SKY_FRAMES = 3
#: Constant sky [DN/s] of every frame of the stack demo.
STACK_SKY = 300.0
#: Level [DN/s] of the reference background written for the reference demo.
REFERENCE_LEVEL = 100.0


@dataclass(frozen=True)
class DemoInputs:
    """The simulated night of one method.

    Attributes
    ----------
    overrides : dict
        Settings merged over the defaults (method, passes, rules, reference folder).
    backgrounds : list of (str, Exposure)
        File names and background frames dropped (and absorbed) before the science.
    sky_level : float or None
        The science frames' constant sky; None: the simulator's drift over the night.
    """

    overrides: dict[str, Any]
    backgrounds: list[tuple[str, Exposure]] = field(default_factory=list)
    sky_level: float | None = None

    def science(self, index: int, *, size: int, seed: int, field: FieldModel) -> Exposure:
        """Science exposure ``index`` of the night."""
        return simulate_exposure(
            index, size=size, seed=seed, field=field, sky_level=self.sky_level
        )


def _sky_frames(count: int, size: int, seed: int) -> list[tuple[str, Exposure]]:
    """Star-free frames of `STACK_SKY` (their own noise and gradients)."""
    empty = FieldModel(ra=np.empty(0), dec=np.empty(0), flux=np.empty(0))
    return [
        (
            f"sky_{j:04d}.fits",
            simulate_exposure(count + j, size=size, seed=seed, field=empty, sky_level=STACK_SKY),
        )
        for j in range(SKY_FRAMES)
    ]


def _write_reference(folder: Path, size: int, seed: int) -> None:
    """A flat reference background with the science frames' instrument, detector and filter."""
    folder.mkdir(parents=True, exist_ok=True)
    like = simulate_exposure(0, size=16, seed=seed, field=FieldModel.random(seed))
    header = like.header.copy()
    for card in ("TRUESKY", "TRUEGX", "TRUEGY", "TRUENOIS"):
        del header[card]
    shape = (size, size)
    reference = Exposure(
        sci=np.full(shape, REFERENCE_LEVEL, dtype=np.float32),
        err=np.full(shape, 0.01 * REFERENCE_LEVEL, dtype=np.float32),
        dq=np.zeros(shape, dtype=np.uint32),
        header=header,
    )
    write_exposure(reference, folder / "sky_reference.fits", fsync=False)


def demo_inputs(method: str, passes: int, *, base: Path, count: int, size: int, seed: int
                ) -> DemoInputs:  # fmt: skip
    """The inputs and settings of the demo of ``method`` with ``passes`` model passes.

    Writes the reference background into ``base/calibration`` for ``reference``.

    Raises
    ------
    ValueError
        For a method not in `DEMO_METHODS` or ``passes`` below 1.
    """
    if method not in DEMO_METHODS:
        raise ValueError(f"method must be one of {DEMO_METHODS}, got {method!r}")
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    background: dict[str, Any] = {"method": method, "passes": passes}
    overrides: dict[str, Any] = {"background": background}
    if method == "stack":
        overrides["routing"] = {"background_when": {"filename": ["sky_*"]}}
        return DemoInputs(overrides, _sky_frames(count, size, seed), STACK_SKY)
    if method == "reference":
        calibration = base / "calibration"
        _write_reference(calibration, size, seed)
        # dqbits 0: the frames' reference-pixel border (values near 0) is no sky to fit.
        background["reference"] = {
            "folder": str(calibration),
            "scale": "fit",
            "fit": {"dqbits": 0, "passes": passes},
        }
    return DemoInputs(overrides)
