"""Sky matching across geometries: skystream vs stcal's skymatch, same process, same images.

Nine dithered images on a 3 x 3 grid (30 % steps), aligned or each rotated by 2° more
than the last (0-16°), with offsets 0, 1.5, 3, ... and noise; ``skymethod='match'``,
``skystat='mode'``. stcal (``pip install stcal``, part of the ``bench`` extra through jwst)
is given astropy's WCS transforms, as jwst's step gives it gwcs ones; its time includes
building its SkyImages (bounding polygons), as skystream's includes preparing its own.
Also: what a streaming group holds per member.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from astropy.wcs import WCS

from processors import Exposure, skymatch
from processors.sky_matcher import SkyMatcher
from processors.skystats import SkyStatistic

SCALE = 0.1 / 3600  # deg / pixel


def _wcs(size: int, ra: float, dec: float, angle: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    wcs.wcs.crval = [ra, dec]
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    wcs.wcs.cd = SCALE * np.array([[-c, s], [s, c]])
    wcs.wcs.set()
    return wcs


def _images(count: int, size: int, rotated: bool, noise: float) -> list[Exposure]:
    rng = np.random.default_rng(0)
    step = 0.3 * size * SCALE
    images = []
    for k in range(count):
        sci = (10.0 + 1.5 * k + rng.normal(0, noise, (size, size))).astype(np.float32)
        wcs = _wcs(size, 10.0 + (k % 3) * step, (k // 3) * step, 2.0 * k if rotated else 0.0)
        images.append(Exposure(sci, wcs=wcs))
    return images


def _stcal_levels(images: list[Exposure]) -> tuple[list[float], float]:
    from stcal.skymatch import SkyImage
    from stcal.skymatch import skymatch as stcal_skymatch
    from stcal.skymatch.skystatistics import SkyStats

    start = time.perf_counter()
    sky_images = []
    for k, image in enumerate(images):
        wcs = image.wcs
        assert wcs is not None
        sky_images.append(SkyImage(
            image.sci, np.ones(image.sci.shape, bool),
            lambda x, y, w=wcs, **_: w.all_pix2world(x, y, 0),
            lambda ra, dec, w=wcs, **_: w.all_world2pix(ra, dec, 0),
            skystat=SkyStats("mode"), sky_id=k,
        ))  # fmt: skip
    stcal_skymatch(sky_images, skymethod="match", match_down=True, subtract=False)
    elapsed = time.perf_counter() - start
    return [float(image.sky) for image in sky_images], elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--count", type=int, default=9)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        "| images | geometry | skystream | stcal skymatch | stcal / skystream "
        "| max level difference |"
    )
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        for rotated in (False, True):
            images = _images(args.count, size, rotated, args.noise)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                ours = skymatch(images, skymethod="match", skystat="mode").levels
                times.append(time.perf_counter() - start)
            theirs, theirs_time = _stcal_levels(images)
            ours_time = float(np.median(times))
            diff = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))  # type: ignore[operator]
            geometry = "rotated 0-16°" if rotated else "aligned"
            print(
                f"| {args.count} x {size}² | {geometry} | {ours_time:.2f} s "
                f"| {theirs_time:.2f} s | {theirs_time / ours_time:.1f}x | {diff:.4f} |",
                flush=True,
            )
    print("\n| image | held per member of an open group |")
    print("|---|---|")
    for size in (2048, 4096):
        matcher = SkyMatcher(stat=SkyStatistic("mode"))
        matcher.add("one", _images(1, size, False, args.noise)[0])
        print(f"| {size}² | {matcher.nbytes / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
