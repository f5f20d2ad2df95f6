"""Alert rules, the dashboard and the live /metrics exposition, checked with promtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import drop_fits, running, small_exposure, test_settings, wait_for_count
from tests.helm.tools import promtool_binary

HERE = Path(__file__).resolve().parent
CHART = HERE.parents[1] / "helm" / "skystream"
METRIC = re.compile(r"\b((?:skystream|process)_[a-z_]+)\b")
RUNBOOK_URL = "https://github.com/skystream/skystream/blob/main/RUNBOOK.md#"


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


def _rules() -> list[dict]:
    document = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_query_only_metrics_the_daemon_exposes(exposition) -> None:
    used = {name for rule in _rules() for name in METRIC.findall(rule["expr"])}
    assert {"skystream_oldest_unsettled_age_seconds", "skystream_kafka_consumer_lag",
            "skystream_ready"} <= used  # fmt: skip
    assert not used - _exposed_names(exposition)


def test_alert_rules_select_by_label_never_by_name() -> None:
    for rule in _rules():
        assert not re.search(r"\b(job|pod|instance|service)\s*=~", rule["expr"]), rule["alert"]
        selectors = re.findall(r"\bup\{([^}]*)\}", rule["expr"])
        assert all(s == 'app_kubernetes_io_part_of="skystream"' for s in selectors), rule["alert"]


def test_every_alert_has_a_runbook_section() -> None:
    runbook = (CHART.parents[1] / "RUNBOOK.md").read_text()
    sections = set(re.findall(r"^## (\w+)$", runbook, flags=re.MULTILINE))
    for rule in _rules():
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOK_URL + rule["alert"].lower()
        assert rule["alert"] in sections
    assert sections == {rule["alert"] for rule in _rules()}
