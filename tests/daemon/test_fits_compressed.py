"""Tile-compressed (fpack) exposures: read as astropy decompresses them, bounded, refused
precisely when their pixels cannot be decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daemon.errors import InvalidInput
from daemon.events import exposure_id_from_path
from daemon.fileio.fits_io import read_exposure
from tests.conftest import small_exposure


def _compressed(path: Path, compression: str, *, planes: bool = True) -> Path:
    exposure = small_exposure(3, size=96)
    hdus: list[fits.hdu.base._BaseHDU] = [
        fits.PrimaryHDU(header=fits.Header({"INSTRUME": "SIMCAM"})),
        fits.CompImageHDU(exposure.sci, name="SCI", compression_type=compression),
    ]
    if planes:
        assert exposure.err is not None
        hdus.append(fits.CompImageHDU(exposure.err, name="ERR", compression_type=compression))
        dq = exposure.dq.astype(np.int32)
        dq[5, 7] = 4
        hdus.append(fits.CompImageHDU(dq, name="DQ", compression_type="GZIP_2"))
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.mark.parametrize("compression", ["RICE_1", "GZIP_1", "HCOMPRESS_1"])
def test_compressed_planes_are_read_as_astropy_decompresses_them(tmp_path, compression):
    path = _compressed(tmp_path / "exp.fits.fz", compression)
    exposure = read_exposure(path)
    with fits.open(path) as hdul:
        for name, plane in (("SCI", exposure.sci), ("ERR", exposure.err), ("DQ", exposure.dq)):
            expected = np.asarray(hdul[name].data)
            assert plane is not None and plane.shape == expected.shape == (96, 96)
            np.testing.assert_array_equal(plane, expected.astype(plane.dtype))
    assert exposure.dq[5, 7] == 4 and exposure.header["INSTRUME"] == "SIMCAM"
    assert exposure_id_from_path(path) == "exp"


def test_a_small_file_that_decompresses_too_large_is_refused(tmp_path) -> None:
    path = tmp_path / "bomb.fits.fz"
    zeros = np.zeros((2048, 2048), np.float32)  # 16 MiB of pixels in 160 kB
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(zeros, name="SCI")]).writeto(path)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(InvalidInput) as caught:
        read_exposure(path, max_bytes=4_000_000)
    assert caught.value.reason == "too_large"
    assert "decompresses to 16777216 bytes" in caught.value.detail
    assert read_exposure(path, max_bytes=20_000_000).sci.shape == (2048, 2048)


def test_undecodable_compressed_pixels_are_corrupt_data(tmp_path) -> None:
    path = _compressed(tmp_path / "broken.fits.fz", "RICE_1", planes=False)
    with fits.open(path, disable_image_compression=True) as hdul:
        start = hdul[1].fileinfo()["datLoc"]
        size = hdul[1].header["NAXIS1"] * hdul[1].header["NAXIS2"] + hdul[1].header["PCOUNT"]
    raw = bytearray(path.read_bytes())
    heap = slice(start + size // 2, start + size)  # the compressed tiles, not the headers
    raw[heap] = bytes(255 - b for b in raw[heap])
    path.write_bytes(bytes(raw))
    with pytest.raises(InvalidInput) as caught:
        read_exposure(path)
    assert caught.value.reason == "corrupt_data"
    assert "SCI" in caught.value.detail and "cannot be decoded" in caught.value.detail


@pytest.mark.asyncio
async def test_the_daemon_takes_an_fpack_exposure_from_its_folder(tmp_path) -> None:
    from tests.conftest import running, test_settings, wait_for_count

    settings = test_settings(tmp_path)  # default patterns
    inbox = settings.source.directory.path
    inbox.mkdir(parents=True, exist_ok=True)
    staging = tmp_path / "staging.fits.fz"
    _compressed(staging, "RICE_1")
    async with running(settings) as service:
        staging.rename(inbox / "night_0007.fits.fz")
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "complete"}, 1)  # fmt: skip
    product = settings.output.directory / "night_0007_bsub.fits"
    with fits.open(product) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "SCI", "ERR", "DQ"]
        assert hdul["SCI"].data.shape == (96, 96)
        assert hdul["DQ"].data[5, 7] & 4
