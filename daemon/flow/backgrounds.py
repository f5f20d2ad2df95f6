"""The background policy in one place: own model, stack (and waiting), rolling sky, reference."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io.fits import Header

from daemon.app.parameters import coverage_mask, model_parameters, rolling_sky_parameters
from daemon.app.settings import Settings, dq_flag_bits
from daemon.events import ExposureEvent
from daemon.flow.reference_method import ReferenceMethod, ScaledReference
from daemon.intake.kinds import exposure_kind
from daemon.ops.metrics import Metrics
from daemon.retry import Retrier
from daemon.state.stacks import KeyState, StackStore
from processors import (
    BackgroundResult,
    Exposure,
    model_exposure_background,
    rolling_sky_background,
    sky_member,
)

__all__ = ["Choice", "Chooser"]

log = logging.getLogger("skystream.backgrounds")
#: The condition named in /readyz while state cannot be saved.
STATE_FOLDER = "state folder"
Stage = Callable[..., Awaitable[Any]]
#: Receives a stack key and its membership record after every durable change.
OnStackSaved = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class Choice:
    """The background chosen for one science exposure.

    ``background`` is None when the exposure passes through unsubtracted (SKIPPED).
    ``subtract``, when given, makes the product instead of `processors.subtract_background`
    (a reference background: its scale and file recorded, a failed scaling marked).
    """

    method: str
    background: BackgroundResult | Exposure | None
    level: float | None
    rms: float | None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subtract: Callable[[Exposure], Exposure] | None = None


class Chooser:
    """Builds the configured background for science exposures and absorbs backgrounds.

    Parameters
    ----------
    settings : Settings
        Method and parameters.
    store : StackStore
        Per-key stacks and sky templates.
    metrics : Metrics
        Stack gauges and counters.
    retrier : Retrier
        The retry policy for saving state.
    on_stack_saved : callable, optional
        Awaited with each stack's membership once saved (the Kafka state topic).
    """

    def __init__(
        self,
        settings: Settings,
        store: StackStore,
        metrics: Metrics,
        retrier: Retrier,
        *,
        on_stack_saved: OnStackSaved | None = None,
    ) -> None:
        self._retrier = retrier
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._on_stack_saved = on_stack_saved
        self.model_params = model_parameters(settings.background)
        self._coverage_bits = dq_flag_bits(settings.background.coverage_dq)
        #: DQ bits set in products on the sources a multi-pass model masked.
        self.source_dq = dq_flag_bits(settings.background.source_dq)
        self._reference = (
            ReferenceMethod(settings) if settings.background.method == "reference" else None
        )

    async def own_model(self, stage: Stage, exposure: Exposure, *, note: str = "") -> Choice:
        """The exposure's own 2-D model."""
        coverage = (
            await stage("background", coverage_mask, exposure, self._coverage_bits)
            if self._coverage_bits
            else None
        )
        model: BackgroundResult = await stage(
            "background", model_exposure_background, exposure, coverage_mask=coverage,
            **self.model_params,
        )  # fmt: skip
        return Choice(
            method="model", background=model, level=model.level, rms=model.rms_level,
            params=dict(model.params), notes=[note] if note else [],
        )  # fmt: skip

    # -- stack ------------------------------------------------------------------------

    def stack_depth(self, key: str) -> int:
        """Members in the key's stack now."""
        stack = self._store.state(key).stack
        return stack.depth if stack is not None else 0

    def _publish_stack(self, state: KeyState) -> None:
        stack = state.stack
        if stack is None:
            return
        self._metrics.stack_depth.labels(state.key).set(stack.depth)
        self._metrics.stack_bytes.labels(state.key).set(stack.nbytes)
        oldest = min((stack.obs_time(m) for m in stack.member_ids), default=time.time())
        self._metrics.stack_age.labels(state.key).set(max(time.time() - oldest, 0.0))

    async def absorb(
        self, stage: Stage, key: str, member_id: str, exposure: Exposure, path: str,
        obs_time: float,
    ) -> int:  # fmt: skip
        """Add a background exposure to its key's stack; return the new depth.

        Raises
        ------
        ValueError
            If it does not fit the stack (shape), with the reason.
        """
        state = self._store.state(key)
        async with state.lock:
            evicted = await stage(
                "combine", self._store.add_member, state, member_id, exposure, path, obs_time
            )
            await self._retrier.call(
                STATE_FOLDER, lambda: stage("write", self._store.save_stack, state)
            )
            if self._on_stack_saved is not None:
                await self._on_stack_saved(key, self._store.membership(state))
            for gone in evicted:
                log.info("stack %s: %s left (stack full)", key, gone)
            self._publish_stack(state)
            return state.stack.depth if state.stack else 0

    async def from_stack(
        self, stage: Stage, key: str, exposure: Exposure, obs_time: float
    ) -> Choice | None:
        """The combined stack for a science exposure, or None when it is too small."""
        settings = self._settings.background.stack
        state = self._store.state(key)
        async with state.lock:
            for gone in self._store.expire(state, obs_time):
                log.info("stack %s: %s expired (older than %g s)", key, gone,
                         settings.max_age_seconds)  # fmt: skip
            stack = state.stack
            if stack is None or stack.depth < settings.min_members:
                return None
            if stack.shape != exposure.image_shape:
                log.warning(
                    "stack %s holds %s frames but the science exposure is %s: stack not used",
                    key,
                    stack.shape,
                    exposure.image_shape,
                )
                return None
            combined: Exposure = await stage("combine", stack.combined)
            members = stack.member_ids
            self._publish_stack(state)
        finite = combined.sci[np.isfinite(combined.sci)]
        return Choice(
            method="stack", background=combined,
            level=float(np.median(finite)) if finite.size else 0.0, rms=None,
            params={"combine": settings.combine, "members": len(members)},
            inputs=members,
        )  # fmt: skip

    def may_wait(self) -> bool:
        """Whether science exposures may have to wait for their stack (method and policy)."""
        return (
            self._settings.background.method == "stack"
            and self._settings.background.stack.when_insufficient == "wait"
        )

    def must_wait(self, key: str, obs_time: float) -> bool:
        """Whether a science exposure of ``key`` observed at ``obs_time`` must wait (be parked).

        It waits while fewer than ``min_members`` members would be usable for it: members
        older than ``max_age_seconds`` at its observation time do not count, exactly as
        `from_stack` drops them — so parking depends on the data, not on what happened to
        be in memory (a restart, a crash).
        """
        return self.may_wait() and self.usable_depth(key, obs_time) < (
            self._settings.background.stack.min_members
        )

    def usable_depth(self, key: str, obs_time: float) -> int:
        """Members of the key's stack not too old for an exposure observed at ``obs_time``."""
        stack = self._store.state(key).stack
        if stack is None:
            return 0
        max_age = self._settings.background.stack.max_age_seconds
        if max_age is None:
            return stack.depth
        return sum(obs_time - stack.obs_time(m) <= max_age for m in stack.member_ids)

    def kind(self, event: ExposureEvent, header: Header) -> str:
        """``background`` or ``science``; only the stack method uses background frames."""
        if self._settings.background.method != "stack":
            return "science"
        return exposure_kind(event, header, self._settings.routing.background_when)

    async def choose(
        self, stage: Stage, event: ExposureEvent, key: str, exposure: Exposure, obs_time: float
    ) -> Choice:
        """The background of a science exposure under the configured method and policy.

        With the stack method, a stack with fewer than ``min_members`` falls back to
        ``when_insufficient`` (or, for ``wait``, to ``after_wait`` once waiting is over).
        """
        method = self._settings.background.method
        if method == "model":
            return await self.own_model(stage, exposure)
        if method == "rolling-sky":
            return await self.rolling_sky(stage, key, event.exposure_id, exposure)
        if method == "reference":
            return await self.reference(stage, exposure)
        settings = self._settings.background.stack
        choice = await self.from_stack(stage, key, exposure, obs_time)
        if choice is not None:
            return choice
        fallback = (
            settings.after_wait
            if settings.when_insufficient == "wait"
            else settings.when_insufficient
        )
        reason = f"stack {key} has fewer than {settings.min_members} usable member(s)"
        if fallback == "model":
            return await self.own_model(stage, exposure, note=f"{reason}: own model")
        return Choice(method="stack", background=None, level=None, rms=None, notes=[reason])

    # -- reference --------------------------------------------------------------------

    async def reference(self, stage: Stage, exposure: Exposure) -> Choice:
        """The exposure's reference background file, scaled (fixed or fitted)."""
        if self._reference is None:  # pragma: no cover - made for the reference method
            raise RuntimeError("the reference method is not configured")
        scaled: ScaledReference = await stage("background", self._reference.scaled, exposure)
        return Choice(
            method="reference", background=scaled.background, level=scaled.level, rms=None,
            params=scaled.params, notes=scaled.notes, subtract=scaled.subtract,
        )  # fmt: skip

    # -- rolling sky ------------------------------------------------------------------

    async def rolling_sky(
        self, stage: Stage, key: str, exposure_id: str, exposure: Exposure
    ) -> Choice:
        """The normalised sky of recent frames of the key, scaled to this frame."""
        settings = self._settings.background.rolling_sky
        own = await self.own_model(stage, exposure)
        model = own.background
        if not isinstance(model, BackgroundResult):  # pragma: no cover - own_model's type
            raise TypeError("own model must be a BackgroundResult")
        state = self._store.state(key)
        async with state.lock:
            others = [(m, s) for m, s in state.sky if m != exposure_id]
            member = await stage("combine", sky_member, model)
            choice = own
            if len(others) >= settings.min_members:
                try:
                    sky: BackgroundResult = await stage(
                        "combine", rolling_sky_background, model, [s for _, s in others],
                        **rolling_sky_parameters(settings),
                    )  # fmt: skip
                    choice = Choice(
                        method="rolling-sky", background=sky, level=sky.level,
                        rms=sky.rms_level, params=dict(sky.params),
                        inputs=[m for m, _ in others],
                    )  # fmt: skip
                except ValueError as exc:
                    choice.notes.append(f"rolling sky not usable ({exc}): own model used")
            else:
                choice.notes.append(
                    f"rolling sky has {len(others)} other frame(s) < min_members "
                    f"{settings.min_members}: own model used"
                )
            self._store.add_sky(state, exposure_id, member)
            await self._retrier.call(
                STATE_FOLDER, lambda: stage("write", self._store.save_sky, state)
            )
        return choice
