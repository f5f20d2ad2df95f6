"""SIGHUP: re-read the configuration, apply what can change live, name what needs a restart."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from daemon.app.settings import ConfigError, Settings, load_settings, merge_overrides
from daemon.intake.delivery import Source
from daemon.intake.directory import DirectorySource
from daemon.ops.logs import configure_logging

__all__ = [
    "LIVE_KEYS",
    "Reconfigurable",
    "apply_live_settings",
    "diff_settings",
    "reload_configuration",
]

log = logging.getLogger("skystream.reload")

#: Settings a running daemon takes without a restart. The folder source reads its timings
#: at each use; everything else is built into long-lived parts at start.
LIVE_KEYS = frozenset(
    {
        "logging.level",
        "logging.format",
        "source.directory.settle_seconds",
        "source.directory.incomplete_timeout_seconds",
        "source.directory.check_interval_seconds",
        "source.directory.rescan_seconds",
    }
)


class Reconfigurable(Protocol):
    """What a reload needs of the running service."""

    #: The settings in effect; replaced by the reloaded ones.
    settings: Settings
    #: The running source (a `DirectorySource` takes new timings).
    source: Source | None


def _leaves(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Every setting as ``dotted.key -> value`` (lists and mappings are single values)."""
    leaves: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            leaves.update(_leaves(value, f"{prefix}{name}."))
        else:
            leaves[f"{prefix}{name}"] = value
    return leaves


def diff_settings(old: Settings, new: Settings) -> tuple[list[str], list[str]]:
    """The keys whose values differ, split into those applied live and the others.

    Parameters
    ----------
    old, new : Settings
        The settings in effect and the reloaded ones.

    Returns
    -------
    live_changes : list of str
        Changed keys in `LIVE_KEYS` (dotted, sorted).
    restart_needed : list of str
        Changed keys that take effect only at the next start.
    """
    before, after = _leaves(old), _leaves(new)
    changed = sorted(key for key in before if before[key] != after[key])
    return [k for k in changed if k in LIVE_KEYS], [k for k in changed if k not in LIVE_KEYS]


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def apply_live_settings(service: Reconfigurable, new: Settings) -> list[str]:
    """Put the live settings of ``new`` into effect; leave every other setting as it is.

    Parameters
    ----------
    service : Reconfigurable
        The running service.
    new : Settings
        The reloaded settings.

    Returns
    -------
    list of str
        The keys applied.
    """
    live, _ = diff_settings(service.settings, new)
    if not live:
        return []
    values = _leaves(new)
    effective = merge_overrides(service.settings, _nested({key: values[key] for key in live}))
    if any(key.startswith("logging.") for key in live):
        configure_logging(effective.logging.level, effective.logging.format)
    if isinstance(service.source, DirectorySource):
        service.source.reconfigure(effective.source.directory)
    service.settings = effective
    return live


def reload_configuration(service: Reconfigurable, path: Path | None) -> None:
    """Re-read the configuration file and the environment; apply what can change live.

    What needs a restart is named in one warning; an invalid configuration keeps the
    settings in effect, with one error line saying why.

    Parameters
    ----------
    service : Reconfigurable
        The running service.
    path : Path or None
        The configuration file the daemon started with (None: the built-in defaults).
    """
    try:
        new = load_settings(path)
    except ConfigError as exc:
        # One line, no traceback: the message names the key (and variable) at fault.
        log.error("configuration not reloaded, the running settings are kept: %s", exc)  # noqa: TRY400
        return
    old = service.settings
    live, restart = diff_settings(old, new)
    if restart:
        log.warning("needs a restart: %s", ", ".join(restart))
    if not live:
        log.info("configuration reloaded: nothing to change live")
        return
    apply_live_settings(service, new)
    before, after = _leaves(old), _leaves(new)
    # Logged once applied, so that it already shows the new level and format.
    log.info(
        "configuration reloaded: %s",
        ", ".join(f"{key} {before[key]} -> {after[key]}" for key in live),
    )
