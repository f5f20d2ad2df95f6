"""One exposure through the stages: read, choose the background, subtract, write, ack."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any, TypeVar

from daemon.app.settings import Settings
from daemon.errors import INPUT_STORAGE, Fatal, InputChanged, InvalidInput
from daemon.events import ProductEvent, uri_of
from daemon.fileio.fits_io import read_exposure, read_primary_header, write_exposure
from daemon.fileio.products import DirectorySink
from daemon.fileio.quarantine import Quarantine
from daemon.fileio.saved_background import background_extensions
from daemon.flow.backgrounds import Choice, Chooser
from daemon.flow.router import INVALID_LANE
from daemon.intake.delivery import Delivery
from daemon.intake.kinds import observation_time
from daemon.kafka.publisher import EventPublisher
from daemon.ops.logs import log_context
from daemon.ops.metrics import Metrics
from daemon.ops.quicklooks import QuicklookJob, Quicklooks
from daemon.ops.worker_pool import run_in_pool
from daemon.retry import Retrier
from daemon.skymatch.stage import HandOff, mosaic_group
from processors import (
    Exposure,
    NoValidPixelsError,
    __version__,
    skip_background,
    subtract_background,
)

__all__ = ["Pipeline"]

log = logging.getLogger("skystream.pipeline")
T = TypeVar("T")

#: Conditions named in /readyz while an output cannot be written.
PRODUCTS_FOLDER = "products folder"
QUARANTINE_FOLDER = "quarantine folder"
LEDGER = "ledger"


class Pipeline:
    """Runs the stages of one exposure in worker threads and settles its outcome.

    Every delivery ends acknowledged exactly once — ``complete`` or ``skipped`` (product
    durable), ``background`` (absorbed into its stack, state durable) or ``quarantined``
    (reason written) — unless the service stops first, in which case it stays
    unacknowledged and its source delivers it again later. Writes that fail for a reason
    the world can clear (disk full, folder unwritable, database busy, brokers down) are
    retried in place with the service's one retry policy, so nothing is acknowledged
    until they succeed.

    Parameters
    ----------
    settings : Settings
        Input rules and output options.
    pool : Executor
        Bounded worker pool for CPU and file work.
    chooser : Chooser
        The background policy (methods, stacks, when to wait).
    sink : DirectorySink
        Product writer.
    quarantine : Quarantine
        Where bad input goes.
    metrics : Metrics
        Counters, stage timings, latency, levels.
    retrier : Retrier
        The retry policy.
    skymatch : callable, optional
        Hands each product of a mosaic group to the sky-matching stage (in this process, or
        through the mosaic topic in Kafka mode); None when sky matching is off.
    publisher : EventPublisher, optional
        Kafka producer; product events go to ``settings.output.product_topic`` and are
        acknowledged by the brokers before the input is.
    on_product : callable, optional
        Called with each `ProductEvent` (the demo's progress display).
    quicklooks : Quicklooks, optional
        Offered each finished product (``output.quicklook``); never waited for.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        pool: Executor,
        chooser: Chooser,
        sink: DirectorySink,
        quarantine: Quarantine,
        metrics: Metrics,
        retrier: Retrier,
        skymatch: HandOff | None = None,
        publisher: EventPublisher | None = None,
        on_product: Callable[[ProductEvent], None] | None = None,
        quicklooks: Quicklooks | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._chooser = chooser
        self._sink = sink
        self._quarantine = quarantine
        self._metrics = metrics
        self._retrier = retrier
        self._skymatch = skymatch
        self._publisher = publisher
        self._on_product = on_product
        self._parked: dict[Delivery, float] = {}  # parked science -> its observation time
        # The next delivery of a lane, read while the one before it is computed and written.
        self._prefetched: dict[Delivery, asyncio.Future[Exposure]] = {}
        self._quicklooks = quicklooks

    async def in_pool(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func`` in the worker pool (with this task's log fields)."""
        return await run_in_pool(self._pool, func, *args, **kwargs)

    async def _stage(
        self, timings: dict[str, float], name: str, func: Callable[..., T], *args: Any,
        **kwargs: Any,
    ) -> T:  # fmt: skip
        start = time.perf_counter()
        with log_context(stage=name):
            result = await self.in_pool(func, *args, **kwargs)
        elapsed = time.perf_counter() - start
        timings[name] = round(timings.get(name, 0.0) + elapsed, 6)
        self._metrics.stage_seconds.labels(name).observe(elapsed)
        return result

    def can_go(self, key: str, delivery: Delivery) -> bool:
        """Whether a delivery parked in lane ``key`` may go on (its stack is ready for it)."""
        obs_time = self._parked.get(delivery)
        return obs_time is None or not self._chooser.must_wait(key, obs_time)

    async def process(self, delivery: Delivery, key: str, may_park: bool) -> bool:
        """Process one delivery on lane ``key`` and acknowledge its outcome.

        Returns True, without settling it, when ``may_park`` and it is a science exposure
        that must wait for its stack: the lane parks it and hands it back when it may go.
        """
        stack_key = None if key == INVALID_LANE else key
        with log_context(exposure_id=delivery.event.exposure_id, stack_key=stack_key):
            return await self._process(delivery, key, may_park)

    async def _process(self, delivery: Delivery, key: str, may_park: bool) -> bool:
        self._metrics.inflight.inc()
        parked = False
        try:
            timings: dict[str, float] = {}
            if delivery.given_away():  # its partition moved on: the new owner processes it
                log.info("%s not processed: its source gave it away", delivery.event.path.name)
                delivery.abandon()
                return False
            if delivery.problem is not None:
                await self.reject(delivery, delivery.problem, key)
                return False
            try:
                if delivery.may_repeat and await self._announce_existing(delivery, key):
                    return False
                if may_park and self._chooser.may_wait():
                    obs_time = await self._science_time(delivery)
                    if obs_time is not None and self._chooser.must_wait(key, obs_time):
                        self._parked[delivery] = obs_time
                        parked = True
                        return True
                exposure = await self._read(delivery, timings)
                header = exposure.header
                if self._chooser.kind(delivery.event, header) == "background":
                    await self._absorb(delivery, key, exposure, timings)
                else:
                    await self._settle(delivery, key, exposure, timings)
            except InvalidInput as exc:
                await self.reject(delivery, exc, key)
            except Fatal:
                raise
            except Exception as exc:
                # The one place for the unexpected (reading, modelling, writing): past the
                # retry policy an error would only repeat, and retrying the delivery would
                # crash-loop the lane; quarantining it lets the stream go on.
                log.exception("processing failed for %s", delivery.event.path.name)
                problem = InvalidInput("processing_error", f"{type(exc).__name__}: {exc}")
                await self.reject(delivery, problem, key)
            return False
        finally:
            if not parked:
                self._parked.pop(delivery, None)
            early = self._prefetched.pop(delivery, None)
            if early is not None:  # not needed (parked, repeated, given away): let it go
                early.cancel()  # a read not started yet is not made at all
            self._metrics.inflight.dec()

    def prefetch(self, delivery: Delivery) -> None:
        """Start reading the exposure of the next delivery of a lane, in the worker pool.

        Its read then overlaps the delivery in hand; `process` takes the result (or, if
        the early read failed, reads again the ordinary way, retries and all). One early
        read per lane: a lane asks only for its next delivery.
        """
        if delivery.problem is not None or delivery in self._prefetched or delivery.given_away():
            return
        loop = asyncio.get_running_loop()
        early = loop.run_in_executor(
            self._pool,
            functools.partial(
                read_exposure, delivery.event.path,
                allow_cubes=self._settings.input.allow_cubes,
                max_bytes=self._settings.input.max_exposure_bytes,
            ),
        )  # fmt: skip
        # A failed early read is read again, or not needed at all: never an unseen error.
        early.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._prefetched[delivery] = early

    async def _science_time(self, delivery: Delivery) -> float | None:
        """Observation time of a science exposure from its primary header, else None.

        Cheap: no pixels are read to decide whether to park it.
        """
        try:
            header = await self._retrier.call(
                INPUT_STORAGE,
                lambda: self.in_pool(
                    read_primary_header,
                    delivery.event.path,
                    max_bytes=self._settings.input.max_exposure_bytes,
                ),
            )
        except InvalidInput:
            return None  # not parked: reading it properly quarantines it
        if self._chooser.kind(delivery.event, header) != "science":
            return None
        return observation_time(delivery.event, header, time.time())

    async def _announce_existing(self, delivery: Delivery, key: str) -> bool:
        """Re-announce the product of an input delivered again; True if there was one.

        Redelivery after a crash or a rebalance then publishes the very event published
        before, instead of a recomputed one with other timings.
        """
        summary = await self.in_pool(self._sink.existing_summary, delivery.event)
        if summary is None:
            return False
        await self._publish_product(summary, key)
        if self._skymatch is not None and summary.group is not None:
            await self._skymatch(summary, None)
        outcome = "skipped" if summary.status == "SKIPPED" else "complete"
        log.info("%s was already processed: its product event is published again",
                 delivery.event.path.name)  # fmt: skip
        await self._acknowledge(delivery, outcome, summary.product_uri)
        self._metrics.processed.labels("duplicate").inc()
        return True

    async def _publish_product(self, summary: ProductEvent, key: str) -> None:
        topic = self._settings.output.product_topic
        if self._publisher is not None and topic:
            await self._publisher.publish_product(topic, summary, key)

    async def _acknowledge(self, delivery: Delivery, outcome: str, product: str | None) -> None:
        """Acknowledge once the outcome is durable (the ledger write is retried in place)."""
        await self._retrier.call(LEDGER, lambda: delivery.acknowledge(outcome, product))

    async def reject(self, delivery: Delivery, exc: InvalidInput, key: str) -> None:
        """Quarantine a delivery with its reason, announce it FAILED, count it, acknowledge it.

        With a product topic, the quarantine is announced by a ``FAILED`` ProductEvent
        (reason and detail), so that a producer on Kafka sees what became of its exposure.
        An input that changed after its source took it goes back to a source that can take
        it back (a folder), unrefused.
        """
        if isinstance(exc, InputChanged) and delivery.retake is not None:
            log.info("%s changed after it was taken (%s): watched again",
                     delivery.event.path.name, exc.detail)  # fmt: skip
            delivery.retake()
            return
        with log_context(outcome="quarantined"):
            await self._retrier.call(
                QUARANTINE_FOLDER,
                lambda: self.in_pool(
                    self._quarantine.put,
                    delivery.event.path,
                    reason=exc.reason,
                    detail=exc.detail,
                    source=delivery.source,
                ),
            )
        stack_key = None if key == INVALID_LANE else key
        failed = ProductEvent.failed(
            delivery.event, exc.reason, exc.detail, software_version=__version__,
            stack_key=stack_key,
        )  # fmt: skip
        await self._publish_product(failed, stack_key or delivery.event.exposure_id)
        self._metrics.quarantined.labels(exc.reason).inc()
        self._metrics.processed.labels("quarantined").inc()
        await self._acknowledge(delivery, "quarantined", None)

    # -- stages ---------------------------------------------------------------------------

    async def _read(self, delivery: Delivery, timings: dict[str, float]) -> Exposure:
        """Read the input; a storage hiccup is retried, anything else makes it invalid."""
        path = delivery.event.path
        early = self._prefetched.pop(delivery, None)
        if early is not None:
            start = time.perf_counter()
            try:
                exposure = await early
            except Exception:  # read again below, with the retry policy and its reasons
                pass
            else:
                timings["read"] = round(time.perf_counter() - start, 6)  # the wait left
                self._metrics.stage_seconds.labels("read").observe(timings["read"])
                return exposure

        async def attempt() -> Exposure:
            return await self._stage(
                timings, "read", read_exposure, path,
                allow_cubes=self._settings.input.allow_cubes,
                max_bytes=self._settings.input.max_exposure_bytes,
            )  # fmt: skip

        return await self._retrier.call(INPUT_STORAGE, attempt)

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
        log.info("%s joined stack %s (%d member(s))", event.path.name, key, depth,
                 extra={"outcome": "background", "durations": timings})  # fmt: skip
        await self._acknowledge(delivery, "background", None)
        self._metrics.processed.labels("background").inc()

    async def _settle(
        self, delivery: Delivery, key: str, exposure: Exposure, timings: dict[str, float]
    ) -> None:
        """Choose the background, subtract, write the product and acknowledge."""
        event = delivery.event
        # A product name taken by another input is refused before any work is done (and
        # before a combined background of that name is written).
        await self.in_pool(self._sink.check_name, event.exposure_id, uri_of(event.path))
        obs_time = observation_time(event, exposure.header, time.time())
        stage = functools.partial(self._stage, timings)
        try:
            choice = await self._chooser.choose(stage, event, key, exposure, obs_time)
            product = await self._subtracted(exposure, choice, timings)
        except NoValidPixelsError as exc:
            raise InvalidInput("no_valid_pixels", f"{event.path.name}: {exc}") from exc
        await self._deliver(delivery, key, exposure, choice, product, timings)

    async def _subtracted(
        self, exposure: Exposure, choice: Choice, timings: dict[str, float]
    ) -> Exposure:
        if choice.subtract is not None:
            return await self._stage(timings, "subtract", choice.subtract, exposure)
        if choice.background is None:
            return skip_background(exposure, method=choice.method, reason="; ".join(choice.notes))
        # In place, the exposure's planes become the product's: only when no quicklook
        # will show the exposure as read beside it.
        return await self._stage(
            timings, "subtract", subtract_background, exposure, choice.background,
            errors=self._settings.background.errors, method=choice.method, inputs=choice.inputs,
            source_dq=self._chooser.source_dq, in_place=self._quicklooks is None,
            threads=self._settings.background.threads,
        )  # fmt: skip

    async def _deliver(
        self, delivery: Delivery, key: str, exposure: Exposure, choice: Choice,
        product: Exposure, timings: dict[str, float],
    ) -> None:  # fmt: skip
        """Write the product (and saved background), announce it, acknowledge the input."""
        event = delivery.event
        background_uri = None
        if (
            choice.method == "stack"
            and isinstance(choice.background, Exposure)
            and self._settings.background.stack.save_combined
        ):
            target = self._sink.combined_background_path(event.exposure_id)
            background = choice.background
            await self._retrier.call(
                PRODUCTS_FOLDER,
                lambda: self._stage(timings, "write", write_exposure, background, target,
                                    fsync=self._settings.output.fsync),
            )  # fmt: skip
            background_uri = event.uri_for(target)
        status = "SKIPPED" if choice.background is None else "COMPLETE"
        summary = ProductEvent(
            exposure_id=event.exposure_id,
            input_uri=uri_of(event.path),
            product_uri=event.uri_for(self._sink.product_path(event.exposure_id)),
            status=status,
            method=choice.method,
            stack_key=key,
            group=None
            if self._skymatch is None
            else mosaic_group(event, product.header, self._settings.skymatch.group_key),
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
        written = summary
        save = self._settings.output.save_background
        extensions = (
            await self.in_pool(background_extensions, choice.background, save)
            if save != "none"
            else []
        )
        summary = await self._retrier.call(
            PRODUCTS_FOLDER,
            lambda: self._stage(timings, "write", self._sink.write, product, written, extensions),
        )
        self._metrics.last_product_time.set(time.time())
        path = summary.product_path
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
            extra={"outcome": status.lower(), "durations": timings},
        )
        for note in choice.notes:
            log.info("%s: %s", event.path.name, note)
        await self._publish_product(summary, key)
        if self._skymatch is not None and summary.group is not None:
            await self._skymatch(summary, product)
        outcome = "skipped" if status == "SKIPPED" else "complete"
        await self._acknowledge(delivery, outcome, str(path))
        self._metrics.processed.labels(outcome).inc()
        self._metrics.latency_seconds.observe(time.monotonic() - delivery.arrived)
        if self._quicklooks is not None:
            self._quicklooks.offer(_quicklook_job(summary, exposure, choice, product))
        if self._on_product is not None:
            self._on_product(summary)


def _quicklook_job(
    summary: ProductEvent, exposure: Exposure, choice: Choice, product: Exposure
) -> QuicklookJob:
    """The quicklook of a product: its input, the background subtracted and the residual."""
    return QuicklookJob(
        exposure_id=summary.exposure_id,
        path=summary.product_path.with_suffix(".png"),
        input_image=exposure.sci,
        background=choice.background,
        residual=product.sci,
        method=choice.method,
        level=choice.level,
        rms=choice.rms,
    )
