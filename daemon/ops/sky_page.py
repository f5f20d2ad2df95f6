"""The live sky page at ``/`` on the metrics port: read-only, server-rendered, no script.

It shows the latest products with their quicklooks, the sky level and RMS over the night
per stack key (inline SVG), the stacks and their members, the open mosaic groups with
their provisional levels, and the quarantine with reasons. The page refreshes itself
(``<meta http-equiv="refresh">``); its style sheet and icon ship inside the package. It
only answers GET, reads skystream's own state files, and serves pictures only of the
products it lists, by number: no path ever comes from a request.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from aiohttp import web

from daemon.fileio.names import safe_file_name
from daemon.ops.night_record import NightRecord, ProductEntry
from daemon.ops.quicklooks import Quicklooks
from daemon.ops.svg_plot import line_plot
from processors import __version__

__all__ = ["SkyPage"]

_ASSETS = resources.files("daemon.ops") / "sky_assets"
#: The files under /static/, with their types (nothing else is served from there).
_STATIC = {"sky.css": "text/css", "favicon.svg": "image/svg+xml"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_QUARANTINE_SHOWN = 20
_MEMBERS_SHOWN = 12


def _clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")


def _number(value: float | None, digits: int = 5) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def _table(headings: list[str], rows: list[list[str]], empty: str, numeric: set[int]) -> str:
    """An HTML table of already escaped cells, or a line saying there is nothing."""
    if not rows:
        return f'<p class="empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headings)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class _Snapshot:
    """What the state files say now (read in a worker thread)."""

    stacks: list[dict[str, Any]]
    groups: list[tuple[dict[str, Any], dict[str, Any] | None]]
    quarantine: list[dict[str, Any]]


class SkyPage:
    """The page and its routes.

    Parameters
    ----------
    record : NightRecord
        The latest products and the sky trend.
    state : Path
        The state folder (stack membership in ``stacks/``, open groups in ``skymatch/``).
    products : Path
        The product folder (group tables in ``skymatch/``).
    quarantine : Path
        The quarantine folder (``*.reason.json``).
    readiness : callable
        ``(ready, reasons)`` of the service, shown at the top.
    quicklooks : Quicklooks, optional
        The quicklook worker, whose counts are shown; None when quicklooks are off.
    refresh_seconds : int
        How often the browser reloads the page.
    """

    def __init__(
        self,
        record: NightRecord,
        *,
        state: Path,
        products: Path,
        quarantine: Path,
        readiness: Callable[[], tuple[bool, list[str]]],
        quicklooks: Quicklooks | None = None,
        refresh_seconds: int = 10,
    ) -> None:
        self._record = record
        self._state = state
        self._products = products
        self._quarantine = quarantine
        self._readiness = readiness
        self._quicklooks = quicklooks
        self._refresh = refresh_seconds
        self._template = Template((_ASSETS / "sky.html").read_text(encoding="utf-8"))
        self._static = {name: (_ASSETS / name).read_bytes() for name in _STATIC}

    def routes(self) -> list[web.RouteDef]:
        """The GET routes of the page, its assets and its pictures."""
        return [
            web.get("/", self._page),
            web.get("/static/{name}", self._asset),
            web.get("/thumbnail/{serial:[0-9]+}", self._thumbnail),
            web.get("/quicklook/{serial:[0-9]+}", self._full_quicklook),
        ]

    # -- handlers --------------------------------------------------------------------------

    async def _page(self, _request: web.Request) -> web.Response:
        snapshot = await asyncio.to_thread(self._snapshot)
        return web.Response(
            text=self.render(snapshot),
            content_type="text/html",
            headers={**_HEADERS, "Cache-Control": "no-store"},
        )

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=self._static[name], content_type=_STATIC[name], headers=_HEADERS)

    def _entry(self, request: web.Request) -> ProductEntry:
        entry = self._record.entry(int(request.match_info["serial"]))
        if entry is None:
            raise web.HTTPNotFound()
        return entry

    async def _thumbnail(self, request: web.Request) -> web.StreamResponse:
        entry = self._entry(request)
        if entry.thumbnail is not None:
            return web.Response(body=entry.thumbnail, content_type="image/png", headers=_HEADERS)
        return await self._full_quicklook(request)

    async def _full_quicklook(self, request: web.Request) -> web.StreamResponse:
        entry = self._entry(request)
        if entry.quicklook is None:
            raise web.HTTPNotFound()
        try:
            body = await asyncio.to_thread(entry.quicklook.read_bytes)
        except OSError:
            raise web.HTTPNotFound() from None
        return web.Response(body=body, content_type="image/png", headers=_HEADERS)

    # -- state files (worker thread) -------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        stacks = [
            record
            for path in sorted((self._state / "stacks").glob("*.json"))
            if isinstance(record := _read_json(path), dict)
        ]
        groups = []
        for path in sorted((self._state / "skymatch").glob("*.json")):
            record = _read_json(path)
            if isinstance(record, dict) and "group" in record:
                table = _read_json(
                    self._products / "skymatch" / f"{safe_file_name(str(record['group']))}.json"
                )
                groups.append((record, table if isinstance(table, dict) else None))
        return _Snapshot(stacks, groups, self._quarantined())

    def _quarantined(self) -> list[dict[str, Any]]:
        """The newest reason files of the quarantine folder."""
        try:
            with os.scandir(self._quarantine) as entries:
                found = [
                    (entry.stat().st_mtime, entry.path)
                    for entry in entries
                    if entry.name.endswith(".reason.json") and entry.is_file()
                ]
        except OSError:
            return []
        newest = heapq.nlargest(_QUARANTINE_SHOWN, found)
        return [r for _, p in newest if isinstance(r := _read_json(Path(p)), dict)]

    # -- HTML ------------------------------------------------------------------------------

    def render(self, snapshot: _Snapshot) -> str:
        """The whole page."""
        ready, reasons = self._readiness()
        status = "ready" if ready else "not ready: " + "; ".join(reasons)
        if self._quicklooks is None:
            quicklooks = "quicklooks off (output.quicklook)"
        else:
            q = self._quicklooks
            quicklooks = f"quicklooks {q.written} written, {q.dropped} dropped, {q.failed} failed"
        history = self._record.history()
        return self._template.substitute(
            refresh=self._refresh,
            status=escape(status),
            status_class="ready" if ready else "not-ready",
            version=escape(__version__),
            now=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            quicklooks=escape(quicklooks),
            products=self._products_html(),
            level_plot=line_plot(
                {key: [(p.time, p.level) for p in points] for key, points in history.items()},
                x_label="time (UTC)",
                y_label="level",
                x_time=True,
            ),
            rms_plot=line_plot(
                {
                    key: [(p.time, p.rms) for p in points if p.rms is not None]
                    for key, points in history.items()
                },
                x_label="time (UTC)",
                y_label="RMS",
                x_time=True,
                height=180,
            ),
            stacks=self._stacks_html(snapshot.stacks),
            groups=self._groups_html(snapshot.groups),
            quarantine=self._quarantine_html(snapshot.quarantine),
        )

    def _products_html(self) -> str:
        entries = self._record.latest()
        if not entries:
            return '<p class="empty">no product yet</p>'
        cards = []
        for entry in entries:
            event = entry.event
            name = escape(event.exposure_id)
            if entry.thumbnail is not None or entry.quicklook is not None:
                picture = (
                    f'<a href="/quicklook/{entry.serial}"><img class="thumbnail" '
                    f'src="/thumbnail/{entry.serial}" alt="quicklook of {name}"></a>'
                )
            elif self._quicklooks is None:
                picture = '<div class="no-picture">quicklooks are off</div>'
            else:
                picture = '<div class="no-picture">no quicklook (yet)</div>'
            cards.append(
                f'<div class="card product" data-exposure="{name}">{picture}'
                f'<div class="id">{name}</div>'
                f"<div>{_clock(event.produced_at.timestamp())} · "
                f"{escape(event.stack_key or '(no key)')}</div>"
                f'<div><span class="status-{escape(event.status)}">{escape(event.status)}</span>'
                f" {escape(event.method or '')} · level {_number(event.background_level)} · "
                f"RMS {_number(event.background_rms, 4)}</div></div>"
            )
        return '<div class="cards">' + "".join(cards) + "</div>"

    def _stacks_html(self, stacks: list[dict[str, Any]]) -> str:
        now = time.time()
        rows = []
        for record in stacks:
            members = record.get("members") or {}
            times = [
                float(m["obs_time"])
                for m in members.values()
                if isinstance(m, dict) and "obs_time" in m
            ]
            ids = list(members)
            shown = ", ".join(escape(str(m)) for m in ids[-_MEMBERS_SHOWN:])
            if len(ids) > _MEMBERS_SHOWN:
                shown = f"… {shown}"
            rows.append(
                [
                    escape(str(record.get("key", "?"))),
                    str(len(ids)),
                    _duration(now - min(times)) if times else "-",
                    f'<span class="members">{shown}</span>',
                ]
            )
        return _table(
            ["stack key", "members", "oldest", "member exposures (newest last)"],
            rows,
            "no stack (the stack method keeps one per stack key)",
            {1, 2},
        )

    def _groups_html(self, groups: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> str:
        now = time.time()
        rows = []
        for record, table in groups:
            members = (table or {}).get("members") or []
            levels = ", ".join(
                f"{escape(str(m.get('exposure_id')))} {_number(m.get('level'), 4)}"
                + ("" if m.get("valid", True) else " (invalid)")
                for m in members
                if isinstance(m, dict)
            )
            rows.append(
                [
                    escape(str(record["group"])),
                    str(len(record.get("products") or {})),
                    str(record.get("revision", "")),
                    _duration(now - float(record.get("last_arrival", now))),
                    f'<span class="members">{levels or "-"}</span>',
                ]
            )
        return _table(
            ["group", "images", "revision", "idle", "provisional levels"],
            rows,
            "no open mosaic group",
            {1, 2, 3},
        )

    def _quarantine_html(self, records: list[dict[str, Any]]) -> str:
        rows = [
            [
                escape(str(r.get("quarantined_at", ""))),
                escape(Path(str(r.get("original_path", "?"))).name),
                f"<strong>{escape(str(r.get('reason', '?')))}</strong>",
                escape(str(r.get("detail", ""))),
            ]
            for r in records
        ]
        headings = ["when (UTC)", "file", "reason", "detail"]
        return _table(headings, rows, "nothing quarantined", set())
