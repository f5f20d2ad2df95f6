"""Sky matching of dithered 2048² mosaics: skystream vs jwst's SkyMatchStep, same process.

jwst is a benchmark-only extra (``pip install -e ".[bench]"``); its step runs without
CRDS (``STPIPE_DISABLE_CRDS_STEPPARS=true``) on a hand-built gwcs TAN WCS.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from astropy.wcs import WCS

from processors import Exposure, skymatch, warm_up
from processors.sky_matcher import SkyMatcher
from processors.skystats import SkyStatistic

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
SCALE = 0.1 / 3600  # deg / pixel


def _pointings(count: int, size: int) -> list[tuple[float, float]]:
    side = int(np.ceil(np.sqrt(count)))
    step = 0.3 * size * SCALE
    return [(10.0 + (k % side) * step, (k // side) * step) for k in range(count)]


def _astropy_wcs(ra: float, dec: float, size: int) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.cd = np.diag([-SCALE, SCALE])
    wcs.wcs.set()
    return wcs


def _gwcs(ra: float, dec: float, size: int):
    import astropy.units as u
    from astropy import coordinates as coord
    from astropy.modeling import models
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gw

    centre = (size - 1) / 2
    transform = (
        (models.Shift(-centre) & models.Shift(-centre))
        | (models.Scale(-SCALE) & models.Scale(SCALE))
        | models.Pix2Sky_TAN()
        | models.RotateNative2Celestial(ra, dec, 180)
    )
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    sky = cf.CelestialFrame(reference_frame=coord.ICRS(), name="world", unit=(u.deg, u.deg))
    wcs = gw.WCS([(detector, transform), (sky, None)])
    wcs.bounding_box = ((-0.5, size - 0.5), (-0.5, size - 0.5))
    return wcs


def _images(count: int, size: int, noise: float) -> tuple[list[np.ndarray], list[float], list]:
    rng = np.random.default_rng(0)
    offsets = [1.5 * k for k in range(count)]
    base = rng.normal(0, noise, (size, size)).astype(np.float32)
    data = [(10.0 + off + base).astype(np.float32) for off in offsets]
    return data, offsets, _pointings(count, size)


def _jwst_levels(data, pointings, size, method) -> tuple[list[float], float]:
    from jwst.datamodels import ModelLibrary
    from jwst.skymatch import SkyMatchStep
    from stdatamodels.jwst.datamodels import ImageModel

    models = []
    for index, (pixels, (ra, dec)) in enumerate(zip(data, pointings, strict=True)):
        model = ImageModel(data=pixels.copy(), dq=np.zeros(pixels.shape, np.uint32),
                           err=np.ones(pixels.shape, np.float32))  # fmt: skip
        model.meta.wcs = _gwcs(ra, dec, size)
        model.meta.filename = f"image{index}.fits"
        model.meta.group_id = f"group{index}"
        models.append(model)
    start = time.perf_counter()
    result = SkyMatchStep.call(ModelLibrary(models), skymethod=method, skystat="mode")
    elapsed = time.perf_counter() - start
    levels = []
    with result:
        for index in range(len(result)):
            model = result.borrow(index)
            levels.append(float(model.meta.background.level))
            result.shelve(model, index, modify=False)
    return levels, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[4, 9])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument(
        "--noise", type=float, nargs="+", default=[0.0, 0.1],
        help="pixel noise; 0 gives the noiseless offsets the levels are compared on",
    )  # fmt: skip
    args = parser.parse_args()
    import logging

    logging.getLogger("stpipe").setLevel(logging.ERROR)
    logging.getLogger("jwst").setLevel(logging.ERROR)
    print(
        "| images | noise | method | skystream | jwst SkyMatchStep | speed-up | max level "
        "difference | skystream levels | jwst levels |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    warm_up()  # compiled kernels loaded first, as the daemon does before it is ready
    small, _, corners = _images(2, 256, 0.1)
    pair = [Exposure(small[k], wcs=_astropy_wcs(*corners[k], 256)) for k in range(2)]
    skymatch(pair, skymethod="match")
    for noise, count in [(n, c) for n in args.noise for c in args.counts]:
        data, _, pointings = _images(count, args.size, noise)
        exposures = [Exposure(d, wcs=_astropy_wcs(ra, dec, args.size))
                     for d, (ra, dec) in zip(data, pointings, strict=True)]  # fmt: skip
        for method in ("match", "global+match"):
            start = time.perf_counter()
            ours = skymatch(exposures, skymethod=method, skystat="mode").levels
            ours_time = time.perf_counter() - start
            theirs, theirs_time = _jwst_levels(data, pointings, args.size, method)
            diff = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))  # type: ignore[operator]
            print(
                f"| {count} x {args.size}² | {noise:g} | {method} | {ours_time:.2f} s "
                f"| {theirs_time:.2f} s "
                f"| {theirs_time / ours_time:.1f}x | {diff:.4f} "
                f"| {', '.join(f'{v:.3f}' for v in ours)} "
                f"| {', '.join(f'{v:.3f}' for v in theirs)} |",
                flush=True,
            )
    print("\n| arrival | pairs measured | update (add + solve) |")
    print("|---|---|---|")
    data, _, pointings = _images(max(args.counts), args.size, max(args.noise))
    matcher = SkyMatcher(stat=SkyStatistic("mode"), skymethod="match")
    for index, (pixels, (ra, dec)) in enumerate(zip(data, pointings, strict=True)):
        start = time.perf_counter()
        pairs = matcher.add(str(index), Exposure(pixels, wcs=_astropy_wcs(ra, dec, args.size)))
        matcher.solve()
        print(f"| {index + 1} | {pairs} | {time.perf_counter() - start:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
