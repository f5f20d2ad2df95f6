"""Configuration reload (SIGHUP): what changes live, what needs a restart, bad files.

The signal itself, the log level and format and the log lines are tested on a real
daemon process in test_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.app.reload import LIVE_KEYS, diff_settings, reload_configuration
from daemon.app.settings import Settings, load_settings, merge_overrides, settings_to_yaml
from daemon.fileio.fits_io import write_exposure
from tests.conftest import metric, products_in, running, small_exposure, test_settings, wait_until


def test_diff_settings_splits_live_changes_from_restarts(tmp_path: Path) -> None:
    old = load_settings(environ={}, base=tmp_path)
    new = merge_overrides(
        old,
        {
            "logging": {"level": "DEBUG"},
            "source": {"directory": {"settle_seconds": 9.0}},
            "metrics": {"port": 9300},
            "background": {"box_size": [32, 32]},
            "routing": {"background_when": {"header": {"OBSTYPE": ["SKY"]}}},
        },
    )
    live, restart = diff_settings(old, new)
    assert live == ["logging.level", "source.directory.settle_seconds"]
    assert restart == ["background.box_size", "metrics.port", "routing.background_when.header"]
    assert diff_settings(old, old) == ([], [])


def test_every_live_key_is_a_setting() -> None:
    settings = Settings()
    for key in LIVE_KEYS:
        node = settings
        for part in key.split("."):
            node = getattr(node, part)
        assert not hasattr(node, "model_fields"), f"{key} is a section, not a setting"


@pytest.mark.asyncio
async def test_a_reload_applies_the_settle_time_to_the_running_source(tmp_path: Path) -> None:
    # Polling: no close-after-write event, so only settle_seconds releases the file.
    settings = test_settings(
        tmp_path,
        source={"directory": {"polling": True, "poll_interval_seconds": 0.1,
                              "settle_seconds": 3600.0}},
    )  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(settings_to_yaml(settings))
    exposure = tmp_path / "exposure.fits"
    write_exposure(small_exposure(size=64), exposure, fsync=False)
    async with running(settings) as service:
        (settings.source.directory.path / "a.fits").write_bytes(exposure.read_bytes())
        await wait_until(lambda: metric(service, "skystream_pending_files") == 1)

        config.write_text("source:\n  directory:\n    settle_seconds: soon\n")
        reload_configuration(service, config)
        assert service.settings is settings  # an invalid file changes nothing

        config.write_text(settings_to_yaml(settings).replace("3600.0", "0.2"))
        reload_configuration(service, config)
        assert service.settings.source.directory.settle_seconds == 0.2
        await wait_until(lambda: len(products_in(settings.output.directory)) == 1)
        assert metric(service, "skystream_pending_files") == 0
