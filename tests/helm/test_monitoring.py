"""Alert rules, the dashboard and the live /metrics exposition, checked with promtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import drop_fits, running, small_exposure, test_settings, wait_for_count
from tests.helm.tools import promtool_binary

HERE = Path(__file__).resolve().parent
CHART = HERE.parents[1] / "helm" / "skystream"
METRIC = re.compile(r"\b((?:skystream|process)_[a-z_]+)\b")


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool_binary()), *args], input=stdin, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_alert_rules_are_valid() -> None:
    result = _promtool("check", "rules", str(CHART / "files" / "alerts.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_alert_rules_unit_tests() -> None:
    result = _promtool("test", "rules", str(HERE / "alerts_test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.fixture(scope="module")
def exposition(tmp_path_factory) -> str:
    """The /metrics text of a daemon that has processed one exposure."""
    import asyncio

    async def scrape() -> str:
        settings = test_settings(tmp_path_factory.mktemp("live"))
        async with running(settings) as service:
            drop_fits(settings.source.directory.path, "one.fits", small_exposure(1))
            await wait_for_count(service, "skystream_exposures_processed_total",
                                 {"outcome": "complete"}, 1)  # fmt: skip
            url = f"http://127.0.0.1:{service.health.port}/metrics"
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                return await response.text()

    return asyncio.run(scrape())


def test_live_metrics_pass_promtool_check_metrics(exposition) -> None:
    result = _promtool("check", "metrics", stdin=exposition)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def _exposed_names(exposition: str) -> set[str]:
    """Series names the exposition declares (labelled families appear before any sample)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            suffixes = ("_bucket", "_count", "_sum") if kind == "histogram" else ("",)
            names.update(name + suffix for suffix in suffixes)
    return names


def test_dashboard_queries_only_metrics_the_daemon_exposes(exposition) -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in expressions for name in METRIC.findall(expr)}
    assert {"skystream_kafka_consumer_lag", "skystream_stack_depth",
            "process_resident_memory_bytes"} <= used  # fmt: skip
    assert not used - _exposed_names(exposition)
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("outcome", "stage latency", "end-to-end", "lag", "stack depth", "stack age",
                  "background level", "quarantined", "cpu", "memory"):  # fmt: skip
        assert topic in titles


def test_alert_rules_query_only_metrics_the_daemon_exposes(exposition) -> None:
    rules = (CHART / "files" / "alerts.yaml").read_text()
    exprs = "\n".join(line for line in rules.splitlines() if "skystream_" in line
                      and ("rate(" in line or "sum" in line or "deriv" in line))  # fmt: skip
    used = {name for name in METRIC.findall(exprs)}
    assert used and not used - _exposed_names(exposition)
