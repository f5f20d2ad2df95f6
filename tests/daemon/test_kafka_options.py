"""Kafka security settings: TLS and SASL options, secrets from files or env, never shown."""

from __future__ import annotations

import ssl

import pytest

from daemon.app.cli import main
from daemon.app.settings import ConfigError, load_settings
from daemon.kafka.options import client_options

SECRET = "s3cr3t-Passw0rd"


def _kafka(tmp_path, environ=None, **security):
    env = {f"SKYSTREAM_SOURCE__KAFKA__SECURITY__{k.upper()}": str(v) for k, v in security.items()}
    return load_settings(environ={**env, **(environ or {})}, base=tmp_path).source.kafka


def test_plaintext_has_no_tls_or_sasl(tmp_path) -> None:
    options = client_options(_kafka(tmp_path))
    assert options == {"bootstrap_servers": "localhost:9092", "client_id": "skystream",
                       "security_protocol": "PLAINTEXT"}  # fmt: skip


def test_sasl_ssl_reads_the_password_file_and_builds_a_tls_context(tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")
    kafka = _kafka(tmp_path, protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                   username="skystream", password_file=secret,
                   ssl_check_hostname="false")  # fmt: skip
    options = client_options(kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "skystream"
    assert options["sasl_plain_password"] == SECRET  # the trailing newline is not part of it
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].check_hostname is False


def test_password_from_the_environment(tmp_path) -> None:
    kafka = _kafka(tmp_path, protocol="SASL_PLAINTEXT", username="u", password_env="KAFKA_PW")
    assert client_options(kafka, environ={"KAFKA_PW": SECRET})["sasl_plain_password"] == SECRET
    with pytest.raises(ConfigError, match="KAFKA_PW is not set"):
        client_options(kafka, environ={})


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"protocol": "SASL_PLAINTEXT", "password_env": "X"}, "needs a user name"),
        ({"protocol": "SASL_PLAINTEXT", "username": "u"}, "password_file or password_env"),
        ({"protocol": "SASL_PLAINTEXT", "username": "u", "password_file": "/nonexistent/pw"},
         "cannot read /nonexistent/pw"),
        ({"protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "cannot load TLS files"),
    ],
)  # fmt: skip
def test_incomplete_security_is_a_config_error_naming_the_key(tmp_path, security, message):
    with pytest.raises(ConfigError, match=message):
        client_options(_kafka(tmp_path, **security))


def test_unknown_protocol_is_refused_when_the_config_loads(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"source\.kafka\.security\.protocol"):
        _kafka(tmp_path, protocol="SASL_TLS")


def test_the_secret_never_appears_in_the_printed_config(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SKYSTREAM_SOURCE__KAFKA__SECURITY__PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SKYSTREAM_SOURCE__KAFKA__SECURITY__USERNAME", "skystream")
    monkeypatch.setenv("SKYSTREAM_SOURCE__KAFKA__SECURITY__PASSWORD_ENV", "KAFKA_PW")
    monkeypatch.setenv("KAFKA_PW", SECRET)
    monkeypatch.chdir(tmp_path)
    assert main(["config"]) == 0
    printed = capsys.readouterr().out
    assert "password_env: KAFKA_PW" in printed
    assert SECRET not in printed
