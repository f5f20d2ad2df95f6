"""The service: wires a source, lanes, the pipeline, sinks, state and metrics together."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CollectorRegistry

from daemon.app.settings import Settings
from daemon.errors import InvalidInput
from daemon.events import ProductEvent, SkyMatchEvent
from daemon.fileio.products import DirectorySink
from daemon.fileio.quarantine import Quarantine
from daemon.flow.lanes import Lanes
from daemon.flow.pipeline import Pipeline
from daemon.intake.delivery import Source
from daemon.intake.directory import DirectorySource
from daemon.intake.ledger import Ledger
from daemon.kafka.options import client_options
from daemon.kafka.publisher import EventPublisher
from daemon.kafka.source import KafkaSource
from daemon.kafka.state_topic import SKYMATCH_PREFIX, STACK_PREFIX, StateTopic
from daemon.ops.health import HealthServer
from daemon.ops.metrics import Metrics
from daemon.state.lock import StateFolderLock
from daemon.state.skymatch_groups import SkyMatchGroups
from daemon.state.stacks import StackStore
from processors import warm_up

__all__ = ["Service"]

log = logging.getLogger("skystream.service")


class Service:
    """One skystream process: consume a source until stopped (or until a finite source ends).

    Parameters
    ----------
    settings : Settings
        Validated settings with absolute paths.
    registry : CollectorRegistry, optional
        Metrics registry; a fresh one by default.
    source : Source, optional
        Where exposures come from; the configured folder by default.
    on_product : callable, optional
        Called with each finished `ProductEvent`.

    Examples
    --------
    ``asyncio.run(Service(load_settings()).run())`` runs the daemon until
    `request_stop` is called (the CLI wires SIGTERM and SIGINT to it).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        source: Source | None = None,
        on_product: Callable[[ProductEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics(registry if registry is not None else CollectorRegistry())
        self._source_override = source
        self._on_product = on_product
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._warm = asyncio.Event()
        self.source: Source | None = None
        self.lanes: Lanes | None = None
        self.health: HealthServer | None = None
        self._ledger: Ledger | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def request_stop(self) -> None:
        """Ask the service to drain in-flight work and stop (signal-handler safe)."""
        if not self._stop.is_set():
            log.info("stop requested: finishing in-flight exposures")
        self._stop.set()

    async def wait_started(self) -> None:
        """Wait until the source is running and the health port is bound."""
        await self._started.wait()

    def readiness(self) -> tuple[bool, list[str]]:
        """Whether the service can take work, and if not, why."""
        reasons = []
        if not self._started.is_set():
            reasons.append("starting (warming up the numerical kernels)")
        if self.source is None or not self.source.connected:
            reasons.append("source not connected")
        if self.lanes is not None and self.lanes.saturated:
            reasons.append(f"lanes saturated: {', '.join(self.lanes.saturated)}")
        if self._stop.is_set():
            reasons.append("stopping")
        return not reasons, reasons

    async def run(self) -> None:
        """Run until `request_stop`, or until a finite source is exhausted and drained."""
        with StateFolderLock(self.settings.state.directory):  # one owner per state folder
            await self._run()

    async def _run(self) -> None:
        settings = self.settings
        pool = ThreadPoolExecutor(settings.workers.threads, thread_name_prefix="skystream-worker")
        sink = DirectorySink(settings.output)
        quarantine = Quarantine(
            settings.quarantine.directory,
            move=settings.quarantine.move,
            fsync=settings.output.fsync,
        )
        loop = asyncio.get_running_loop()

        async def in_pool(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return await loop.run_in_executor(pool, functools.partial(func, *args, **kwargs))

        kafka = settings.source.kafka
        consumes = self._source_override is None and settings.source.kind == "kafka"
        options: dict[str, Any] = {}
        publisher = state_topic = None
        if consumes or settings.output.product_topic or settings.output.skymatch_topic:
            options = client_options(kafka)
            publisher = EventPublisher(options, self.metrics)
            if consumes and kafka.state_topic:
                state_topic = StateTopic(kafka.state_topic, publisher, options)
        groups = (
            SkyMatchGroups(
                settings.skymatch,
                output=settings.output.directory,
                state=settings.state.directory,
                metrics=self.metrics,
                in_pool=in_pool,
                fsync=settings.output.fsync,
                on_closed=self._skymatch_publisher(publisher),
                on_state=_state_sink(state_topic, SKYMATCH_PREFIX),
            )
            if settings.skymatch.enabled
            else None
        )
        store = StackStore(
            settings.state.directory,
            settings.background.stack,
            settings.background.rolling_sky,
            fsync=settings.output.fsync,
        )
        pipeline = Pipeline(
            settings,
            pool=pool,
            sink=sink,
            quarantine=quarantine,
            store=store,
            metrics=self.metrics,
            skymatch=groups,
            publisher=publisher,
            on_product=self._on_product,
            on_stack_saved=_state_sink(state_topic, STACK_PREFIX),
        )
        self.lanes = Lanes(
            pipeline.process, queue_size=settings.lanes.queue_size, metrics=self.metrics
        )
        if self._source_override is not None:
            self.source = self._source_override
        elif consumes and publisher is not None:
            takeover = (
                functools.partial(_take_over, state_topic, store, groups)
                if state_topic is not None
                else None
            )
            self.source = KafkaSource(
                kafka, options, self.metrics, publisher, on_assigned=takeover
            )
        else:
            self._ledger = Ledger(settings.state.directory / "ledger.sqlite")
            self.source = DirectorySource(settings.source.directory, self._ledger, self.metrics)
        if settings.metrics.enabled:
            self.health = HealthServer(
                self.metrics,
                self.readiness,
                self._warm.is_set,
                host=settings.metrics.host,
                port=settings.metrics.port,
            )
        dispatcher: asyncio.Task[None] | None = None
        try:
            if self.health is not None:
                await self.health.start()
            # Compile (or load) the numerical kernels before taking work; /healthz answers
            # meanwhile and /readyz says why it is not ready.
            await asyncio.to_thread(warm_up)
            await asyncio.to_thread(store.restore)
            if groups is not None:
                await asyncio.to_thread(groups.restore)
            self._warm.set()
            if not await self._connect(publisher, self.source):
                return
            if groups is not None:
                self._tasks.append(asyncio.create_task(self._close_idle(groups), name="skymatch"))
            self._started.set()
            dispatcher = asyncio.create_task(
                self._dispatch(self.source, self.lanes, pipeline), name="dispatcher"
            )
            await self._until_done(dispatcher, self.lanes)
        finally:
            await self._shutdown(dispatcher, pool, pipeline)

    async def _connect(self, publisher: EventPublisher | None, source: Source) -> bool:
        """Start the producer and the source; False if a stop came first (brokers down)."""

        async def connect() -> None:
            if publisher is not None:
                await publisher.start()
                self._closers.append(publisher.stop)
            await source.start()

        connecting = asyncio.create_task(connect(), name="connect")
        stop = asyncio.create_task(self._stop.wait(), name="stop-signal")
        await asyncio.wait({connecting, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            return False
        connecting.result()
        return True

    @staticmethod
    async def _dispatch(source: Source, lanes: Lanes, pipeline: Pipeline) -> None:
        async for delivery in source.deliveries():
            try:
                key = await pipeline.route(delivery)
            except InvalidInput as exc:
                await pipeline.reject(delivery, exc)
                continue
            except Exception as exc:
                log.exception("cannot route %s", delivery.event.uri)
                await pipeline.reject(
                    delivery, InvalidInput("processing_error", f"{type(exc).__name__}: {exc}")
                )
                continue
            await lanes.put(key, delivery)

    async def _until_done(self, dispatcher: asyncio.Task[None], lanes: Lanes) -> None:
        stop = asyncio.create_task(self._stop.wait(), name="stop-signal")
        try:
            await asyncio.wait({dispatcher, stop}, return_when=asyncio.FIRST_COMPLETED)
            if dispatcher.done():
                dispatcher.result()  # a finite source ended (or the dispatcher failed)
                drained = asyncio.create_task(lanes.join(), name="drain")
                await asyncio.wait({drained, stop}, return_when=asyncio.FIRST_COMPLETED)
                drained.cancel()
        finally:
            stop.cancel()

    def _skymatch_publisher(
        self, publisher: EventPublisher | None
    ) -> Callable[[SkyMatchEvent], Awaitable[None]] | None:
        topic = self.settings.output.skymatch_topic
        if publisher is None or not topic:
            return None

        async def publish(table: SkyMatchEvent) -> None:
            await publisher.publish(topic, table.model_dump_json(by_alias=True).encode(),
                                    table.group)  # fmt: skip

        return publish

    async def _close_idle(self, groups: SkyMatchGroups) -> None:
        period = min(5.0, self.settings.skymatch.close_after_seconds / 4)
        while True:
            await asyncio.sleep(period)
            await groups.close_idle()

    async def _shutdown(
        self, dispatcher: asyncio.Task[None] | None, pool: ThreadPoolExecutor, pipeline: Pipeline
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if dispatcher is not None:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
        if self.lanes is not None:
            dropped = await self.lanes.stop(self.settings.shutdown.grace_seconds)
            if dropped:
                log.info("%d queued exposure(s) left for the next start", dropped)
        waiting = await pipeline.cancel_waiting()
        if waiting:
            log.info("%d exposure(s) waiting for a stack left for the next start", waiting)
        # Last, so that the source records (commits) what the drain above finished.
        if self.source is not None:
            await self.source.stop()
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        for close in reversed(self._closers):
            await close()
        if self.health is not None:
            await self.health.stop()
        if self._ledger is not None:
            self._ledger.close()
        log.info("stopped")


def _state_sink(
    state_topic: StateTopic | None, prefix: str
) -> Callable[[str, dict[str, Any] | None], Awaitable[None]] | None:
    """Publishes a stack's or group's record under ``prefix + name`` (None: no state topic)."""
    if state_topic is None:
        return None

    async def share(name: str, record: dict[str, Any] | None) -> None:
        await state_topic.publish(prefix + name, record)

    return share


async def _take_over(
    state_topic: StateTopic, store: StackStore, groups: SkyMatchGroups | None, _new: object
) -> None:
    """Rebuild the stacks and groups other replicas published, before new partitions flow."""
    records = await state_topic.read()
    for name, record in records.items():
        if name.startswith(STACK_PREFIX):
            state = store.state(name[len(STACK_PREFIX) :])
            async with state.lock:
                await asyncio.to_thread(store.adopt, state, record)
        elif name.startswith(SKYMATCH_PREFIX) and groups is not None:
            await asyncio.to_thread(groups.adopt, record)
