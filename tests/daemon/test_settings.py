"""Settings: YAML, environment overrides parsed by field type, unknown keys, the default."""

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
    assert from_file.metrics.host == "127.0.0.1"  # not every interface unless configured
    assert from_file.source.directory.create is False


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
            "SKYSTREAM_ROUTING__STACK_KEY": '["INSTRUME", "FILTER"]',
            "OTHER_VAR": "ignored",
        },
        base=tmp_path,
    )
    assert settings.background.box_size == 32
    assert settings.metrics.port == 2000
    assert settings.background.dqbits == "~DO_NOT_USE+NON_SCIENCE"
    assert settings.routing.stack_key == ["INSTRUME", "FILTER"]


def test_environment_values_are_parsed_by_the_field_type(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "SKYSTREAM_SOURCE__KAFKA__GROUP_ID": "1234",  # text, although it reads as a number
            "SKYSTREAM_OUTPUT__SUFFIX": "no",  # text, although YAML reads it as false
            "SKYSTREAM_OUTPUT__FSYNC": "false",
            "SKYSTREAM_OUTPUT__PRODUCT_TOPIC": "null",
            "SKYSTREAM_BACKGROUND__BOX_SIZE": "[64, 128]",
            "SKYSTREAM_BACKGROUND__FILTER_SIZE": "5",
            "SKYSTREAM_BACKGROUND__MAXITERS": "null",
            "SKYSTREAM_BACKGROUND__DQBITS": "4",
            "SKYSTREAM_BACKGROUND__STACK__SIGMA": "2.5",
            "SKYSTREAM_ROUTING__BACKGROUND_WHEN__HEADER": '{"OBSTYPE": ["SKY", "DARK"]}',
            "SKYSTREAM_SOURCE__KAFKA__BOOTSTRAP_SERVERS": '["a:9092", "b:9092"]',
        },
        base=tmp_path,
    )
    assert settings.source.kafka.group_id == "1234"
    assert settings.output.suffix == "no"
    assert settings.output.fsync is False
    assert settings.output.product_topic is None
    assert settings.background.box_size == (64, 128)
    assert settings.background.filter_size == 5
    assert settings.background.maxiters is None
    assert settings.background.dqbits == 4
    assert settings.background.stack.sigma == 2.5
    assert settings.routing.background_when.header == {"OBSTYPE": ["SKY", "DARK"]}
    assert settings.source.kafka.bootstrap_servers == ["a:9092", "b:9092"]


def test_a_section_as_json_then_its_keys_one_by_one(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "SKYSTREAM_METRICS__HOST": "0.0.0.0",
            "SKYSTREAM_METRICS": '{"port": 9300, "host": "10.0.0.1"}',
        },
        base=tmp_path,
    )
    assert settings.metrics.port == 9300
    assert settings.metrics.host == "0.0.0.0"  # the key's own variable wins


def test_variables_that_are_not_settings_are_left_alone(tmp_path: Path) -> None:
    # The config file's variable, Kubernetes service links, the test suite's own.
    environ = {
        "SKYSTREAM_CONFIG": "/etc/skystream.yaml",
        "SKYSTREAM_PORT": "tcp://10.0.0.7:9108",
        "SKYSTREAM_SERVICE_HOST": "10.0.0.7",
        "SKYSTREAM_TEST_KAFKA": "localhost:9092",
    }
    assert load_settings(environ=environ, base=tmp_path) == load_settings(
        environ={}, base=tmp_path
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SKYSTREAM_METRICS__PORT": "abc"}, "SKYSTREAM_METRICS__PORT: key 'metrics.port'"),
        ({"SKYSTREAM_METRICS__PROT": "1"}, "SKYSTREAM_METRICS__PROT: unknown key 'metrics.prot'"),
        ({"SKYSTREAM_METRIC__PORT": "1"}, "SKYSTREAM_METRIC__PORT: unknown key 'metric.port'"),
        (
            {"SKYSTREAM_ROUTING__STACK_KEY": "[INSTRUME"},
            "SKYSTREAM_ROUTING__STACK_KEY: 'routing.stack_key' takes JSON",
        ),
        (
            {"SKYSTREAM_ROUTING__STACK_KEY": '["A", 3]'},
            r"SKYSTREAM_ROUTING__STACK_KEY: key 'routing\.stack_key\.1'",
        ),
        ({"SKYSTREAM_METRICS": "9200"}, "SKYSTREAM_METRICS: key 'metrics'"),
        (
            {"SKYSTREAM_BACKGROUND__ESTIMATOR": "magic"},
            "SKYSTREAM_BACKGROUND__ESTIMATOR: key 'background.estimator'",
        ),
        (
            {"SKYSTREAM_METRICS__PORT__NUMBER": "9200"},
            "SKYSTREAM_METRICS__PORT__NUMBER: key 'metrics.port'",
        ),
    ],
)
def test_a_malformed_variable_is_named(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ, base=tmp_path)


def test_the_file_is_blamed_for_its_own_keys_and_the_variable_for_its(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("metrics:\n  port: nine\n  host: 127.0.0.1\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config, environ={"SKYSTREAM_METRICS__HOST": "[1"}, base=tmp_path)
    assert "SKYSTREAM_METRICS__HOST" not in str(raised.value)  # text: no JSON needed
    with pytest.raises(ConfigError) as raised:
        load_settings(config, environ={"SKYSTREAM_LANES__QUEUE_SIZE": "2"}, base=tmp_path)
    assert str(raised.value).startswith("key 'metrics.port'")  # the file's, no variable
    settings = load_settings(config, environ={"SKYSTREAM_METRICS__PORT": "9"}, base=tmp_path)
    assert settings.metrics.port == 9  # the variable overrides the file's bad value


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
