"""The Helm chart: lint, render for several values files, validate, and check what matters."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from daemon.app.settings import load_settings
from tests.helm.tools import helm_binary

CHART = Path(__file__).resolve().parents[2] / "helm" / "skystream"
VALUES = sorted((CHART / "ci").glob("*.yaml"))
API_VERSIONS = ["--api-versions", "monitoring.coreos.com/v1", "--api-versions", "keda.sh/v1alpha1"]
K8S_VERSION = "1.30.0"
BUILT_IN = {"Deployment", "StatefulSet", "Service", "ConfigMap", "ServiceAccount",
            "PodDisruptionBudget", "PersistentVolumeClaim", "NetworkPolicy", "Pod"}  # fmt: skip


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


def render(helm: Path, *args: str, apis: bool = True) -> list[dict[str, Any]]:
    command = [str(helm), "template", "obs", str(CHART), *(API_VERSIONS if apis else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def notes(helm: Path, tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` would print it (rendered through a copy of the chart)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "files" / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "files/notes.txt") . | quote }}\n'
    )
    command = [str(helm), "template", "obs", str(chart), "--show-only",
               "templates/zz-notes.yaml", *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return str(yaml.safe_load(result.stdout)["data"]["notes"])


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return doc


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_lint_strict(helm, values) -> None:
    result = subprocess.run([str(helm), "lint", "--strict", str(CHART), "-f", str(values)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_built_in_kinds_are_valid_kubernetes(helm, values) -> None:
    docs = render(helm, "-f", str(values))
    checked = [d for d in docs if d["kind"] in BUILT_IN]
    assert {"ConfigMap", "Service", "PodDisruptionBudget"} <= {d["kind"] for d in checked}
    for doc in checked:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_rendered_config_is_accepted_by_the_daemon(helm, values, tmp_path) -> None:
    docs = render(helm, "-f", str(values))
    config = one([d for d in docs if d["metadata"]["name"] == "obs-skystream"], "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(config["data"]["config.yaml"])
    settings = load_settings(path, environ={}, base=tmp_path)
    container = workload(docs)["spec"]["template"]["spec"]["containers"][0]
    assert settings.metrics.port == container["ports"][0]["containerPort"]
    assert settings.metrics.host == "0.0.0.0"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(settings.state.directory) in mounts


def test_probes_and_restricted_security_context(helm) -> None:
    spec = workload(render(helm))["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["startupProbe"]["httpGet"] == {"path": "/startupz", "port": "http-metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    # The warm-up may take minutes on a cold numba cache; liveness waits for it.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    volumes = {v["name"]: v for v in spec["volumes"]}
    tmp_mount = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp_mount and "emptyDir" in volumes[tmp_mount[0]["name"]]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")


def test_termination_grace_covers_the_daemons_drain(helm) -> None:
    for grace in (30, 90):
        docs = render(helm, "--set", f"config.shutdown.grace_seconds={grace}")
        spec = workload(docs)["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] == grace + 15
    docs = render(helm, "--set", "terminationGracePeriodSeconds=300")
    assert workload(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300


def test_checksum_changes_with_the_config_only(helm) -> None:
    def checksum(*args: str) -> str:
        return workload(render(helm, *args))["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    base = checksum()
    assert checksum("--set", "replicaCount=1") == base
    assert checksum("--set", "config.background.box_size=128") != base
    assert (
        checksum("--set", "kafka.enabled=true", "--set", "kafka.bootstrapServers={k:9092}") != base
    )


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_selectors_and_port_names_match(helm, values) -> None:
    docs = render(helm, "-f", str(values))
    pod_labels = workload(docs)["spec"]["template"]["metadata"]["labels"]
    container = workload(docs)["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    for service in [d for d in docs if d["kind"] == "Service"]:
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    for monitor in monitors:
        service = one([d for d in docs if d["metadata"]["name"] == "obs-skystream"], "Service")
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
            p["name"] for p in service["spec"]["ports"]
        }


def test_optional_objects_need_their_api(helm) -> None:
    values = CHART / "ci" / "monitoring-keda-values.yaml"
    with_apis = {d["kind"] for d in render(helm, "-f", str(values))}
    assert {"ServiceMonitor", "PrometheusRule", "ScaledObject"} <= with_apis
    without = {d["kind"] for d in render(helm, "-f", str(values), apis=False)}
    assert not {"ServiceMonitor", "PrometheusRule", "ScaledObject"} & without


def test_keda_scales_the_workload_on_the_consumer_group(helm) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "monitoring-keda-values.yaml"))
    scaled = one(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == workload(docs)["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    config = yaml.safe_load(one([d for d in docs if d["metadata"]["name"] == "obs-skystream"],
                                "ConfigMap")["data"]["config.yaml"])  # fmt: skip
    assert trigger["metadata"]["consumerGroup"] == config["source"]["kafka"]["group_id"]
    assert trigger["metadata"]["topic"] == config["source"]["kafka"]["topic"]
    assert "replicas" not in workload(docs)["spec"]  # KEDA owns the replica count


def test_prometheus_rule_carries_the_alert_file(helm) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "monitoring-keda-values.yaml"))
    rule = one(docs, "PrometheusRule")
    shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == shipped


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar(helm) -> None:
    docs = render(helm)
    dashboard = one([d for d in docs if d["metadata"]["name"].endswith("-dashboard")],
                    "ConfigMap")  # fmt: skip
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["skystream.json"])["uid"] == "skystream"


def test_sasl_password_is_mounted_from_its_secret_never_inlined(helm) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "kafka-sasl-values.yaml"))
    assert not [d for d in docs if d["kind"] == "Secret"]
    spec = workload(docs)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["kafka-password"]["secret"]["secretName"] == "skystream-kafka"
    config = yaml.safe_load(one([d for d in docs if d["metadata"]["name"] == "obs-skystream"],
                                "ConfigMap")["data"]["config.yaml"])  # fmt: skip
    security = config["source"]["kafka"]["security"]
    mount = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert security["password_file"] == f"{mount['kafka-password']}/password"
    assert security["ssl_cafile"] == f"{mount['kafka-ca']}/ca.crt"
    assert "password" not in json.dumps(spec["containers"][0].get("env", [])).lower()


def test_statefulset_variant_keeps_state_on_a_volume(helm) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "statefulset-values.yaml"))
    sts = one(docs, "StatefulSet")
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    names = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "state" not in names  # the claim template provides it
    assert sts["spec"]["serviceName"] == "obs-skystream-headless"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("replicaCount=-1", "replicaCount"),
        ("workload.kind=Job", "workload.kind"),
        ("kafka.securityProtocol=TLS", "kafka.securityProtocol"),
        ("service.port=70000", "service.port"),
        ("persistence.size=lots", "persistence.size"),
    ],
)
def test_schema_refuses_bad_values(helm, flag, message) -> None:
    result = subprocess.run([str(helm), "template", "obs", str(CHART), "--set", flag],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr


def test_sasl_without_a_secret_is_refused(helm) -> None:
    result = subprocess.run(
        [str(helm), "template", "obs", str(CHART), "--set", "kafka.enabled=true",
         "--set", "kafka.securityProtocol=SASL_SSL"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "kafka.sasl.passwordSecret.name is required" in result.stderr


#: Values documented as a whole (their inside is Kubernetes' or the daemon's own schema).
WHOLE = {"config", "podSecurityContext", "securityContext", "resources",
         "networkPolicy.metricsFrom.namespaceSelector"}  # fmt: skip


def _leaves(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict) and node and path not in WHOLE:
        return [leaf for key, value in node.items() for leaf in _leaves(value, _join(path, key))]
    return [path]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _commented_keys(text: str) -> set[str]:
    """Dotted keys of values.yaml preceded directly by a helm-docs ``# --`` comment."""
    documented, stack, comment = set(), [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped)
            continue
        if not stripped or stripped.startswith("-"):
            comment = []
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0]
        stack = [(i, k) for i, k in stack if i < indent]
        path = ".".join([k for _, k in stack] + [key])
        if any(c.startswith("# --") for c in comment):
            documented.add(path)
        stack.append((indent, key))
        comment = []
    return documented


def test_every_value_is_documented_in_values_and_the_chart_readme() -> None:
    text = (CHART / "values.yaml").read_text()
    leaves = _leaves(yaml.safe_load(text))
    undocumented = sorted(set(leaves) - _commented_keys(text))
    assert not undocumented, f"values without a '# --' comment: {undocumented}"
    readme = (CHART / "README.md").read_text()
    missing = [key for key in leaves if f"| `{key}` |" not in readme]
    assert not missing, f"values missing from helm/skystream/README.md: {missing}"


def test_default_keeps_state_on_a_claim_that_outlives_the_pod(helm, tmp_path) -> None:
    docs = render(helm)
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "obs-skystream-state"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    deployment = one(docs, "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": "obs-skystream-state"},
    }
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one RWO volume, one pod
    assert "WARNING" not in notes(helm, tmp_path)


def test_without_persistence_notes_say_what_a_restart_costs(helm, tmp_path) -> None:
    docs = render(helm, "--set", "persistence.enabled=false")
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    volumes = {v["name"]: v for v in workload(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {}}
    text = notes(helm, tmp_path, "--set", "persistence.enabled=false")
    assert "WARNING: persistence.enabled is false" in text
    assert "the ledger of finished files is gone" in text
    kafka = notes(helm, tmp_path / "k", "--set", "persistence.enabled=false",
                  "--set", "kafka.enabled=true")  # fmt: skip
    assert "rebuilt from the state topic" in kafka


def test_several_deployment_replicas_cannot_share_one_state_volume(helm) -> None:
    result = subprocess.run(
        [str(helm), "template", "obs", str(CHART), "--set", "kafka.enabled=true",
         "--set", "replicaCount=3"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "use workload.kind: StatefulSet" in result.stderr
    existing = render(helm, "--set", "persistence.existingClaim=skystream-state")
    volumes = {v["name"]: v for v in workload(existing)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"] == {"claimName": "skystream-state"}
    assert not [d for d in existing if d["kind"] == "PersistentVolumeClaim"]


def test_digest_priority_and_spread_reach_the_pods(helm) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "monitoring-keda-values.yaml"))
    spec = workload(docs)["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == (
        "ghcr.io/skystream/skystream@sha256:" + "0123456789abcdef" * 4
    )
    assert spec["priorityClassName"] == "telescope-critical"
    [spread] = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    pod_labels = workload(docs)["spec"]["template"]["metadata"]["labels"]
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    result = subprocess.run([str(helm), "template", "obs", str(CHART), "--set",
                             "image.digest=latest"], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode != 0 and "image.digest" in result.stderr


def test_alerts_select_the_label_the_service_monitor_copies(helm) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "monitoring-keda-values.yaml"),
                  "--set", "fullnameOverride=sky-live")  # fmt: skip
    monitor = one(docs, "ServiceMonitor")
    [label] = monitor["spec"]["targetLabels"]
    service = one([d for d in docs if d["metadata"]["name"] == "sky-live"], "Service")
    value = service["metadata"]["labels"][label]
    rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    prometheus_name = label.replace(".", "_").replace("/", "_").replace("-", "_")
    assert any(f'up{{{prometheus_name}="{value}"}}' in expr for expr in exprs)
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scrapeTimeout"] == "5s"
    assert endpoint["relabelings"] == [{"targetLabel": "cluster", "replacement": "telescope-east"}]


def test_network_policy_admits_only_monitoring_and_the_test_pod(helm) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "monitoring-keda-values.yaml"))
    policy = one(docs, "NetworkPolicy")
    pod_labels = workload(docs)["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    monitoring, tester = rule["from"]
    assert monitoring == {"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}  # fmt: skip
    test_pod = one(docs, "Pod")
    assert tester["podSelector"]["matchLabels"].items() <= test_pod["metadata"]["labels"].items()
    assert not [d for d in render(helm) if d["kind"] == "NetworkPolicy"]


def test_helm_test_pod_checks_readiness_and_metrics_through_the_service(helm) -> None:
    docs = render(helm)
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    assert (
        container["image"] == workload(docs)["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    script = container["args"][0]
    service = one(docs, "Service")
    assert (
        f'"http://{service["metadata"]["name"]}:{service["spec"]["ports"][0]["port"]}"' in script
    )
    assert '"/readyz"' in script and '"/metrics"' in script
    compile(script, "helm-test", "exec")  # the script is valid Python
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_crd_objects_render_from_declared_api_versions(helm, tmp_path) -> None:
    values = CHART / "ci" / "gitops-values.yaml"
    kinds = {d["kind"] for d in render(helm, "-f", str(values), apis=False)}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    text = notes(helm, tmp_path, "--set", "metrics.serviceMonitor.enabled=true")
    assert "no ServiceMonitor was rendered" in text and "apiVersions" in text
