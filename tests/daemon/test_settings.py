"""Settings: YAML, environment overrides, unknown keys, the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.app.settings import ConfigError, Settings, load_settings, settings_to_yaml

REPO = Path(__file__).resolve().parents[2]


def test_default_yaml_is_the_embedded_default(tmp_path: Path) -> None:
    from_file = load_settings(REPO / "config" / "default.yaml", environ={}, base=tmp_path)
    assert from_file == load_settings(environ={}, base=tmp_path)
    assert from_file.source.directory.path == tmp_path / "inbox"
    assert from_file.output.directory == tmp_path / "products"
    assert from_file.quarantine.directory == tmp_path / "quarantine"
    assert from_file.state.directory == tmp_path / ".skystream"
    assert from_file.metrics.port == 9108


def test_every_default_key_is_commented_in_default_yaml() -> None:
    lines = (REPO / "config" / "default.yaml").read_text().splitlines()
    keyed = [line for line in lines if ":" in line and not line.lstrip().startswith("#")]
    leaves = [line for line in keyed if not line.rstrip().endswith(":")]
    assert leaves and all("#" in line for line in leaves)


def test_yaml_then_environment_nested_with_double_underscore(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("background:\n  box_size: 32\nmetrics:\n  port: 1000\n")
    settings = load_settings(
        config,
        environ={
            "SKYSTREAM_METRICS__PORT": "2000",
            "SKYSTREAM_BACKGROUND__DQBITS": "~DO_NOT_USE+NON_SCIENCE",
            "SKYSTREAM_ROUTING__STACK_KEY": "[INSTRUME, FILTER]",
            "OTHER_VAR": "ignored",
        },
        base=tmp_path,
    )
    assert settings.background.box_size == 32
    assert settings.metrics.port == 2000
    assert settings.background.dqbits == "~DO_NOT_USE+NON_SCIENCE"
    assert settings.routing.stack_key == ["INSTRUME", "FILTER"]


@pytest.mark.parametrize(
    ("yaml_text", "environ", "message"),
    [
        ("background:\n  boxsize: 3\n", {}, "unknown key 'background.boxsize'"),
        ("", {"SKYSTREAM_METRICS__PROT": "1"}, "unknown key 'metrics.prot'"),
        ("metrics:\n  port: -5\n", {}, "key 'metrics.port'"),
        ("background:\n  estimator: magic\n", {}, "key 'background.estimator'"),
        ("background:\n  dqbits: NOPE\n", {}, "key 'background.dqbits'"),
        ("- a\n- b\n", {}, "must hold a mapping"),
        ("a: [\n", {}, "not valid YAML"),
    ],
)
def test_bad_configuration_names_the_key(
    tmp_path: Path, yaml_text: str, environ: dict[str, str], message: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ=environ, base=tmp_path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_printed_configuration_loads_back(tmp_path: Path) -> None:
    settings = load_settings(environ={"SKYSTREAM_LANES__QUEUE_SIZE": "3"}, base=tmp_path)
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(settings_to_yaml(settings))
    assert load_settings(dumped, environ={}, base=tmp_path) == settings
    assert isinstance(settings, Settings)
