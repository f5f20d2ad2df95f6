"""One exposure through the stages: read, choose the background, subtract, write, ack."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from daemon.app.settings import Settings
from daemon.errors import InvalidInput
from daemon.events import ProductEvent
from daemon.fileio.fits_io import read_exposure, read_primary_header, write_exposure
from daemon.fileio.products import DirectorySink
from daemon.fileio.quarantine import Quarantine
from daemon.flow.backgrounds import Choice, Chooser, OnStackSaved
from daemon.intake.delivery import RETRY, Delivery
from daemon.intake.kinds import exposure_kind, observation_time
from daemon.kafka.publisher import EventPublisher
from daemon.ops.metrics import Metrics
from daemon.state.skymatch_groups import SkyMatchGroups
from daemon.state.stacks import StackStore
from processors import (
    Exposure,
    NoValidPixelsError,
    __version__,
    skip_background,
    subtract_background,
)

__all__ = ["Pipeline", "stack_key_of"]

log = logging.getLogger("skystream.pipeline")
T = TypeVar("T")


def stack_key_of(header: Any, keys: list[str]) -> str:
    """The stack key of a header: the configured keyword values joined by ``/``."""
    return "/".join(str(header.get(key, "-")).strip() or "-" for key in keys)


class Pipeline:
    """Runs the stages of one exposure in worker threads and settles its outcome.

    Every delivery ends acknowledged exactly once — ``complete`` or ``skipped`` (product
    durable), ``background`` (absorbed into its stack, state durable) or ``quarantined``
    (reason written) — unless the service stops first, in which case it stays
    unacknowledged and its source delivers it again later.

    Parameters
    ----------
    settings : Settings
        Background method and parameters, input rules.
    pool : Executor
        Bounded worker pool for CPU and file work.
    sink : DirectorySink
        Product writer.
    quarantine : Quarantine
        Where bad input goes.
    store : StackStore
        Stacks and sky templates per stack key.
    metrics : Metrics
        Counters, stage timings, latency, levels.
    skymatch : SkyMatchGroups, optional
        Mosaic groups that products join (when sky matching is enabled).
    publisher : EventPublisher, optional
        Kafka producer; product events go to ``settings.output.product_topic`` and are
        acknowledged by the brokers before the input is.
    on_stack_saved : callable, optional
        Awaited with a stack's membership after each durable change (the state topic).
    on_product : callable, optional
        Called with each `ProductEvent` (the demo's progress display).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        pool: Executor,
        sink: DirectorySink,
        quarantine: Quarantine,
        store: StackStore,
        metrics: Metrics,
        skymatch: SkyMatchGroups | None = None,
        publisher: EventPublisher | None = None,
        on_product: Callable[[ProductEvent], None] | None = None,
        on_stack_saved: OnStackSaved | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._sink = sink
        self._quarantine = quarantine
        self._metrics = metrics
        self._on_product = on_product
        self._chooser = Chooser(settings, store, metrics, on_stack_saved=on_stack_saved)
        self._skymatch = skymatch
        self._publisher = publisher
        self._waiting: set[asyncio.Task[None]] = set()

    async def _in_pool(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(func, *args, **kwargs))

    async def _stage(
        self, timings: dict[str, float], name: str, func: Callable[..., T], *args: Any,
        **kwargs: Any,
    ) -> T:  # fmt: skip
        start = time.perf_counter()
        result = await self._in_pool(func, *args, **kwargs)
        elapsed = time.perf_counter() - start
        timings[name] = round(timings.get(name, 0.0) + elapsed, 6)
        self._metrics.stage_seconds.labels(name).observe(elapsed)
        return result

    async def route(self, delivery: Delivery) -> str:
        """The stack key of a delivery, read from its header (InvalidInput if unreadable)."""
        if delivery.problem is not None:
            raise delivery.problem
        header = await self._in_pool(read_primary_header, delivery.event.path)
        return stack_key_of(header, self._settings.routing.stack_key)

    async def process(self, delivery: Delivery, key: str) -> None:
        """Process one delivery on lane ``key`` and acknowledge its outcome."""
        self._metrics.inflight.inc()
        try:
            timings: dict[str, float] = {}
            try:
                if delivery.may_repeat and await self._announce_existing(delivery, key):
                    return
                exposure = await self._read(delivery, timings)
                kind = self._kind(delivery, exposure)
                if kind == "background":
                    await self._absorb(delivery, key, exposure, timings)
                    return
                if self._must_wait(key):
                    # Waiting must not block the lane: the backgrounds it waits for are
                    # queued behind it.
                    task = asyncio.create_task(self._settle(delivery, key, exposure, timings))
                    self._waiting.add(task)
                    task.add_done_callback(self._waiting.discard)
                    return
                await self._settle(delivery, key, exposure, timings)
            except InvalidInput as exc:
                await self.reject(delivery, exc)
            except OSError as exc:
                await self._release(delivery, exc)
        finally:
            self._metrics.inflight.dec()

    async def _announce_existing(self, delivery: Delivery, key: str) -> bool:
        """Re-announce the product of an input delivered again; True if there was one.

        Redelivery after a crash or a rebalance then publishes the very event published
        before, instead of a recomputed one with other timings.
        """
        summary = await self._in_pool(self._sink.existing_summary, delivery.event)
        if summary is None:
            return False
        await self._publish_product(summary, key)
        outcome = "skipped" if summary.status == "SKIPPED" else "complete"
        log.info("%s was already processed: its product event is published again",
                 delivery.event.path.name)  # fmt: skip
        await delivery.acknowledge(outcome, summary.product_uri)
        self._metrics.processed.labels("duplicate").inc()
        return True

    async def _publish_product(self, summary: ProductEvent, key: str) -> None:
        topic = self._settings.output.product_topic
        if self._publisher is not None and topic:
            # Canonical JSON (sorted keys), so an event announced again from the sidecar is
            # byte-identical to the first.
            document = summary.model_dump(mode="json", by_alias=True)
            payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
            await self._publisher.publish(topic, payload, key)

    async def _release(self, delivery: Delivery, exc: OSError) -> None:
        """Hand a delivery back unfinished; its source delivers it again later.

        For state that could not be saved (disk full, folder gone): not the input's fault.
        """
        log.error("%s: %s; handed back for a retry", delivery.event.path.name, exc)
        self._metrics.processed.labels(RETRY).inc()
        await delivery.acknowledge(RETRY, None)

    async def cancel_waiting(self) -> int:
        """Abandon science exposures still waiting for a stack (they stay unacknowledged)."""
        tasks = list(self._waiting)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return len(tasks)

    async def reject(self, delivery: Delivery, exc: InvalidInput) -> None:
        """Quarantine a delivery with its reason, count it and acknowledge it."""
        await self._in_pool(
            self._quarantine.put,
            delivery.event.path,
            reason=exc.reason,
            detail=exc.detail,
            source=delivery.source,
        )
        self._metrics.quarantined.labels(exc.reason).inc()
        self._metrics.processed.labels("quarantined").inc()
        await delivery.acknowledge("quarantined", None)

    # -- stages ---------------------------------------------------------------------------

    async def _read(self, delivery: Delivery, timings: dict[str, float]) -> Exposure:
        path = delivery.event.path
        try:
            return await self._stage(
                timings, "read", read_exposure, path,
                allow_cubes=self._settings.input.allow_cubes,
            )  # fmt: skip
        except InvalidInput:
            raise
        except Exception as exc:
            log.exception("cannot read %s", path.name)
            raise InvalidInput("processing_error", f"{type(exc).__name__}: {exc}") from exc

    def _kind(self, delivery: Delivery, exposure: Exposure) -> str:
        if self._settings.background.method != "stack":
            return "science"  # only the stack method uses dedicated background frames
        return exposure_kind(
            delivery.event, exposure.header, self._settings.routing.background_when
        )

    def _must_wait(self, key: str) -> bool:
        stack_settings = self._settings.background.stack
        if self._settings.background.method != "stack":
            return False
        if stack_settings.when_insufficient != "wait":
            return False
        return self._chooser.stack_depth(key) < stack_settings.min_members

    async def _absorb(
        self, delivery: Delivery, key: str, exposure: Exposure, timings: dict[str, float]
    ) -> None:
        event = delivery.event
        obs_time = observation_time(event, exposure.header, time.time())
        stage = functools.partial(self._stage, timings)
        try:
            depth = await self._chooser.absorb(
                stage, key, event.exposure_id, exposure, str(event.path), obs_time
            )
        except ValueError as exc:
            self._metrics.members_rejected.labels("shape").inc()
            raise InvalidInput("stack_mismatch", f"{event.path.name}: {exc}") from exc
        log.info("%s joined stack %s (%d member(s))", event.path.name, key, depth)
        await delivery.acknowledge("background", None)
        self._metrics.processed.labels("background").inc()

    async def _choose(
        self, delivery: Delivery, key: str, exposure: Exposure, timings: dict[str, float]
    ) -> Choice:
        method = self._settings.background.method
        stage = functools.partial(self._stage, timings)
        if method == "model":
            return await self._chooser.own_model(stage, exposure)
        if method == "rolling-sky":
            return await self._chooser.rolling_sky(
                stage, key, delivery.event.exposure_id, exposure
            )
        settings = self._settings.background.stack
        obs_time = observation_time(delivery.event, exposure.header, time.time())
        if settings.when_insufficient == "wait":
            choice = await self._chooser.wait_for_stack(stage, key, exposure, obs_time)
            fallback = settings.after_wait
        else:
            choice = await self._chooser.from_stack(stage, key, exposure, obs_time)
            fallback = settings.when_insufficient
        if choice is not None:
            return choice
        reason = f"stack {key} has fewer than {settings.min_members} usable member(s)"
        if fallback == "model":
            return await self._chooser.own_model(stage, exposure, note=f"{reason}: own model")
        return Choice(method="stack", background=None, level=None, rms=None, notes=[reason])

    async def _settle(
        self, delivery: Delivery, key: str, exposure: Exposure, timings: dict[str, float]
    ) -> None:
        """Choose the background, subtract, write the product and acknowledge."""
        try:
            await self._settle_once(delivery, key, exposure, timings)
        except OSError as exc:
            await self._release(delivery, exc)

    async def _settle_once(
        self, delivery: Delivery, key: str, exposure: Exposure, timings: dict[str, float]
    ) -> None:
        event = delivery.event
        try:
            try:
                choice = await self._choose(delivery, key, exposure, timings)
                if choice.background is None:
                    product = skip_background(
                        exposure, method=choice.method, reason="; ".join(choice.notes)
                    )
                else:
                    product = await self._stage(
                        timings, "subtract", subtract_background, exposure,
                        choice.background, errors=self._settings.background.errors,
                        method=choice.method, inputs=choice.inputs,
                    )  # fmt: skip
            except NoValidPixelsError as exc:
                raise InvalidInput("no_valid_pixels", f"{event.path.name}: {exc}") from exc
            except (InvalidInput, OSError):
                raise
            except Exception as exc:
                log.exception("processing failed for %s", event.path.name)
                raise InvalidInput("processing_error", f"{type(exc).__name__}: {exc}") from exc
        except InvalidInput as exc:
            await self.reject(delivery, exc)
            return
        background_uri = None
        if (
            choice.method == "stack"
            and isinstance(choice.background, Exposure)
            and self._settings.background.stack.save_combined
        ):
            target = self._sink.combined_background_path(event.exposure_id)
            await self._stage(timings, "write", write_exposure, choice.background, target,
                              fsync=self._settings.output.fsync)  # fmt: skip
            background_uri = str(target)
        status = "SKIPPED" if choice.background is None else "COMPLETE"
        summary = ProductEvent(
            exposure_id=event.exposure_id,
            input_uri=str(event.path),
            product_uri=str(self._sink.product_path(event.exposure_id)),
            status=status,
            method=choice.method,
            stack_key=key,
            background_level=choice.level,
            background_rms=choice.rms,
            background_params=choice.params,
            background_uri=background_uri,
            notes=choice.notes,
            errors=self._settings.background.errors,
            inputs_used=choice.inputs or [event.exposure_id],
            shape=list(exposure.shape),
            timings=timings,
            software_version=__version__,
            produced_at=datetime.now(UTC),
        )
        summary = await self._write_with_retry(product, summary, timings)
        path = Path(summary.product_uri)
        if choice.level is not None:
            self._metrics.background_level.labels(key).set(choice.level)
        if choice.rms is not None:
            self._metrics.background_rms.labels(key).set(choice.rms)
        log.info(
            "%s -> %s  %s %s level %s  (%s)",
            event.path.name,
            path.name,
            status,
            choice.method,
            "n/a" if choice.level is None else f"{choice.level:.3f}",
            " ".join(f"{stage} {seconds * 1000:.0f} ms" for stage, seconds in timings.items()),
        )
        for note in choice.notes:
            log.info("%s: %s", event.path.name, note)
        if self._skymatch is not None:
            group = self._skymatch.group_of(event, product.header)
            if group is not None:
                last = self._skymatch.is_last(event, product.header)
                await self._skymatch.add(group, event.exposure_id, str(path), product, last)
        await self._publish_product(summary, key)
        outcome = "skipped" if status == "SKIPPED" else "complete"
        await delivery.acknowledge(outcome, str(path))
        self._metrics.processed.labels(outcome).inc()
        self._metrics.latency_seconds.observe(time.monotonic() - delivery.arrived)
        if self._on_product is not None:
            self._on_product(summary)

    async def _write_with_retry(
        self, product: Exposure, summary: ProductEvent, timings: dict[str, float]
    ) -> ProductEvent:
        """Write, retrying with jittered backoff until it succeeds or the service stops.

        A full, read-only or unwritable output folder is for an operator to fix; nothing
        is acknowledged meanwhile.
        """
        delay = 0.5
        while True:
            try:
                return await self._stage(timings, "write", self._sink.write, product, summary)
            except OSError as exc:
                # The cause is in the message; a traceback per retry would drown the log.
                log.error(  # noqa: TRY400
                    "cannot write %s (%s); retrying in %.1f s",
                    summary.product_uri,
                    exc.strerror,
                    delay,
                )
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)
