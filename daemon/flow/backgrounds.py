"""Choosing the background of a science exposure: own model, rolling stack or rolling sky."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daemon.app.parameters import model_parameters, rolling_sky_parameters
from daemon.app.settings import Settings
from daemon.ops.metrics import Metrics
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
Stage = Callable[..., Awaitable[Any]]
#: Receives a stack key and its membership record after every durable change.
OnStackSaved = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class Choice:
    """The background chosen for one science exposure.

    ``background`` is None when the exposure passes through unsubtracted (SKIPPED).
    """

    method: str
    background: BackgroundResult | Exposure | None
    level: float | None
    rms: float | None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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
    on_stack_saved : callable, optional
        Awaited with each stack's membership once saved (the Kafka state topic).
    """

    def __init__(
        self,
        settings: Settings,
        store: StackStore,
        metrics: Metrics,
        *,
        on_stack_saved: OnStackSaved | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._on_stack_saved = on_stack_saved
        self.model_params = model_parameters(settings.background)

    async def own_model(self, stage: Stage, exposure: Exposure, *, note: str = "") -> Choice:
        """The exposure's own 2-D model."""
        model: BackgroundResult = await stage(
            "background", model_exposure_background, exposure, **self.model_params
        )
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
        async with state.changed:
            evicted = await stage(
                "combine", self._store.add_member, state, member_id, exposure, path, obs_time
            )
            await stage("write", self._store.save_stack, state)
            if self._on_stack_saved is not None:
                await self._on_stack_saved(key, self._store.membership(state))
            for gone in evicted:
                log.info("stack %s: %s left (stack full)", key, gone)
            self._publish_stack(state)
            state.changed.notify_all()
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

    async def wait_for_stack(
        self, stage: Stage, key: str, exposure: Exposure, obs_time: float
    ) -> Choice | None:
        """Wait up to ``wait_seconds`` for the stack to become large enough, then use it."""
        settings = self._settings.background.stack
        state = self._store.state(key)
        deadline = time.monotonic() + settings.wait_seconds
        async with state.changed:
            while self.stack_depth(key) < settings.min_members:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.changed.wait(), remaining)
        return await self.from_stack(stage, key, exposure, obs_time)

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
            await stage("write", self._store.save_sky, state)
        return choice
