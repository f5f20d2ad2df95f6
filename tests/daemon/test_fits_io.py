"""FITS completeness, reading both layouts, atomic writing — on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from daemon.errors import InvalidInput
from daemon.fileio.fits_io import (
    check_fits_complete,
    read_exposure,
    read_primary_header,
    remove_stale_temporaries,
    write_exposure,
)
from processors import DQ, Exposure
from tests.conftest import header_only_fits, small_exposure


@pytest.fixture
def jwst_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwst.fits"
    write_exposure(small_exposure(), path)
    return path


def test_round_trip_keeps_planes_header_and_wcs(jwst_file: Path) -> None:
    original = small_exposure()
    back = read_exposure(jwst_file)
    np.testing.assert_array_equal(back.sci, original.sci)
    np.testing.assert_array_equal(back.err, original.err)
    np.testing.assert_array_equal(back.dq, original.dq)
    assert back.header["TRUESKY"] == original.header["TRUESKY"]
    assert back.wcs is not None
    np.testing.assert_allclose(back.wcs.wcs.crval, original.wcs.wcs.crval)
    with fits.open(jwst_file) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "SCI", "ERR", "DQ"]


def test_reads_a_plain_single_hdu_image(spitzer_path: Path) -> None:
    exposure = read_exposure(spitzer_path)
    assert exposure.shape == (513, 1025)
    assert exposure.err is None
    assert not exposure.dq.any()
    assert exposure.wcs is not None
    assert exposure.sci.dtype == np.float32


@pytest.mark.parametrize("cut", [0, 10, 79, 2879, 2880, 10000, -2880, -1])
def test_partial_files_are_incomplete(jwst_file: Path, tmp_path: Path, cut: int) -> None:
    data = jwst_file.read_bytes()
    partial = tmp_path / "partial.fits"
    partial.write_bytes(data[:cut])
    state, _ = check_fits_complete(partial)
    assert state == "incomplete"
    with pytest.raises(InvalidInput) as info:
        read_exposure(partial)
    assert info.value.reason == "truncated"


def test_complete_file_and_garbage(jwst_file: Path, tmp_path: Path) -> None:
    assert check_fits_complete(jwst_file)[0] == "complete"
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"this is not a FITS file at all" * 200)
    assert check_fits_complete(garbage)[0] == "not_fits"
    with pytest.raises(InvalidInput) as info:
        read_exposure(garbage)
    assert info.value.reason == "not_fits"


def test_header_only_file_has_no_image_data(tmp_path: Path) -> None:
    path = header_only_fits(tmp_path / "empty.fits")
    assert check_fits_complete(path)[0] == "complete"
    with pytest.raises(InvalidInput) as info:
        read_exposure(path)
    assert info.value.reason == "no_image_data"


def test_cube_accepted_or_refused(tmp_path: Path) -> None:
    path = tmp_path / "cube.fits"
    write_exposure(small_exposure(nints=3), path)
    assert read_exposure(path).shape == (3, 64, 64)
    with pytest.raises(InvalidInput) as info:
        read_exposure(path, allow_cubes=False)
    assert info.value.reason == "wrong_shape"


def test_mismatched_err_shape(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.fits"
    fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(np.ones((20, 20), np.float32), name="SCI"),
        fits.ImageHDU(np.ones((10, 20), np.float32), name="ERR"),
    ]).writeto(path)  # fmt: skip
    with pytest.raises(InvalidInput, match=r"ERR shape \(10, 20\)") as info:
        read_exposure(path)
    assert info.value.reason == "shape_mismatch"


def test_all_nan_science(tmp_path: Path) -> None:
    path = tmp_path / "nan.fits"
    fits.PrimaryHDU(np.full((20, 20), np.nan, np.float32)).writeto(path)
    with pytest.raises(InvalidInput) as info:
        read_exposure(path)
    assert info.value.reason == "no_valid_pixels"


def test_unreadable_path(tmp_path: Path) -> None:
    link = tmp_path / "dangling.fits"
    link.symlink_to(tmp_path / "nowhere.fits")
    with pytest.raises(InvalidInput) as info:
        read_exposure(link)
    assert info.value.reason == "unreadable"


def test_primary_header_merges_sci_header(jwst_file: Path) -> None:
    header = read_primary_header(jwst_file)
    assert header["INSTRUME"] == "SIMCAM"
    assert "NAXIS" not in header


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".a_bsub.fits.tmp-123").write_bytes(b"half")
    (tmp_path / "keep.fits").write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.fits"]


def test_failed_write_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.fits"
    target.mkdir()  # the final rename cannot replace a folder
    with pytest.raises(IsADirectoryError):
        write_exposure(small_exposure(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.fits"]


def test_boundary_cut_looks_complete_which_is_why_settling_exists(
    jwst_file: Path, tmp_path: Path
) -> None:
    with fits.open(jwst_file) as hdul:
        primary_bytes = len(hdul[0].header.tostring())
    cut = tmp_path / "cut.fits"
    cut.write_bytes(jwst_file.read_bytes()[:primary_bytes])
    assert check_fits_complete(cut)[0] == "complete"
    with pytest.raises(InvalidInput) as info:
        read_exposure(cut)
    assert info.value.reason == "no_image_data"


def test_dq_flags_survive(tmp_path: Path) -> None:
    path = tmp_path / "dq.fits"
    exposure = small_exposure()
    write_exposure(exposure, path)
    assert (read_exposure(path).dq & DQ.REFERENCE_PIXEL).any()


@pytest.mark.parametrize(
    ("shape", "dq_type", "with_err"),
    [((100, 130), np.uint32, True), ((3, 40, 50), np.uint16, True), ((64, 64), np.int32, False),
     ((7, 2881), np.uint8, True)],
)  # fmt: skip
def test_products_are_byte_identical_to_astropy_writeto(tmp_path, shape, dq_type, with_err):
    rng = np.random.default_rng(5)
    sci = rng.normal(100, 5, shape).astype(np.float32)
    sci[0, 0] = np.nan
    dq = rng.integers(0, np.iinfo(dq_type).max, shape, endpoint=True).astype(dq_type)
    err = np.abs(rng.normal(1, 0.1, shape)).astype(np.float32) if with_err else None
    header = fits.Header({"INSTRUME": "SIMCAM", "EXPTIME": 30.0})
    exposure = Exposure(sci=sci, err=err, dq=dq, header=header)
    ours = tmp_path / "ours.fits"
    write_exposure(exposure, ours)
    # The planes as the Exposure holds them (its DQ is always uint32).
    hdus = [fits.PrimaryHDU(header=header), fits.ImageHDU(exposure.sci, name="SCI")]
    if exposure.err is not None:
        hdus.append(fits.ImageHDU(exposure.err, name="ERR"))
    hdus.append(fits.ImageHDU(exposure.dq, name="DQ"))
    fits.HDUList(hdus).writeto(tmp_path / "astropy.fits")
    assert ours.read_bytes() == (tmp_path / "astropy.fits").read_bytes()
    back = read_exposure(ours)
    np.testing.assert_array_equal(back.dq, dq)
    np.testing.assert_array_equal(back.sci, sci)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8])
def test_dq_flags_stored_signed_keep_their_bits(tmp_path: Path, dtype) -> None:
    sci = np.ones((4, 4), np.float32)
    dq = np.zeros((4, 4), dtype)
    dq[0, 0] = -1 if np.issubdtype(dtype, np.signedinteger) else 255
    dq[1, 1] = 4
    path = tmp_path / "signed_dq.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci, name="SCI"),
                  fits.ImageHDU(dq, name="DQ")]).writeto(path)  # fmt: skip
    read = read_exposure(path).dq
    assert read.dtype == np.uint32
    assert read[0, 0] == 2 ** (8 * np.dtype(dtype).itemsize) - 1  # all its bits, no more
    assert read[1, 1] == 4 and read[2, 2] == 0
