"""The ``reference`` background method: a reference file scaled to each exposure.

With ``scale`` a number, the reference is subtracted times that scale (the Liger/IRIS master
background); with ``scale: fit`` the factor is fitted in the exposure's background pixels
(the JWST WFSS background). A scaling that fails leaves the exposure unsubtracted with
``S_BKDSUB`` FAILED (or SKIPPED) and ``BKGD_SCL`` 0, as JWST records it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daemon.app.parameters import scaling_parameters
from daemon.app.settings import Settings
from daemon.errors import InvalidInput
from daemon.state.references import Reference, ReferenceBackgrounds
from processors import (
    Exposure,
    ReferenceScaling,
    scale_reference_background,
    subtract_reference_background,
)
from processors.reference_background import reference_on_science_grid
from processors.subtract import ErrorMode

__all__ = ["ReferenceMethod", "ScaledReference"]


@dataclass(frozen=True, eq=False)
class ScaledReference:
    """A reference background scaled to one exposure, and how to subtract it.

    Attributes
    ----------
    background : Exposure or None
        The reference times its factor on the exposure's grid (what is subtracted); None
        when the scaling did not complete.
    level : float or None
        Median of ``background``.
    params : dict
        Provenance for the sidecar: the file, the scale, its method and status, and for a
        fitted scale its reason, iterations, rejected and background-pixel fractions and
        the fit parameters.
    subtract : callable
        Makes the product from the exposure (`processors.subtract_reference_background`).
    notes : list of str
        Why nothing was subtracted, if so.
    """

    background: Exposure | None
    level: float | None
    params: dict[str, Any]
    subtract: Callable[[Exposure], Exposure]
    notes: list[str] = field(default_factory=list)


class ReferenceMethod:
    """Chooses, scales and describes the reference background of each exposure.

    Parameters
    ----------
    settings : Settings
        ``background.reference`` (file or folder, scale, fit), ``background.errors`` and
        ``input.max_exposure_bytes``.

    Raises
    ------
    daemon.app.settings.ConfigError
        If the reference file or folder does not exist.
    """

    def __init__(self, settings: Settings) -> None:
        reference = settings.background.reference
        self._references = ReferenceBackgrounds(
            reference, max_bytes=settings.input.max_exposure_bytes
        )
        self._scale = reference.scale
        self._fit = scaling_parameters(reference.fit)
        self._errors: ErrorMode = settings.background.errors

    def scaled(self, exposure: Exposure) -> ScaledReference:
        """The exposure's reference background, scaled (runs in a worker thread).

        Raises
        ------
        InvalidInput
            ``reference_missing`` or ``reference_ambiguous`` (see
            `daemon.state.references.ReferenceBackgrounds.choose`), or
            ``reference_mismatch`` when the reference does not fit the exposure (shape,
            subarray).
        """
        reference = self._references.choose(exposure.header)
        return self._scale_to(exposure, reference)

    def _scale_to(self, exposure: Exposure, reference: Reference) -> ScaledReference:
        name = reference.path.name
        try:
            ref = reference_on_science_grid(exposure, reference.exposure)
            scaling = (
                scale_reference_background(exposure, ref, **self._fit)
                if self._scale == "fit"
                else None
            )
        except ValueError as exc:
            raise InvalidInput("reference_mismatch", f"{name}: {exc}") from exc
        params: dict[str, Any] = {"reference": name, "reference_path": str(reference.path)}
        scale: float | ReferenceScaling
        if scaling is None:
            scale = float(self._scale)
            params.update(scale_method="fixed", scale_factor=scale, scale_status="COMPLETE")
        else:
            scale = scaling
            params.update(
                scale_method=scaling.method,
                scale_factor=scaling.factor,
                scale_status=scaling.status,
                scale_reason=scaling.reason,
                iterations=scaling.iterations,
                rejected_fraction=float(scaling.rejected.mean()),
                background_fraction=float(scaling.background_mask.mean()),
                fit=dict(self._fit),
            )
        subtract = functools.partial(
            subtract_reference_background, reference=ref, scale=scale, errors=self._errors,
            reference_name=name,
        )  # fmt: skip
        if isinstance(scale, ReferenceScaling) and scale.status != "COMPLETE":
            note = f"reference scaling {scale.status} ({scale.reason}): {name} not subtracted"
            return ScaledReference(None, None, params, subtract, [note])
        factor = params["scale_factor"]
        background = Exposure(
            sci=np.float32(factor) * ref.sci,
            err=None if ref.err is None else np.float32(abs(factor)) * ref.err,
            dq=ref.dq,
        )
        finite = background.sci[np.isfinite(background.sci)]
        level = float(np.median(finite)) if finite.size else 0.0
        return ScaledReference(background, level, params, subtract)
