"""The live sky page in a real headless Chromium (Debian's package): its DOM as the browser
built it, and a screenshot kept under the test's temporary folder."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.daemon.sky_night import HOSTILE, SCIENCE, sky_night

WINDOW = (1280, 1600)


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is not None:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _browse(browser: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run with a fresh profile and nothing fetched from outside."""
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}", *arguments,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_chromium_renders_the_live_page(tmp_path: Path, capsys) -> None:
    browser = _chromium()
    screenshot = tmp_path / "sky_page.png"
    async with sky_night(tmp_path / "night") as night:
        dom = await asyncio.to_thread(
            _browse, browser, tmp_path / "profile-dom", "--dump-dom", f"{night.url}/"
        )
        shot = await asyncio.to_thread(
            _browse, browser, tmp_path / "profile-shot", f"--screenshot={screenshot}",
            f"{night.url}/",
        )  # fmt: skip
    with capsys.disabled():
        print(f"\nlive sky page screenshot: {screenshot}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert shot.returncode == 0, shot.stderr[-2000:]

    # The DOM the browser built: every section, a card and a thumbnail per product, the
    # plot, and the hostile file name as text (the only images are the thumbnails).
    page = dom.stdout
    assert "<title>skystream · live sky</title>" in page
    for section in ("products", "sky", "stacks", "groups", "quarantine"):
        assert f'<section id="{section}">' in page, section
    assert len(re.findall(r'<div class="card product"', page)) == len(SCIENCE)
    assert len(re.findall(r"<img ", page)) == len(SCIENCE)
    assert len(re.findall(r'<img class="thumbnail" src="/thumbnail/\d+"', page)) == len(SCIENCE)
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and HOSTILE not in page
    assert re.search(r'<polyline class="series" data-series="[^"]+" points="[^"]+"', page)
    assert "not_fits" in page and 'id="status" class="ready"' in page

    # The screenshot: the page's size, and the thumbnails drawn (the page's own colours
    # are tinted; only the quicklooks are neutral greys, tens of thousands of pixels).
    with Image.open(screenshot) as shown:
        picture = np.asarray(shown.convert("RGB"), dtype=np.int16)
    assert picture.shape == (WINDOW[1], WINDOW[0], 3)
    red, green, blue = picture[..., 0], picture[..., 1], picture[..., 2]
    neutral = (red == green) & (green == blue) & (red > 40) & (red < 230)
    assert neutral.sum() > 50_000
