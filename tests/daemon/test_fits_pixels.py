"""Pixels read straight into native arrays equal astropy's, for every FITS pixel type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daemon.fileio.fits_io import read_exposure
from daemon.fileio.fits_pixels import read_pixels


def _values(dtype: str) -> np.ndarray:
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    rng = np.random.default_rng(1)
    if info is None:
        values = rng.normal(0, 1e3, (3, 5, 7)).astype(dtype)
        values[0, 0, :3] = [np.nan, np.inf, -np.inf]
        return values
    values = rng.integers(info.min, info.max, (3, 5, 7), dtype=dtype, endpoint=True)
    values[0, 0, :2] = [info.min, info.max]
    return values


@pytest.mark.parametrize(
    "dtype", ["float32", "float64", "uint8", "int8", "int16", "uint16", "int32", "uint32",
              "int64", "uint64"],
)  # fmt: skip
def test_every_pixel_type_reads_as_astropy_reads_it(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_values(dtype), name="SCI")]).writeto(path)
    with open(path, "rb") as handle, fits.open(handle, memmap=False) as hdul:
        ours = read_pixels(handle, hdul["SCI"], "x.fits")
        theirs = hdul["SCI"].data
        assert ours.dtype == theirs.dtype.newbyteorder("=")
        np.testing.assert_array_equal(ours, theirs)
        assert ours.dtype.isnative and ours.flags.writeable


def test_scaled_and_blank_planes_are_left_to_astropy(tmp_path: Path) -> None:
    path = tmp_path / "scaled.fits"
    scaled = fits.ImageHDU(np.arange(12, dtype=np.int16).reshape(3, 4), name="SCI")
    scaled.header["BSCALE"], scaled.header["BZERO"], scaled.header["BLANK"] = 0.5, 3.0, 7
    fits.HDUList([fits.PrimaryHDU(), scaled]).writeto(path)
    with open(path, "rb") as handle, fits.open(handle, memmap=False) as hdul:
        expected = hdul["SCI"].data.copy()
        np.testing.assert_array_equal(read_pixels(handle, hdul["SCI"], "x.fits"), expected)
        assert np.isnan(expected).sum() == 1 and expected[0, 1] == 3.5  # really scaled


def test_exposure_planes_are_native_and_exact(tmp_path: Path) -> None:
    path = tmp_path / "exposure.fits"
    sci, err = _values("float32")[0], np.abs(_values("float32")[1])
    dq = np.array(np.arange(35).reshape(5, 7) * 123_456_789 % 2**32, dtype=np.uint32)
    fits.HDUList([
        fits.PrimaryHDU(), fits.ImageHDU(sci, name="SCI"), fits.ImageHDU(err, name="ERR"),
        fits.ImageHDU(dq, name="DQ"),
    ]).writeto(path)  # fmt: skip
    exposure = read_exposure(path)
    assert exposure.err is not None
    for ours, theirs in ((exposure.sci, sci), (exposure.err, err), (exposure.dq, dq)):
        assert ours.dtype.isnative and ours.flags.writeable
        assert ours.tobytes() == theirs.astype(ours.dtype).tobytes()
