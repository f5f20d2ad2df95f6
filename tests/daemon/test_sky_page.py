"""The live sky page over real HTTP: what an observer sees, escaped, read-only, and kept
across a restart."""

from __future__ import annotations

import html
import re
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import running
from tests.daemon.sky_night import HOSTILE, SCIENCE, SKY, night_settings, sky_night

pytestmark = pytest.mark.asyncio


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes, dict[str, str]]:
    async with http.get(url) as response:
        return (
            response.status,
            response.content_type,
            await response.read(),
            dict(response.headers),
        )


async def test_the_page_shows_products_sky_stacks_groups_and_quarantine(tmp_path: Path) -> None:
    async with sky_night(tmp_path) as night, aiohttp.ClientSession() as http:
        status, kind, body, headers = await _get(http, f"{night.url}/")
        page = body.decode()
        assert (status, kind) == (200, "text/html")
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert '<meta http-equiv="refresh"' in page and "<script" not in page

        # Latest products, newest first, each with its quicklook thumbnail.
        cards = re.findall(r'<div class="card product" data-exposure="([^"]*)">', page)
        assert [html.unescape(c) for c in cards] == list(reversed(SCIENCE))
        thumbnails = re.findall(r'src="/thumbnail/(\d+)"', page)
        assert len(thumbnails) == len(SCIENCE)
        for serial in thumbnails:
            status, kind, picture, _ = await _get(http, f"{night.url}/thumbnail/{serial}")
            assert (status, kind) == (200, "image/png") and picture.startswith(b"\x89PNG")
        full = night.settings.output.directory / "night_0002_bsub.png"
        serial = night.service.night.latest()[1].serial  # night_0002, second newest
        status, _, picture, _ = await _get(http, f"{night.url}/quicklook/{serial}")
        assert status == 200 and picture == full.read_bytes()

        # A file name that is markup is shown as text, never as markup.
        assert html.escape(HOSTILE) in page and HOSTILE not in page

        # The sky over the night: the stack key's levels, one point per product.
        key = night.service.night.latest()[0].event.stack_key
        assert key is not None
        plot = page[page.index('id="sky-level"') : page.index('id="sky-rms"')]
        series = re.escape(html.escape(key))
        [points] = re.findall(rf'data-series="{series}" points="([^"]*)"', plot)
        assert len(points.split()) == len(SCIENCE)

        # The stack with its background frame, the open group with provisional levels,
        # the quarantined file with its reason.
        stacks = page[page.index('id="stacks"') : page.index('id="groups"')]
        assert html.escape(key) in stacks and SKY in stacks
        assert '<td class="num">1</td>' in stacks  # one member
        groups = page[page.index('id="groups"') : page.index('id="quarantine"')]
        assert "night_0001" in groups and "night_0002" in groups
        assert re.search(r"<td class=\"num\">3</td>", groups)  # three images so far
        quarantine = page[page.index('id="quarantine"') :]
        assert "broken.fits" in quarantine and "not_fits" in quarantine


async def test_the_page_is_read_only_and_serves_only_its_own_files(tmp_path: Path) -> None:
    async with sky_night(tmp_path) as night, aiohttp.ClientSession() as http:
        status, kind, css, _ = await _get(http, f"{night.url}/static/sky.css")
        assert (status, kind) == (200, "text/css") and b"body" in css
        status, kind, _, _ = await _get(http, f"{night.url}/static/favicon.svg")
        assert (status, kind) == (200, "image/svg+xml")
        for path in (
            "/static/sky.html",  # the template is package data, not a page
            "/static/..%2F..%2Fsettings.py",
            "/thumbnail/999999",
            "/quicklook/0",
            "/quicklook/..%2Fnight_0001_bsub.fits",
        ):
            status, *_ = await _get(http, night.url + path)
            assert status == 404, path
        for method in ("POST", "PUT", "DELETE"):
            async with http.request(method, f"{night.url}/") as response:
                assert response.status == 405, method


async def test_a_restarted_daemon_shows_the_night_so_far(tmp_path: Path) -> None:
    async with sky_night(tmp_path):
        pass
    async with running(night_settings(tmp_path)) as service, aiohttp.ClientSession() as http:
        assert service.health is not None
        url = f"http://127.0.0.1:{service.health.port}"
        status, _, body, _ = await _get(http, f"{url}/")
        page = body.decode()
        assert status == 200
        cards = re.findall(r'<div class="card product" data-exposure="([^"]*)">', page)
        assert sorted(html.unescape(c) for c in cards) == sorted(SCIENCE)
        history = service.night.history()
        assert [len(points) for points in history.values()] == [len(SCIENCE)]
        for serial in re.findall(r'src="/thumbnail/(\d+)"', page):  # the PNGs on disk
            status, kind, picture, _ = await _get(http, f"{url}/thumbnail/{serial}")
            assert (status, kind) == (200, "image/png") and picture.startswith(b"\x89PNG")
