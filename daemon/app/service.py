"""The service: wires a source, the router, lanes, the pipeline, sinks, state and metrics."""

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
from daemon.events import ProductEvent
from daemon.fileio.products import DirectorySink
from daemon.fileio.quarantine import Quarantine
from daemon.flow.backgrounds import Chooser
from daemon.flow.lanes import Lanes
from daemon.flow.pipeline import Pipeline
from daemon.flow.router import Router
from daemon.intake.delivery import Source
from daemon.intake.directory import DirectorySource
from daemon.intake.ledger import Ledger
from daemon.kafka.options import client_options
from daemon.kafka.publisher import EventPublisher
from daemon.kafka.source import KafkaSource
from daemon.kafka.state_topic import STACK_PREFIX, StateTopic
from daemon.ops.conditions import Conditions
from daemon.ops.health import HealthServer
from daemon.ops.kernel_cache import seed_kernel_cache
from daemon.ops.metrics import Backlog, Metrics
from daemon.ops.night_record import NightRecord
from daemon.ops.quicklooks import Quicklooks
from daemon.ops.sky_page import SkyPage
from daemon.ops.supervisor import Supervisor
from daemon.ops.systemd import SystemdNotifier
from daemon.ops.worker_pool import run_in_pool
from daemon.retry import Retrier
from daemon.skymatch.stage import HandOff, SkyMatchStage, kafka_hand_off
from daemon.state.lock import StateFolderLock
from daemon.state.stacks import StackStore
from processors import warm_up

__all__ = ["Service"]

log = logging.getLogger("skystream.service")


class Service:
    """One skystream process: consume a source until stopped (or until a finite source ends).

    Every long-lived task (router, lanes, the source's loops, the skymatch idle closer)
    runs under one `Supervisor`; start-up and shutdown are one symmetric sequence, so a
    stop at any point releases exactly what was started.

    Parameters
    ----------
    settings : Settings
        Validated settings with absolute paths.
    registry : CollectorRegistry, optional
        Metrics registry; a fresh one by default.
    source : Source, optional
        Where exposures come from; the configured folder or topic by default.
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
        self.conditions = Conditions()
        self.retrier = Retrier(self.conditions)
        self._source_override = source
        self._on_product = on_product
        self.night = NightRecord()
        self.quicklooks: Quicklooks | None = None
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._warm = asyncio.Event()
        self._input_ended = asyncio.Event()
        self.source: Source | None = None
        self.mosaic_source: KafkaSource | None = None  # the sky-matching stage's, in Kafka mode
        self.lanes: Lanes | None = None
        self.health: HealthServer | None = None
        self.supervisor: Supervisor | None = None
        self._systemd = SystemdNotifier.from_environment()

    def _product_finished(self, event: ProductEvent) -> None:
        self.night.add_product(event)
        if self._on_product is not None:
            self._on_product(event)

    def request_stop(self) -> None:
        """Ask the service to drain in-flight work and stop (signal-handler safe)."""
        if not self._stop.is_set():
            log.info("stop requested: finishing in-flight exposures")
            if self._systemd is not None:
                self._systemd.stopping()
        self._stop.set()

    async def wait_started(self) -> None:
        """Wait until the source is running and the health port is bound."""
        await self._started.wait()

    def readiness(self) -> tuple[bool, list[str]]:
        """Whether the service can take work, and if not, why (``/readyz``)."""
        reasons = []
        if not self._started.is_set():
            reasons.append("starting (warming up the numerical kernels)")
        if self.source is None or not self.source.connected:
            reasons.append("source not connected")
        if self.mosaic_source is not None and not self.mosaic_source.connected:
            reasons.append("sky-matching stage not connected")
        if self.lanes is not None and self.lanes.saturated:
            reasons.append(f"lanes saturated: {', '.join(self.lanes.saturated)}")
        reasons += self.conditions.describe()
        if self.supervisor is not None:
            reasons += self.supervisor.stalled()
        if self._stop.is_set():
            reasons.append("stopping")
        return not reasons, reasons

    def liveness(self) -> tuple[bool, list[str]]:
        """Whether the process makes progress (``/healthz``): no task stuck or given up."""
        if self.supervisor is None:
            return True, []
        reasons = self.supervisor.stalled()
        if self.supervisor.failure is not None:
            reasons.append(str(self.supervisor.failure))
        return not reasons, reasons

    async def run(self) -> None:
        """Run until `request_stop`, or until a finite source is exhausted and drained.

        Raises
        ------
        daemon.ops.supervisor.GaveUp
            When a supervised task kept failing; the process should exit non-zero.
        """
        with StateFolderLock(self.settings.state.directory):  # one owner per state folder
            supervision = self.settings.supervision
            supervisor = self.supervisor = Supervisor(
                self.conditions,
                max_restarts=supervision.max_restarts,
                window_seconds=supervision.restart_window_seconds,
                stall_seconds=supervision.stall_seconds,
                on_restart=lambda name: self.metrics.task_restarts.labels(name).inc(),
            )
            async with contextlib.AsyncExitStack() as stack:
                await self._start(stack, supervisor)
                await self._until_done(supervisor)
            if supervisor.failure is not None:
                raise supervisor.failure

    async def _start(self, stack: contextlib.AsyncExitStack, supervisor: Supervisor) -> None:
        """Build and start every part; each registers its own stop on ``stack``."""
        settings = self.settings
        pool = ThreadPoolExecutor(settings.workers.threads, thread_name_prefix="skystream-worker")
        stack.push_async_callback(asyncio.to_thread, pool.shutdown, True, cancel_futures=True)
        in_pool = functools.partial(run_in_pool, pool)

        consumes = self._source_override is None and settings.source.kind == "kafka"
        publisher, state_topic = self._kafka_parts(consumes)
        stage = self._skymatch_stage(in_pool, publisher, state_topic)
        hand_off: HandOff | None = None
        if stage is not None:
            hand_off = (
                kafka_hand_off(publisher, settings.source.kafka.mosaic_topic)
                if consumes and publisher is not None
                else stage.accept
            )
        store = StackStore(
            settings.state.directory,
            settings.background.stack,
            settings.background.rolling_sky,
            fsync=settings.output.fsync,
            threads=settings.background.threads,
        )
        chooser = Chooser(
            settings,
            store,
            self.metrics,
            self.retrier,
            on_stack_saved=_state_sink(state_topic, STACK_PREFIX),
        )
        quicklooks = self.quicklooks = (
            Quicklooks(fsync=settings.output.fsync, on_written=self.night.add_quicklook)
            if settings.output.quicklook
            else None
        )
        pipeline = Pipeline(
            settings,
            pool=pool,
            chooser=chooser,
            sink=DirectorySink(settings.output),
            quarantine=Quarantine(
                settings.quarantine.directory,
                # In Kafka mode the inputs belong to their producer: a record, never a move.
                move=settings.quarantine.move and not consumes,
                fsync=settings.output.fsync,
            ),
            metrics=self.metrics,
            retrier=self.retrier,
            skymatch=hand_off,
            publisher=publisher,
            on_product=self._product_finished,
            quicklooks=quicklooks,
        )
        lanes = self.lanes = Lanes(
            pipeline.process,
            pipeline.can_go,
            supervisor=supervisor,
            queue_size=settings.lanes.queue_size,
            park_seconds=settings.background.stack.wait_seconds,
            metrics=self.metrics,
            max_keys=settings.lanes.max_keys,
            idle_seconds=settings.lanes.idle_seconds,
            prefetch=pipeline.prefetch,
        )
        source = self.source = self._make_source(consumes, publisher, state_topic, store)
        self.metrics.follow(lambda: self.readiness()[0],
                            source if isinstance(source, Backlog) else None)  # fmt: skip
        if settings.metrics.enabled:
            self.health = HealthServer(
                self.metrics,
                self.readiness,
                self.liveness,
                self._warm.is_set,
                host=settings.metrics.host,
                port=settings.metrics.port,
                routes=SkyPage(
                    self.night,
                    state=settings.state.directory,
                    products=settings.output.directory,
                    quarantine=settings.quarantine.directory,
                    readiness=self.readiness,
                    quicklooks=quicklooks,
                ).routes(),
            )
            await self.health.start()
            stack.push_async_callback(self.health.stop)
        # Compile (or load) the numerical kernels before taking work; /healthz answers
        # meanwhile and /readyz says why it is not ready.
        await asyncio.to_thread(seed_kernel_cache)  # the image's compiled kernels, if any
        await asyncio.to_thread(warm_up)
        await asyncio.to_thread(store.restore)
        if self.health is not None:  # the live page shows the night so far
            await asyncio.to_thread(
                self.night.restore, settings.output.directory, settings.output.suffix
            )
        if stage is not None:
            await stage.restore()
        self._warm.set()
        if publisher is not None:
            stack.push_async_callback(publisher.stop)
        stack.push_async_callback(supervisor.stop)
        if not await self._connect(publisher, source, supervisor):
            return
        if stage is not None and consumes and publisher is not None:
            await self._start_mosaic_stage(stack, supervisor, stage, publisher)
        # Unwound in reverse: the router stops first, then the lanes drain, and the source
        # stops last so that it records (commits) what the drain finished.
        if quicklooks is not None:  # unwound after the lanes drained: their pictures too
            stack.push_async_callback(asyncio.to_thread, quicklooks.close)
            stack.push_async_callback(quicklooks.drain, settings.shutdown.grace_seconds)
            rendering = supervisor.spawn("quicklooks", lambda: quicklooks.run(rendering))
        stack.push_async_callback(source.stop)
        stack.push_async_callback(self._drain, lanes)
        stack.push_async_callback(supervisor.cancel, "router")
        router = Router(
            lanes,
            settings.routing.stack_key,
            in_pool,
            max_keys=settings.lanes.max_keys,
            max_bytes=settings.input.max_exposure_bytes,
            retrier=self.retrier,
        )

        async def route() -> None:
            await router.run(source, heartbeat)
            self._input_ended.set()  # only a finite source ends

        heartbeat = supervisor.spawn("router", route, finite=True)
        supervisor.spawn("lane reaper", lanes.reap_forever)
        if stage is not None:
            supervisor.spawn("skymatch idle closer", functools.partial(self._close_idle, stage))
        self._started.set()
        if self._systemd is not None:  # Type=notify: ready, and a watchdog fed by liveness
            self._systemd.ready()
            supervisor.spawn("systemd watchdog", functools.partial(
                self._systemd.feed_watchdog, self.liveness), finite=True)  # fmt: skip

    def _kafka_parts(self, consumes: bool) -> tuple[EventPublisher | None, StateTopic | None]:
        """The producer (when anything is published) and the state topic (when consuming)."""
        settings = self.settings
        kafka = settings.source.kafka
        if not (consumes or settings.output.product_topic or settings.output.skymatch_topic):
            return None, None
        options = client_options(kafka)
        publisher = EventPublisher(options, self.metrics, self.retrier)
        state_topic = (
            StateTopic(kafka.state_topic, publisher, options)
            if consumes and kafka.state_topic
            else None
        )
        return publisher, state_topic

    def _skymatch_stage(
        self,
        in_pool: Callable[..., Awaitable[Any]],
        publisher: EventPublisher | None,
        state_topic: StateTopic | None,
    ) -> SkyMatchStage | None:
        if not self.settings.skymatch.enabled:
            return None
        return SkyMatchStage(
            self.settings,
            metrics=self.metrics,
            in_pool=in_pool,
            publisher=publisher,
            state_topic=state_topic,
        )

    async def _start_mosaic_stage(
        self,
        stack: contextlib.AsyncExitStack,
        supervisor: Supervisor,
        stage: SkyMatchStage,
        publisher: EventPublisher,
    ) -> None:
        """Stage 2 in Kafka mode: its own consumer group on the mosaic topic."""
        kafka = self.settings.source.kafka
        mosaic = kafka.model_copy(update={"topic": kafka.mosaic_topic,
                                          "group_id": kafka.mosaic_group_id})  # fmt: skip
        source = self.mosaic_source = KafkaSource(
            mosaic,
            client_options(kafka),
            self.metrics,
            publisher,
            self.retrier,
            on_assigned=stage.take_over,
            on_revoked=stage.give_up,
            name="kafka-skymatch",
        )
        await source.start(supervisor)
        stack.push_async_callback(source.stop)  # unwound after stage 1 stopped
        stack.push_async_callback(supervisor.cancel, "skymatch stage")
        supervisor.spawn("skymatch stage", lambda: stage.consume(source), finite=True)

    def _make_source(
        self,
        consumes: bool,
        publisher: EventPublisher | None,
        state_topic: StateTopic | None,
        store: StackStore,
    ) -> Source:
        settings = self.settings
        if self._source_override is not None:
            return self._source_override
        if consumes and publisher is not None:
            takeover = (
                functools.partial(_take_over, state_topic, store)
                if state_topic is not None
                else None
            )
            return KafkaSource(
                settings.source.kafka,
                client_options(settings.source.kafka),
                self.metrics,
                publisher,
                self.retrier,
                on_assigned=takeover,
                on_revoking=self._given_away,
            )
        return DirectorySource(
            settings.source.directory,
            Ledger(settings.state.directory / "ledger.sqlite"),
            self.metrics,
            max_exposure_bytes=settings.input.max_exposure_bytes,
        )

    def _given_away(self, _partitions: set[Any]) -> None:
        """Partitions are being given away: lanes drop their deliveries not yet started."""
        if self.lanes is not None:
            self.lanes.recheck_ownership()

    async def _connect(
        self, publisher: EventPublisher | None, source: Source, supervisor: Supervisor
    ) -> bool:
        """Start the producer and the source; False if a stop came first (brokers down)."""

        async def connect() -> None:
            if publisher is not None:
                await publisher.start()
            await source.start(supervisor)

        connecting = asyncio.create_task(connect(), name="connect")
        stop = asyncio.create_task(self._stop.wait(), name="stop-signal")
        await asyncio.wait({connecting, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await source.stop()
            return False
        connecting.result()
        return True

    async def _until_done(self, supervisor: Supervisor) -> None:
        """Wait for a stop, a supervisor that gave up, or a finite input fully drained."""
        waits: set[asyncio.Task[Any]] = {
            asyncio.create_task(self._stop.wait(), name="stop-signal"),
            asyncio.create_task(supervisor.failed.wait(), name="supervisor-failed"),
        }
        if self._started.is_set():
            waits.add(asyncio.create_task(self._drained(), name="drained"))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _drained(self) -> None:
        await self._input_ended.wait()
        assert self.lanes is not None
        self.lanes.input_ended()
        await self.lanes.join()

    async def _drain(self, lanes: Lanes) -> None:
        dropped = await lanes.stop(self.settings.shutdown.grace_seconds)
        if dropped:
            log.info("%d exposure(s) not started are left for the next start", dropped)

    async def _close_idle(self, stage: SkyMatchStage) -> None:
        period = min(5.0, self.settings.skymatch.close_after_seconds / 4)
        while True:
            await asyncio.sleep(period)
            await stage.close_idle()


def _state_sink(
    state_topic: StateTopic | None, prefix: str
) -> Callable[[str, dict[str, Any] | None], Awaitable[None]] | None:
    """Publishes a stack's or group's record under ``prefix + name`` (None: no state topic)."""
    if state_topic is None:
        return None

    async def share(name: str, record: dict[str, Any] | None) -> None:
        await state_topic.publish(prefix + name, record)

    return share


async def _take_over(state_topic: StateTopic, store: StackStore, _new: object) -> None:
    """Rebuild the stacks other replicas published, before new partitions flow.

    Mosaic groups are the sky-matching stage's (`SkyMatchStage.take_over`).
    """
    records = await state_topic.read()
    for name, record in records.items():
        if name.startswith(STACK_PREFIX):
            state = store.state(name[len(STACK_PREFIX) :])
            async with state.lock:
                await asyncio.to_thread(store.adopt, state, record)
