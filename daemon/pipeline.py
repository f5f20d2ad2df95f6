"""One exposure through the stages: read, model the background, subtract, write, ack."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from daemon.errors import InvalidInput
from daemon.events import ProductEvent
from daemon.fits_io import read_exposure, read_primary_header
from daemon.metrics import Metrics
from daemon.quarantine import Quarantine
from daemon.settings import Settings
from daemon.sinks.files import DirectorySink
from daemon.sources import Delivery
from processors import (
    BackgroundResult,
    Exposure,
    NoValidPixelsError,
    __version__,
    model_exposure_background,
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

    Every delivery ends acknowledged exactly once, as ``complete`` (product durable) or
    ``quarantined`` (reason written), unless the service stops first, in which case it
    stays unacknowledged and its source delivers it again later.

    Parameters
    ----------
    settings : Settings
        Background parameters and input rules.
    pool : Executor
        Bounded worker pool for CPU and file work.
    sink : DirectorySink
        Product writer.
    quarantine : Quarantine
        Where bad input goes.
    metrics : Metrics
        Counters, stage timings, latency, levels.
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
        metrics: Metrics,
        on_product: Callable[[ProductEvent], None] | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._sink = sink
        self._quarantine = quarantine
        self._metrics = metrics
        self._on_product = on_product
        bkg = settings.background
        self._params: dict[str, Any] = {
            "box_size": bkg.box_size,
            "filter_size": bkg.filter_size,
            "sigma_low": bkg.sigma_low,
            "sigma_high": bkg.sigma_high,
            "maxiters": bkg.maxiters,
            "estimator": bkg.estimator,
            "exclude_percentile": bkg.exclude_percentile,
            "filter_threshold": bkg.filter_threshold,
            "cenfunc": bkg.cenfunc,
            "engine": bkg.engine,
            "bin_size": bkg.bin_size,
            "order": bkg.order,
            "weighting": bkg.weighting,
        }

    async def _in_pool(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: func(*args, **kwargs))

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
            try:
                product = await self._produce(delivery, key)
            except InvalidInput as exc:
                await self.reject(delivery, exc)
                return
            await delivery.acknowledge("complete", product)
            self._metrics.processed.labels("complete").inc()
            self._metrics.latency_seconds.observe(time.monotonic() - delivery.arrived)
        finally:
            self._metrics.inflight.dec()

    async def reject(self, delivery: Delivery, exc: InvalidInput) -> None:
        """Quarantine a delivery with its reason, count it and acknowledge it."""
        path = delivery.event.path
        await self._in_pool(
            self._quarantine.put,
            path,
            reason=exc.reason,
            detail=exc.detail,
            source=delivery.source,
        )
        self._metrics.quarantined.labels(exc.reason).inc()
        self._metrics.processed.labels("quarantined").inc()
        await delivery.acknowledge("quarantined", None)

    async def _stage(self, name: str, timings: dict[str, float], func: Callable[..., T],
                     *args: Any, **kwargs: Any) -> T:  # fmt: skip
        start = time.perf_counter()
        result = await self._in_pool(func, *args, **kwargs)
        elapsed = time.perf_counter() - start
        timings[name] = round(elapsed, 6)
        self._metrics.stage_seconds.labels(name).observe(elapsed)
        return result

    async def _produce(self, delivery: Delivery, key: str) -> str:
        event = delivery.event
        settings = self._settings
        timings: dict[str, float] = {}
        try:
            exposure, model, product = await self._compute(event.path, timings)
        except InvalidInput:
            raise
        except NoValidPixelsError as exc:
            raise InvalidInput("no_valid_pixels", f"{event.path.name}: {exc}") from exc
        except Exception as exc:
            log.exception("processing failed for %s", event.path.name)
            raise InvalidInput("processing_error", f"{type(exc).__name__}: {exc}") from exc
        summary = ProductEvent(
            exposure_id=event.exposure_id,
            input_uri=str(event.path),
            product_uri=str(self._sink.product_path(event.exposure_id)),
            status="COMPLETE",
            method=settings.background.method,
            stack_key=key,
            background_level=model.level,
            background_rms=model.rms_level,
            background_params=dict(model.params),
            errors=settings.background.errors,
            inputs_used=[event.exposure_id],
            shape=list(exposure.shape),
            timings=timings,
            software_version=__version__,
            produced_at=datetime.now(UTC),
        )
        path = await self._write_with_retry(product, summary, timings)
        self._metrics.background_level.labels(key).set(model.level)
        self._metrics.background_rms.labels(key).set(model.rms_level)
        log.info(
            "%s -> %s  level %.3f rms %.3f  (%s)",
            event.path.name,
            path.name,
            model.level,
            model.rms_level,
            " ".join(f"{stage} {seconds * 1000:.0f} ms" for stage, seconds in timings.items()),
        )
        if self._on_product is not None:
            self._on_product(summary.model_copy(update={"timings": timings}))
        return str(path)

    async def _compute(
        self, path: Path, timings: dict[str, float]
    ) -> tuple[Exposure, BackgroundResult, Exposure]:
        settings = self._settings
        exposure: Exposure = await self._stage(
            "read", timings, read_exposure, path, allow_cubes=settings.input.allow_cubes
        )
        model: BackgroundResult = await self._stage(
            "background",
            timings,
            model_exposure_background,
            exposure,
            dqbits=settings.background.dqbits,
            **self._params,
        )
        product: Exposure = await self._stage(
            "subtract",
            timings,
            subtract_background,
            exposure,
            model,
            errors=settings.background.errors,
            method=settings.background.method,
        )
        return exposure, model, product

    async def _write_with_retry(
        self, product: Exposure, summary: ProductEvent, timings: dict[str, float]
    ) -> Path:
        """Write, retrying with jittered backoff until it succeeds or the service stops.

        A full, read-only or unwritable output folder is for an operator to fix; nothing
        is acknowledged meanwhile.
        """
        delay = 0.5
        while True:
            try:
                return await self._stage("write", timings, self._sink.write, product, summary)
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
