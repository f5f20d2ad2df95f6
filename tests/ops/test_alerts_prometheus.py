"""The shipped alert rules on a real Prometheus, scraping real daemons that really fail.

Debian's Prometheus server runs on loopback with ``helm/skystream/files/alerts.yaml``,
unchanged except for shorter ``for:``, windows and thresholds (`OVERRIDES`, each
substitution checked to match), and scrapes four ``skystream run`` processes every second.
Each condition is then made real: a products folder replaced by a file with files pending
(folder mode) and with events arriving (Kafka mode, the real tansu broker), a stream of
bad files, a daemon killed with SIGKILL. Every alert must fire, only where expected, and
every one must resolve once the condition is undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from daemon.fileio.fits_io import write_exposure
from tests.conftest import drop_fits, small_exposure
from tests.helm.tools import prometheus_binary
from tests.kafka.helpers import (
    DaemonProcess,
    create_topic,
    event,
    free_port,
    kafka_overrides,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

RULES = Path(__file__).resolve().parents[2] / "helm" / "skystream" / "files" / "alerts.yaml"
#: Per alert: its test ``for:`` and ``(text, replacement, occurrences)`` in its expression.
OVERRIDES: dict[str, dict[str, Any]] = {
    "SkystreamStalled": {"for": "2s", "expr": [("> 600", "> 8", 1)]},
    "SkystreamKafkaLagGrowing": {
        "for": "2s",
        "expr": [("> 100", "> 4", 1), ("[15m:1m]", "[20s:1s]", 1)],
    },
    "SkystreamErrorRatio": {"for": "2s", "expr": [("[15m]", "[10s]", 2)]},
    "SkystreamLatencyHigh": {"for": "2s", "expr": [("[10m]", "[10s]", 1), ("> 10", "> 5", 2)]},
    "SkystreamQuarantineRate": {"for": "2s", "expr": [("[15m]", "[10s]", 1)]},
    "SkystreamDown": {"for": "2s", "expr": []},
    "SkystreamNotReady": {"for": "2s", "expr": []},
}
#: (alert, job) pairs that must fire while the conditions hold.
EXPECTED = {
    ("SkystreamStalled", "folder-stall"),
    ("SkystreamLatencyHigh", "folder-stall"),
    ("SkystreamNotReady", "folder-stall"),
    ("SkystreamStalled", "kafka-stall"),
    ("SkystreamKafkaLagGrowing", "kafka-stall"),
    ("SkystreamLatencyHigh", "kafka-stall"),
    ("SkystreamNotReady", "kafka-stall"),
    ("SkystreamQuarantineRate", "bad-files"),
    ("SkystreamErrorRatio", "bad-files"),
    ("SkystreamDown", "killed"),
}
#: Pairs that may fire besides: the killed daemon is not ready while it warms up again.
TOLERATED = {("SkystreamNotReady", "killed")}
FAST_FOLDER = {"settle_seconds": 0.2, "check_interval_seconds": 0.05, "rescan_seconds": 1.0,
               "incomplete_timeout_seconds": 2.0}  # fmt: skip


def shortened_rules() -> dict[str, Any]:
    """The shipped rules with the test's ``for:``, windows and thresholds."""
    document = yaml.safe_load(RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == set(OVERRIDES)
    for rule in rules:
        override = OVERRIDES[rule["alert"]]
        rule["for"] = override["for"]
        for old, new, count in override["expr"]:
            assert rule["expr"].count(old) == count, (rule["alert"], old)
            rule["expr"] = rule["expr"].replace(old, new)
    return document


@dataclass
class Daemon:
    """One ``skystream run`` process scraped as its own job."""

    job: str
    port: int
    process: DaemonProcess
    products: Path
    inbox: Path


def folder_daemon(base: Path, job: str, overrides: dict[str, Any] | None = None) -> Daemon:
    base.mkdir()
    port = free_port()
    products, inbox = base / "products", base / "inbox"
    tree = {"metrics": {"host": "127.0.0.1", "port": port},
            "source": {"directory": {"path": str(inbox), "create": True, **FAST_FOLDER}},
            "output": {"directory": str(products), "fsync": False},
            "quarantine": {"directory": str(base / "quarantine")},
            "state": {"directory": str(base / "state")}, **(overrides or {})}  # fmt: skip
    return Daemon(job, port, DaemonProcess(base, tree), products, inbox)


@contextlib.contextmanager
def prometheus(folder: Path, daemons: list[Daemon]) -> Iterator[str]:
    """Debian's Prometheus on loopback, scraping every daemon each second."""
    rules = folder / "rules.yaml"
    rules.write_text(yaml.safe_dump(shortened_rules()))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms",
                   "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        # What the chart's ServiceMonitor gives every target: the part-of label.
        "scrape_configs": [
            {"job_name": d.job, "static_configs": [{"targets": [f"127.0.0.1:{d.port}"],
             "labels": {"app_kubernetes_io_part_of": "skystream"}}]}
            for d in daemons
        ],
    }  # fmt: skip
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (folder / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [str(prometheus_binary()), f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=log,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            return await response.json() if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def until(what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
    """Await ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s: {what}")
        await asyncio.sleep(0.25)
    return result


@contextlib.asynccontextmanager
async def repeating(action: Callable[[int], Any], period: float) -> AsyncIterator[None]:
    """Call ``action(n)`` every ``period`` seconds for the duration of the block."""

    async def loop() -> None:
        for n in range(10_000):
            await action(n)
            await asyncio.sleep(period)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def break_folder(folder: Path) -> None:
    """Replace a folder by a file: every write into it fails with ENOTDIR (root or not)."""
    shutil.rmtree(folder)
    folder.write_bytes(b"")


def mend_folder(folder: Path) -> None:
    folder.unlink()
    folder.mkdir()


class Alerts:
    """Prometheus' HTTP API: targets, rules and alerts, remembering every alert that fired."""

    def __init__(self, http: aiohttp.ClientSession, api: str) -> None:
        self._http = http
        self._api = api
        self.fired: set[tuple[str, str]] = set()  # (alert, job)

    async def active(self) -> list[dict[str, Any]] | None:
        body = await get_json(self._http, f"{self._api}/api/v1/alerts")
        if body is None:
            return None
        found = body["data"]["alerts"]
        for alert in found:
            if alert["state"] == "firing":
                self.fired.add((alert["labels"]["alertname"], alert["labels"].get("job", "")))
        return found

    async def scraped_and_evaluated(self, targets: int) -> bool:
        """Every target up and every rule evaluated without error."""
        scraped = await get_json(self._http, f"{self._api}/api/v1/targets")
        rules = await get_json(self._http, f"{self._api}/api/v1/rules")
        if not scraped or not rules:
            return False
        up = [t["health"] == "up" for t in scraped["data"]["activeTargets"]]
        evaluated = [
            rule["health"] == "ok" and not rule["lastEvaluation"].startswith("0001-")
            for group in rules["data"]["groups"]
            for rule in group["rules"]
        ]
        return (
            len(up) == targets and all(up) and len(evaluated) == len(OVERRIDES) and all(evaluated)
        )

    async def all_expected_fired(self) -> bool:
        await self.active()
        return self.fired >= EXPECTED

    async def none_active(self) -> bool:
        return await self.active() == []


async def test_every_alert_fires_on_its_condition_and_resolves_after_it(
    tmp_path, bootstrap
) -> None:
    stall = folder_daemon(tmp_path / "stall", "folder-stall")
    bad = folder_daemon(tmp_path / "bad", "bad-files")
    killed = folder_daemon(tmp_path / "killed", "killed")
    data = tmp_path / "kafka" / "data"
    data.mkdir(parents=True)
    kafka = kafka_overrides(tmp_path / "kafka", bootstrap)
    topic = kafka["source"]["kafka"]["topic"]
    await create_topic(bootstrap, topic, partitions=1)
    streaming = folder_daemon(tmp_path / "kafka" / "daemon", "kafka-stall", kafka)
    daemons = [stall, bad, killed, streaming]
    files = [data / f"k{index}.fits" for index in range(40)]
    for index, path in enumerate(files):
        write_exposure(small_exposure(index), path, fsync=False)

    async def produce(n: int) -> None:
        await producer.send_and_wait(topic, event(f"k{n}", files[n % len(files)]), key=b"k")

    async def drop_bad(n: int) -> None:
        (bad.inbox / f"bad_{n}.fits").write_bytes(b"not a FITS file " * 200)

    async def all_ready() -> bool:
        answers = [await get_json(http, f"http://127.0.0.1:{d.port}/readyz") for d in daemons]
        return all(answer and answer["ready"] for answer in answers)

    for daemon in daemons:
        daemon.process.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with aiohttp.ClientSession() as http:
            await until("every daemon ready", all_ready, timeout=300)
            with prometheus(tmp_path, daemons) as api:
                alerts = Alerts(http, api)
                await until("targets scraped, rules evaluated",
                            lambda: alerts.scraped_and_evaluated(len(daemons)))  # fmt: skip
                # Healthy: after three more evaluations of every rule, nothing is pending.
                await asyncio.sleep(3)
                assert await alerts.active() == []

                # Make every condition real.
                break_folder(stall.products)
                for index in range(3):
                    drop_fits(stall.inbox, f"held_{index}.fits", small_exposure(index))
                break_folder(streaming.products)
                killed.process.kill()
                async with repeating(produce, 0.4), repeating(drop_bad, 0.4):
                    await until(f"firing: {sorted(EXPECTED)}", alerts.all_expected_fired, 120)
                    active = await alerts.active()
                assert active
                for alert in active:
                    anchor = alert["labels"]["alertname"].lower()
                    assert alert["annotations"]["runbook_url"].endswith(f"RUNBOOK.md#{anchor}")

                # Undo every condition.
                mend_folder(stall.products)
                mend_folder(streaming.products)
                killed.process.start()
                await until("every alert resolved", alerts.none_active, timeout=120)
                assert alerts.fired <= EXPECTED | TOLERATED, alerts.fired - EXPECTED - TOLERATED
                assert len(list(stall.products.glob("*_bsub.fits"))) == 3
    finally:
        await producer.stop()
        for daemon in daemons:
            daemon.process.kill()
