"""Stage 2: products of one mosaic group are matched on one owner, whatever their stack keys.

Stage 1 (background) is keyed by stack key; a mosaic group spans stack keys. In folder
mode stage 1 hands each product to this stage in the same process. In Kafka mode it
publishes the product's ProductEvent to ``source.kafka.mosaic_topic`` keyed by mosaic
group, and this stage consumes that topic in a consumer group of its own
(``mosaic_group_id``): Kafka gives each group's partition to exactly one replica, so each
group is matched once. A group's state (members, cached pair statistics) goes to the state
topic with the partition it came from, so that the replica given that partition later
continues the group; a closed group leaves a small ``closed`` record there instead of a
tombstone, so that a member delivered again after the close is recognised as late.

Products announced by stage 1 never change afterwards: with ``skymatch.subtract`` the
matched pixels are written to a new product, ``<product stem>_skym.fits``, announced by its
own ProductEvent (its ``skymatch`` block names the group, the level and the source
product); without it the levels live only in the SkyMatchEvent and the group table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from pydantic import ValidationError

from daemon.app.settings import Settings
from daemon.errors import InvalidInput, Retriable
from daemon.events import ExposureEvent, ProductEvent, SkyMatchEvent
from daemon.fileio.fits_io import read_exposure, write_exposure, write_json
from daemon.intake.kinds import matches_rule
from daemon.kafka.publisher import EventPublisher
from daemon.kafka.source import KafkaSource
from daemon.kafka.state_topic import SKYMATCH_PREFIX, StateTopic
from daemon.ops.metrics import Metrics
from daemon.state.skymatch_groups import SKYMATCH_KEYWORDS, SkyMatchGroups
from processors import Exposure
from processors.user_sky import record_sky_level

__all__ = ["HandOff", "SkyMatchStage", "kafka_hand_off", "mosaic_group", "parse_product_event"]

log = logging.getLogger("skystream.skymatch.stage")

#: Stage 1's hand-off of a finished product (with its pixels when they are at hand).
HandOff = Callable[[ProductEvent, Exposure | None], Awaitable[None]]
#: Closed groups remembered to refuse late members (the oldest are forgotten first).
CLOSED_REMEMBERED = 10_000
#: Suffix of a sky-matched product: ``<product stem>_skym.fits``.
MATCHED_SUFFIX = "_skym"


def mosaic_group(event: ExposureEvent, header: Any, keys: list[str]) -> str | None:
    """The mosaic group of an exposure: the event's group, else the header keywords joined.

    None when a keyword is missing or empty (the product is not matched).
    """
    if event.group:
        return event.group
    values = [str(header.get(key, "")).strip() for key in keys]
    return "/".join(values) if values and all(values) else None


def parse_product_event(raw: bytes | None) -> ProductEvent:
    """A ProductEvent from the mosaic topic.

    Raises
    ------
    InvalidInput
        ``malformed_event`` when it is empty, not JSON or not a ProductEvent.
    """
    if raw is None:
        raise InvalidInput("malformed_event", "empty message")
    try:
        return ProductEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInput("malformed_event", str(exc).splitlines()[0]) from None


def kafka_hand_off(publisher: EventPublisher, topic: str) -> HandOff:
    """Stage 1's hand-off in Kafka mode: the ProductEvent to ``topic``, keyed by group."""

    async def hand_off(summary: ProductEvent, _product: Exposure | None) -> None:
        if summary.group is not None and summary.status != "FAILED":
            await publisher.publish_product(topic, summary, summary.group)

    return hand_off


class SkyMatchStage:
    """Matches products into their mosaic groups; announces what closing a group yields.

    Parameters
    ----------
    settings : Settings
        ``skymatch`` (method, closing rules, ``subtract``) and ``output`` (folders, topics).
    metrics : Metrics
        Skymatch metrics.
    in_pool : callable
        Runs blocking work in the service's worker pool.
    publisher : EventPublisher, optional
        Producer for the SkyMatchEvents and the matched products' ProductEvents.
    state_topic : StateTopic, optional
        Where open groups are shared (Kafka mode): then the state topic, not the state
        folder, says which groups this replica continues.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics,
        in_pool: Callable[..., Awaitable[Any]],
        publisher: EventPublisher | None = None,
        state_topic: StateTopic | None = None,
    ) -> None:
        self._settings = settings
        self._in_pool = in_pool
        self._publisher = publisher
        self._state_topic = state_topic
        self._owner: dict[str, int | None] = {}  # open group -> partition it arrived on
        self._closed: dict[str, int | None] = {}  # closed group -> its partition
        self._groups = SkyMatchGroups(
            settings.skymatch,
            output=settings.output.directory,
            state=settings.state.directory,
            metrics=metrics,
            in_pool=in_pool,
            fsync=settings.output.fsync,
            on_closed=self._announce_closed,
            on_state=self._share,
        )

    async def restore(self) -> None:
        """Reopen the groups saved in the state folder (not in Kafka mode: see `take_over`)."""
        if self._state_topic is None:
            await asyncio.to_thread(self._groups.restore)

    async def accept(
        self, summary: ProductEvent, product: Exposure | None = None, partition: int | None = None
    ) -> None:
        """Match a finished product into its group (read from disk when not given).

        A product already in its group (delivered again) is ignored, and so is one whose
        group has closed (a late member: it is logged).
        """
        group = summary.group
        if group is None or summary.status == "FAILED":
            return
        if group in self._closed:
            log.warning("skymatch group %s is closed: late member %s ignored", group,
                        summary.exposure_id)  # fmt: skip
            return
        if self._groups.has(group, summary.exposure_id):
            return
        path = summary.product_path
        if product is None:
            try:
                product = await self._in_pool(read_exposure, path)
            except (OSError, InvalidInput, Retriable) as exc:
                log.warning("skymatch group %s: product %s unreadable, not matched (%s)",
                            group, path.name, exc)  # fmt: skip
                return
        self._owner[group] = partition
        last = matches_rule(self._settings.skymatch.end_when, product.header, summary.input_uri)
        await self._groups.add(group, summary.exposure_id, str(path), product, last)

    async def close_idle(self) -> None:
        """Close the groups without arrivals for ``close_after_seconds``."""
        await self._groups.close_idle()

    async def consume(self, source: KafkaSource) -> None:
        """Match the ProductEvents of ``source`` (the mosaic topic); commit each once matched."""
        async for record in source.records(parse_product_event):
            await self.accept(record.value, partition=record.partition.partition)
            await record.acknowledge("complete", None)

    # -- partitions moving between replicas ------------------------------------------------

    async def take_over(self, new: set[TopicPartition]) -> None:
        """Continue the groups of partitions just assigned, from the state topic."""
        if self._state_topic is None:
            return
        partitions = {tp.partition for tp in new}
        records = await self._state_topic.read()
        for name, record in records.items():
            if not name.startswith(SKYMATCH_PREFIX) or record.get("partition") not in partitions:
                continue
            group = record["group"]
            if record.get("closed"):
                self._remember_closed(group, record["partition"])
                continue
            self._owner[group] = record["partition"]
            await asyncio.to_thread(self._groups.adopt, record)

    async def give_up(self, revoked: set[TopicPartition]) -> None:
        """Forget the groups of partitions given away: their new owner continues them."""
        partitions = {tp.partition for tp in revoked}
        for group, partition in list(self._owner.items()):
            if partition in partitions:
                self._owner.pop(group)
                await asyncio.to_thread(self._groups.forget, group)
        self._closed = {g: p for g, p in self._closed.items() if p not in partitions}

    def _remember_closed(self, group: str, partition: int | None) -> None:
        self._closed[group] = partition
        while len(self._closed) > CLOSED_REMEMBERED:
            self._closed.pop(next(iter(self._closed)))

    async def _share(self, group: str, record: dict[str, Any] | None) -> None:
        """A group's state for the state topic, with its partition; a closed record at the end."""
        if record is None:
            partition = self._owner.pop(group, None)
            self._remember_closed(group, partition)
            record = {"group": group, "closed": True, "partition": partition}
        else:
            record = {**record, "partition": self._owner.get(group)}
        if self._state_topic is not None:
            await self._state_topic.publish(SKYMATCH_PREFIX + group, record)

    # -- closing ------------------------------------------------------------------------------

    async def _announce_closed(self, table: SkyMatchEvent) -> None:
        """New matched products (``subtract``) first, then the group's SkyMatchEvent."""
        output = self._settings.output
        if table.subtract:
            for member in table.members:
                if member.level is None or member.product is None:
                    continue
                event = await self._in_pool(
                    self._write_matched, table, Path(member.product), member.level
                )
                if event is not None and self._publisher is not None and output.product_topic:
                    key = event.stack_key or event.exposure_id
                    await self._publisher.publish_product(output.product_topic, event, key)
        if self._publisher is not None and output.skymatch_topic:
            payload = table.model_dump_json(by_alias=True).encode()
            await self._publisher.publish(output.skymatch_topic, payload, table.group)

    def _write_matched(
        self, table: SkyMatchEvent, source: Path, level: float
    ) -> ProductEvent | None:
        """Write ``<stem>_skym.fits`` (and its sidecar); return its ProductEvent (blocking)."""
        start = time.perf_counter()
        try:
            product = read_exposure(source)
        except (InvalidInput, Retriable) as exc:  # another exposure's product, not the input's
            log.warning("%s not written: the product %s is unreadable (%s)",
                        source.stem + MATCHED_SUFFIX, source.name, exc)  # fmt: skip
            return None
        matched = record_sky_level(product, level, skymethod=table.method, subtract=True,
                                   keywords=SKYMATCH_KEYWORDS)  # fmt: skip
        target = source.with_name(f"{source.stem}{MATCHED_SUFFIX}.fits")
        fsync = self._settings.output.fsync
        write_exposure(matched, target, fsync=fsync)
        try:
            original = ProductEvent.model_validate_json(source.with_suffix(".json").read_bytes())
        except (OSError, ValidationError) as exc:
            log.warning("%s written; not announced: the sidecar of %s is unreadable (%s)",
                        target.name, source.name, exc)  # fmt: skip
            return None
        uri = target.absolute().as_uri() if (original.product_uri or "").startswith("file:") \
            else str(target)  # fmt: skip
        event = original.model_copy(update={
            "product_uri": uri,
            "skymatch": {"group": table.group, "revision": table.revision, "level": level,
                         "subtracted": True, "method": table.method,
                         "source_product": original.product_uri},
            "timings": {"skymatch_write": round(time.perf_counter() - start, 6)},
            "produced_at": datetime.now(UTC),
        })  # fmt: skip
        if self._settings.output.sidecar:
            write_json(event.model_dump(mode="json", by_alias=True), target.with_suffix(".json"),
                       fsync=fsync)  # fmt: skip
        return event
