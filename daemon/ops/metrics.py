"""All Prometheus metrics of skystream in one container with an injected registry."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import astropy
import numpy as np
import photutils
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)

from daemon.errors import QUARANTINE_REASONS
from processors import __version__

__all__ = ["OUTCOMES", "STAGES", "Backlog", "Metrics"]

STAGES: tuple[str, ...] = ("read", "background", "combine", "subtract", "write", "skymatch")
OUTCOMES: tuple[str, ...] = (
    "complete",
    "skipped",
    "background",
    "quarantined",
    "duplicate",
)
SOURCES: tuple[str, ...] = ("directory", "batch", "kafka")
# Seconds-long CPU work: 10 ms to 60 s.
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@runtime_checkable
class Backlog(Protocol):
    """A source that knows what it holds unsettled (the folder and Kafka sources)."""

    name: str

    def oldest_unsettled(self) -> float | None:
        """``time.monotonic()`` when the oldest unsettled exposure was first seen (None: none)."""
        ...

    def backlog(self) -> int:
        """Exposures at the source that are not settled yet."""
        ...


class Metrics:
    """The metrics of one skystream process.

    Names follow ``skystream_<noun>_<unit|total>``; labels are bounded (stage, outcome,
    reason, source, and lane/stack keys that come from configured header keywords) and
    pre-initialised so that dashboards see zeros rather than gaps.

    Parameters
    ----------
    registry : CollectorRegistry
        Where the metrics are registered; tests pass a fresh one.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.received = Counter(
            "skystream_exposures_received",
            "Exposures that arrived and passed the completeness check.",
            ["source"],
            registry=registry,
        )
        self.processed = Counter(
            "skystream_exposures_processed",
            "Exposures finished, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.quarantined = Counter(
            "skystream_exposures_quarantined",
            "Exposures quarantined, by reason.",
            ["reason"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "skystream_stage_seconds",
            "Wall time of each processing stage.",
            ["stage"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.latency_seconds = Histogram(
            "skystream_latency_seconds",
            "From arrival of an exposure to its durable product.",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.lane_depth = Gauge(
            "skystream_lane_depth",
            "Exposures waiting in each lane.",
            ["lane"],
            registry=registry,
        )
        self.lane_parked = Gauge(
            "skystream_lane_parked",
            "Exposures parked in each lane, waiting for their stack (part of its depth).",
            ["lane"],
            registry=registry,
        )
        self.task_restarts = Counter(
            "skystream_task_restarts",
            "Supervised tasks restarted after they died, by task.",
            ["task"],
            registry=registry,
        )
        self.inflight = Gauge(
            "skystream_inflight_exposures",
            "Exposures being processed right now.",
            registry=registry,
        )
        self.oldest_unsettled_age = Gauge(
            "skystream_oldest_unsettled_age_seconds",
            "Age of the oldest exposure seen and not yet settled (pending, buffered, waiting, "
            "held, parked or in flight); 0 when there is none.",
            registry=registry,
        )
        self.backlog = Gauge(
            "skystream_backlog_exposures",
            "Exposures the source has and that are not settled yet (a folder: pending and "
            "unacknowledged files; Kafka: end offsets - committed offsets).",
            ["source"],
            registry=registry,
        )
        self.last_product_time = Gauge(
            "skystream_last_product_timestamp_seconds",
            "Unix time of the last durable product (0 before the first).",
            registry=registry,
        )
        self.ready = Gauge(
            "skystream_ready",
            "1 while /readyz answers 200, else 0 (/readyz says why).",
            registry=registry,
        )
        self.pending_files = Gauge(
            "skystream_pending_files",
            "Files seen in the watched folder that are not yet complete and settled.",
            registry=registry,
        )
        self.background_level = Gauge(
            "skystream_background_level",
            "Background level of the latest exposure of each stack key.",
            ["stack_key"],
            registry=registry,
        )
        self.background_rms = Gauge(
            "skystream_background_rms",
            "Background RMS of the latest exposure of each stack key.",
            ["stack_key"],
            registry=registry,
        )
        self.stack_depth = Gauge(
            "skystream_stack_depth",
            "Background exposures in the rolling stack of each stack key.",
            ["stack_key"],
            registry=registry,
        )
        self.stack_age = Gauge(
            "skystream_stack_age_seconds",
            "Age of the oldest member of each stack (now - its observation time).",
            ["stack_key"],
            registry=registry,
        )
        self.stack_bytes = Gauge(
            "skystream_stack_bytes",
            "Memory held by each rolling stack.",
            ["stack_key"],
            registry=registry,
        )
        self.members_rejected = Counter(
            "skystream_stack_members_rejected",
            "Background exposures refused by a stack, by reason.",
            ["reason"],
            registry=registry,
        )
        self.skymatch_groups_open = Gauge(
            "skystream_skymatch_groups_open",
            "Mosaic groups being matched.",
            registry=registry,
        )
        self.skymatch_group_images = Histogram(
            "skystream_skymatch_group_images",
            "Images per mosaic group when it closes.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.skymatch_residual = Gauge(
            "skystream_skymatch_residual_rms",
            "Weighted RMS of the pairwise sky differences left after the latest match.",
            registry=registry,
        )
        self.kafka_consumed = Counter(
            "skystream_kafka_events_consumed",
            "Events fetched from Kafka, by topic.",
            ["topic"],
            registry=registry,
        )
        self.kafka_produced = Counter(
            "skystream_kafka_events_produced",
            "Events the brokers acknowledged, by topic.",
            ["topic"],
            registry=registry,
        )
        self.kafka_dead_lettered = Counter(
            "skystream_kafka_events_dead_lettered",
            "Events published to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.kafka_commit_seconds = Histogram(
            "skystream_kafka_commit_seconds",
            "Latency of offset commits.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=registry,
        )
        self.kafka_abandoned = Counter(
            "skystream_kafka_events_abandoned",
            "Events of partitions given away that were dropped before processing started "
            "(their new owner processes them).",
            registry=registry,
        )
        self.kafka_rebalances = Counter(
            "skystream_kafka_rebalances",
            "Partition assignments received by this consumer.",
            registry=registry,
        )
        self.kafka_lag = Gauge(
            "skystream_kafka_consumer_lag",
            "Events not yet committed, per assigned partition (the broker's end offset - "
            "committed), refreshed on a timer whether the partition is paused or not.",
            ["topic", "partition"],
            registry=registry,
        )
        self.kafka_paused = Gauge(
            "skystream_kafka_partitions_paused",
            "Assigned partitions paused because their events wait behind a full lane.",
            registry=registry,
        )
        self.kafka_connected = Gauge(
            "skystream_kafka_connected",
            "1 while the consumer is in its group and the brokers answer, else 0.",
            registry=registry,
        )
        # CPU seconds, resident memory, open files of this process (process_* names).
        ProcessCollector(registry=registry)
        self.build_info = Info(
            "skystream_build", "Versions of skystream and its numerical stack.", registry=registry
        )
        self.build_info.info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "astropy": astropy.__version__,
                "photutils": photutils.__version__,
            }
        )
        for source in SOURCES:
            self.received.labels(source)
        for outcome in OUTCOMES:
            self.processed.labels(outcome)
        for reason in QUARANTINE_REASONS:
            self.quarantined.labels(reason)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        self.members_rejected.labels("shape")
        for reason in QUARANTINE_REASONS:
            self.kafka_dead_lettered.labels(reason)

    def follow(self, ready: Callable[[], bool], source: Backlog | None) -> None:
        """Compute the readiness, oldest-unsettled and backlog gauges at each scrape.

        They come from the bookkeeping the service acts on (what ``/readyz`` answers, what
        the source has not seen acknowledged), never from counts of past events, so they
        keep telling the truth while nothing moves.

        Parameters
        ----------
        ready : callable
            True while ``/readyz`` answers 200.
        source : Backlog or None
            The source; None for a finite batch (the two gauges then stay 0).
        """
        self.ready.set_function(lambda: float(ready()))
        if source is None:
            return

        def age() -> float:
            since = source.oldest_unsettled()
            return 0.0 if since is None else max(time.monotonic() - since, 0.0)

        self.oldest_unsettled_age.set_function(age)
        self.backlog.labels(source.name).set_function(lambda: float(source.backlog()))
