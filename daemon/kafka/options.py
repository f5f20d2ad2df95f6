"""Connection options shared by every Kafka client of skystream (brokers, TLS, SASL)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from aiokafka.helpers import create_ssl_context

from daemon.app.settings import ConfigError, KafkaSecuritySettings, KafkaSourceSettings
from daemon.retry import Retrier

__all__ = ["BROKERS", "client_options", "started"]

log = logging.getLogger("skystream.kafka")

#: The condition named in /readyz while the brokers cannot be reached.
BROKERS = "Kafka brokers"


class _Client(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


C = TypeVar("C", bound=_Client)


async def started(make: Callable[[], C], retrier: Retrier) -> C:
    """A started aiokafka client, made anew for each attempt while the brokers are down."""

    async def attempt() -> C:
        client = make()
        try:
            await client.start()
        except BaseException:
            await client.stop()
            raise
        return client

    return await retrier.call(BROKERS, attempt)


def _password(security: KafkaSecuritySettings, environ: Mapping[str, str]) -> str:
    if security.password_file is not None:
        try:
            return security.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"key 'source.kafka.security.password_file': cannot read "
                f"{security.password_file} ({exc.strerror})"
            ) from None
    if security.password_env is not None:
        if security.password_env not in environ:
            raise ConfigError(
                f"key 'source.kafka.security.password_env': the environment variable "
                f"{security.password_env} is not set"
            )
        return environ[security.password_env]
    raise ConfigError("key 'source.kafka.security': SASL needs password_file or password_env")


def client_options(
    settings: KafkaSourceSettings, *, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client: brokers, client id and security.

    The SASL password is read here, when a client is built, from the file or environment
    variable the settings name; it never appears in the settings, ``skystream config`` or
    the logs.

    Parameters
    ----------
    settings : KafkaSourceSettings
        Brokers, client id and the ``security`` section.
    environ : mapping, optional
        Where ``password_env`` is looked up; `os.environ` by default.

    Returns
    -------
    dict
        ``bootstrap_servers``, ``client_id``, ``security_protocol`` and, as the protocol
        needs them, ``ssl_context`` and ``sasl_*``.

    Raises
    ------
    ConfigError
        If SASL lacks a user name or a readable password, or a TLS file cannot be read.
    """
    security = settings.security
    options: dict[str, Any] = {
        "bootstrap_servers": ",".join(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "security_protocol": security.protocol,
    }
    if security.protocol in ("SSL", "SASL_SSL"):
        try:
            context = create_ssl_context(
                cafile=security.ssl_cafile and str(security.ssl_cafile),
                certfile=security.ssl_certfile and str(security.ssl_certfile),
                keyfile=security.ssl_keyfile and str(security.ssl_keyfile),
            )
        except OSError as exc:
            raise ConfigError(
                f"key 'source.kafka.security': cannot load TLS files ({exc})"
            ) from None
        context.check_hostname = security.ssl_check_hostname
        options["ssl_context"] = context
    if security.protocol.startswith("SASL"):
        if not security.username:
            raise ConfigError("key 'source.kafka.security.username': SASL needs a user name")
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.username
        options["sasl_plain_password"] = _password(
            security, os.environ if environ is None else environ
        )
    return options
