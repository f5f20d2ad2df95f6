"""``background.method: reference`` end to end on real folders: the Liger/IRIS master
background (fixed scale, ERR in quadrature, DQ OR), the JWST WFSS scaling (a known factor
recovered), references chosen from a folder by header keys, and every way a reference can
be wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io.fits import Header

from daemon.app.cli import main
from daemon.app.settings import ConfigError, Settings, load_settings
from daemon.fileio.fits_io import read_exposure, write_exposure
from processors import DQ, Exposure, simulate_exposure
from tests.conftest import (
    drop_fits,
    metric,
    products_in,
    running,
    test_settings,
    wait_for_count,
    wait_until,
)

SHAPE = (96, 128)


def _header(filter_name: str | None = "J", **cards: Any) -> Header:
    header = Header()
    header["INSTRUME"], header["DETECTOR"] = "SIMCAM", "SIM1"
    if filter_name is not None:
        header["FILTER"] = filter_name
    for key, value in cards.items():
        header[key] = value
    return header


def _pattern(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A structured, positive reference shape (dispersed-sky-like stripes and a ramp)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return 1.0 + 0.4 * np.sin(2 * np.pi * xx / 37.0) * (yy / shape[0]) + 0.2 * xx / shape[1]


def _reference(
    level: float = 40.0,
    *,
    filter_name: str | None = "J",
    shape: tuple[int, int] = SHAPE,
    **cards: Any,
) -> Exposure:
    pattern = _pattern(shape)
    dq = np.zeros(shape, np.uint32)
    dq[::17, ::13] = DQ.HOT  # the reference's own bad pixels reach the product
    return Exposure(
        (level * pattern).astype(np.float32),
        err=(0.3 + 0.1 * pattern).astype(np.float32),
        dq=dq,
        header=_header(filter_name, **cards),
    )


def _science(index: int = 0, filter_name: str | None = "J", **cards: Any) -> Exposure:
    exposure = simulate_exposure(index, size=SHAPE, seed=21)
    header = exposure.header.copy()
    if filter_name is None:
        del header["FILTER"]
    else:
        header["FILTER"] = filter_name
    for key, value in cards.items():
        header[key] = value
    return exposure.with_changes(header=header)


def _flat(level: float, filter_name: str, shape: tuple[int, int] = SHAPE) -> Exposure:
    return Exposure(np.full(shape, level, np.float32), header=_header(filter_name))


def _reference_settings(tmp_path: Path, **reference: Any) -> Settings:
    return test_settings(tmp_path, background={"method": "reference", "reference": reference})


def _sidecar(folder: Path, stem: str) -> dict[str, Any]:
    return json.loads((folder / f"{stem}_bsub.json").read_text())


@pytest.mark.parametrize("nints", [None, 3])
@pytest.mark.asyncio
async def test_master_background_subtracted_with_its_scale_err_in_quadrature_and_dq_or(
    tmp_path: Path, nints: int | None
) -> None:
    reference = _reference()
    ref_path = tmp_path / "master_J.fits"
    write_exposure(reference, ref_path, fsync=False)
    settings = _reference_settings(tmp_path, path=str(ref_path), scale=0.8)
    science = simulate_exposure(3, size=SHAPE, seed=21, nints=nints)
    out = settings.output.directory
    async with running(settings):
        drop_fits(settings.source.directory.path, "target.fits", science)
        await wait_until(lambda: len(products_in(out)) == 1)
    product = read_exposure(out / "target_bsub.fits")
    ref_sci = reference.sci.astype(np.float64)
    ref_err = reference.err.astype(np.float64)  # type: ignore[union-attr]
    np.testing.assert_allclose(product.sci, science.sci - 0.8 * ref_sci, rtol=1e-6, atol=1e-4)
    expected_err = np.sqrt(science.err.astype(np.float64) ** 2 + (0.8 * ref_err) ** 2)  # type: ignore[union-attr]
    np.testing.assert_allclose(product.err, expected_err, rtol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_array_equal(product.dq, science.dq | reference.dq)
    header = product.header
    assert (header["S_BKDSUB"], header["BKGMETH"], header["BKGSUB"]) == (
        "COMPLETE",
        "reference",
        True,
    )
    assert (header["BKGD_SCL"], header["BKGSCMTH"], header["MASTERBG"]) == (
        pytest.approx(0.8),
        "fixed",
        "master_J.fits",
    )
    sidecar = _sidecar(out, "target")
    assert (sidecar["status"], sidecar["method"], sidecar["errors"]) == (
        "COMPLETE",
        "reference",
        "quadrature",
    )
    params = sidecar["background_params"]
    assert params["reference"] == "master_J.fits"
    assert params["reference_path"] == str(ref_path)
    assert (params["scale_method"], params["scale_factor"], params["scale_status"]) == (
        "fixed",
        0.8,
        "COMPLETE",
    )
    assert sidecar["background_level"] == pytest.approx(float(np.median(0.8 * ref_sci)), 1e-6)


@pytest.mark.asyncio
async def test_wfss_scale_is_fitted_to_the_exposure_sky(tmp_path: Path) -> None:
    """A science frame that is 57.3 x the reference plus noise, a galaxy and stars."""
    factor = 57.3
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    sources = 300.0 * np.exp(-np.hypot(xx - 40, yy - 50) / 3.0)  # a small galaxy
    for x, y in rng.uniform(8, [120, 88], (12, 2)):
        sources += 3000.0 * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 1.5**2)
    sky = factor * _pattern()
    science = Exposure(
        (sky + sources + rng.normal(0, 2.0, SHAPE)).astype(np.float32),
        err=np.full(SHAPE, 2.0, np.float32),
        header=_header("J"),
    )
    ref_path = tmp_path / "wfss_J.fits"
    write_exposure(_reference(1.0), ref_path, fsync=False)
    settings = _reference_settings(
        tmp_path, path=str(ref_path), scale="fit", fit={"passes": 2, "npixels": 4}
    )
    out = settings.output.directory
    async with running(settings):
        drop_fits(settings.source.directory.path, "grism.fits", science)
        await wait_until(lambda: len(products_in(out)) == 1)
    params = _sidecar(out, "grism")["background_params"]
    assert params["scale_status"] == "COMPLETE" and params["scale_method"] == "jwst"
    # statistical error ~4e-4 (noise 2 over ~8000 pixels); one pass is 4 % off
    assert params["scale_factor"] == pytest.approx(factor, rel=2e-3)
    assert params["iterations"] == 5  # maxiter
    assert params["fit"]["passes"] == 2 and params["fit"]["npixels"] == 4
    # every pixel with a source above 3 ERR left the background pixels (grown by 5 px) ...
    masked = 1.0 - params["background_fraction"]
    assert (sources > 6.0).mean() < masked < 0.5
    # ... and 5 iterations rejected 1 % at each end of what was left each time
    expected = params["background_fraction"] * (1.0 - 0.98**5)
    assert params["rejected_fraction"] == pytest.approx(expected, rel=0.02)
    product = read_exposure(out / "grism_bsub.fits")
    assert product.header["BKGD_SCL"] == pytest.approx(params["scale_factor"])
    assert product.header["BKGSCMTH"] == "jwst"
    residual = product.sci - sources
    assert abs(float(np.median(residual))) < 0.1  # the sky is gone, the sources stay


@pytest.mark.asyncio
async def test_folder_reference_is_chosen_by_header_keys_and_read_again_when_replaced(
    tmp_path: Path,
) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    write_exposure(_flat(10.0, "J"), refs / "bkg_J.fits", fsync=False)
    write_exposure(_flat(20.0, " h "), refs / "bkg_H.fits", fsync=False)  # case, blanks
    write_exposure(_flat(99.0, "J"), refs / ".bkg_J.fits.part", fsync=False)  # hidden
    (refs / "broken.fits").write_bytes(b"not a FITS file at all")  # skipped with a warning
    (refs / "README.txt").write_text("calibration folder")
    settings = _reference_settings(tmp_path, folder=str(refs))
    inbox, out = settings.source.directory.path, settings.output.directory
    science = {"a": _science(0, "J"), "b": _science(1, "H"), "c": _science(2, "J")}
    async with running(settings):
        drop_fits(inbox, "a.fits", science["a"])
        drop_fits(inbox, "b.fits", science["b"])
        await wait_until(lambda: len(products_in(out)) == 2)
        before = (refs / "bkg_J.fits").stat().st_mtime_ns
        write_exposure(_flat(30.0, "J"), refs / "bkg_J.fits", fsync=False)  # replaced
        os.utime(refs / "bkg_J.fits", ns=(before + 10**9, before + 10**9))
        drop_fits(inbox, "c.fits", science["c"])
        await wait_until(lambda: len(products_in(out)) == 3)
    for stem, level, name in (("a", 10.0, "bkg_J.fits"), ("b", 20.0, "bkg_H.fits"),
                              ("c", 30.0, "bkg_J.fits")):  # fmt: skip
        product = read_exposure(out / f"{stem}_bsub.fits")
        np.testing.assert_array_equal(product.sci, science[stem].sci - np.float32(level))
        assert product.header["MASTERBG"] == name
        assert _sidecar(out, stem)["background_params"]["reference_path"] == str(refs / name)


@pytest.mark.asyncio
async def test_missing_ambiguous_and_mismatched_references_are_quarantined(
    tmp_path: Path,
) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    write_exposure(_flat(10.0, "J"), refs / "bkg_J.fits", fsync=False)
    write_exposure(_flat(5.0, "Y"), refs / "bkg_Y_v1.fits", fsync=False)
    write_exposure(_flat(6.0, "Y"), refs / "bkg_Y_v2.fits", fsync=False)
    write_exposure(_flat(7.0, "Z", shape=(50, 50)), refs / "bkg_Z.fits", fsync=False)
    settings = _reference_settings(tmp_path, folder=str(refs))
    inbox, out = settings.source.directory.path, settings.output.directory
    quarantine = settings.quarantine.directory
    expected = {
        "k.fits": ("reference_missing", "FILTER=K"),
        "nofilter.fits": ("reference_missing", "the exposure has no FILTER"),
        "y.fits": ("reference_ambiguous", "bkg_Y_v1.fits, bkg_Y_v2.fits"),
        "z.fits": ("reference_mismatch", "bkg_Z.fits"),
    }
    async with running(settings) as service:
        drop_fits(inbox, "k.fits", _science(0, "K"))
        drop_fits(inbox, "nofilter.fits", _science(1, None))
        drop_fits(inbox, "y.fits", _science(2, "Y"))
        drop_fits(inbox, "z.fits", _science(3, "Z"))
        drop_fits(inbox, "j.fits", _science(4, "J"))
        await wait_until(lambda: len(products_in(out)) == 1)
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "quarantined"}, 4)  # fmt: skip
        for reason, count in (("reference_missing", 2), ("reference_ambiguous", 1),
                              ("reference_mismatch", 1)):  # fmt: skip
            labels = {"reason": reason}
            assert metric(service, "skystream_exposures_quarantined_total", labels) == count
    for name, (reason, words) in expected.items():
        record = json.loads((quarantine / f"{name}.reason.json").read_text())
        assert record["reason"] == reason, name
        assert words in record["detail"], record["detail"]
    assert [p.name for p in products_in(out)] == ["j_bsub.fits"]


@pytest.mark.asyncio
async def test_a_reference_file_removed_while_running_quarantines_as_missing(
    tmp_path: Path,
) -> None:
    ref_path = tmp_path / "master.fits"
    write_exposure(_flat(10.0, "J"), ref_path, fsync=False)
    settings = _reference_settings(tmp_path, path=str(ref_path))
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings) as service:
        drop_fits(inbox, "first.fits", _science(0))
        await wait_until(lambda: len(products_in(out)) == 1)
        ref_path.unlink()  # even though it is cached: the operator took it away
        drop_fits(inbox, "second.fits", _science(1))
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "quarantined"}, 1)  # fmt: skip
    record = json.loads((settings.quarantine.directory / "second.fits.reason.json").read_text())
    assert record["reason"] == "reference_missing"
    assert str(ref_path) in record["detail"]


@pytest.mark.parametrize(
    ("fit", "status"), [({"method": "jwst"}, "FAILED"), ({"method": "robust-mean"}, "SKIPPED")]
)
@pytest.mark.asyncio
async def test_a_scaling_that_cannot_be_made_still_gives_a_product(
    tmp_path: Path, fit: dict[str, Any], status: str
) -> None:
    """jwst: a reference of zeros has no finite factor; robust-mean: too few good pixels."""
    ref_path = tmp_path / "master.fits"
    science = _science(0)
    if status == "FAILED":
        write_exposure(_flat(0.0, "J"), ref_path, fsync=False)
    else:
        write_exposure(_flat(1.0, "J"), ref_path, fsync=False)
        dq = science.dq | np.uint32(DQ.DO_NOT_USE)
        dq[:5, :20] = 0  # 100 good pixels: jwst <= 1.16 wants more than 100
        science = science.with_changes(dq=dq)
    settings = _reference_settings(tmp_path, path=str(ref_path), scale="fit", fit=fit)
    out = settings.output.directory
    async with running(settings) as service:
        drop_fits(settings.source.directory.path, "odd.fits", science)
        await wait_until(lambda: len(products_in(out)) == 1)
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": "skipped"}, 1)  # fmt: skip
    product = read_exposure(out / "odd_bsub.fits")
    np.testing.assert_array_equal(product.sci, science.sci)
    header = product.header
    assert (header["S_BKDSUB"], header["BKGSUB"], header["BKGD_SCL"]) == (status, False, 0.0)
    assert (header["BKGMETH"], header["BKGSCMTH"], header["MASTERBG"]) == (
        "reference",
        fit["method"],
        "master.fits",
    )
    sidecar = _sidecar(out, "odd")
    assert sidecar["status"] == "SKIPPED" and sidecar["background_level"] is None
    params = sidecar["background_params"]
    assert (params["scale_status"], params["scale_factor"]) == (status, 0.0)
    assert params["scale_reason"] and params["scale_reason"] in sidecar["notes"][0]


@pytest.mark.asyncio
async def test_a_subarray_exposure_gets_its_cut_of_a_full_frame_reference(
    tmp_path: Path,
) -> None:
    full = _reference(25.0, shape=(128, 160), SUBSTRT1=1, SUBSTRT2=1, SUBSIZE1=160,
                      SUBSIZE2=128)  # fmt: skip
    ref_path = tmp_path / "full_frame.fits"
    write_exposure(full, ref_path, fsync=False)
    subarray = Exposure(
        np.random.default_rng(2).normal(100.0, 1.0, (64, 48)).astype(np.float32),
        header=_header("J", SUBSTRT1=33, SUBSTRT2=17, SUBSIZE1=48, SUBSIZE2=64),
    )
    settings = _reference_settings(tmp_path, path=str(ref_path))
    out = settings.output.directory
    async with running(settings):
        drop_fits(settings.source.directory.path, "sub.fits", subarray)
        await wait_until(lambda: len(products_in(out)) == 1)
    product = read_exposure(out / "sub_bsub.fits")
    np.testing.assert_array_equal(product.sci, subarray.sci - full.sci[16:80, 32:80])
    np.testing.assert_array_equal(product.dq, full.dq[16:80, 32:80])


@pytest.mark.parametrize(
    ("background", "words"),
    [
        ({"method": "reference"}, "needs reference.path or reference.folder"),
        ({"reference": {"path": "a.fits", "folder": "refs"}}, "path or folder, not both"),
        ({"reference": {"scale": "auto"}}, "background.reference.scale"),
        ({"reference": {"fit": {"rms_stop": 0.1}}}, "rms_stop needs dispersion_axis"),
        ({"coverage_dq": "~NON_SCIENCE"}, "no '~'"),
        ({"source_dq": "NOT_A_FLAG"}, "background.source_dq"),
    ],
)
def test_invalid_reference_and_mask_settings_name_the_key(
    tmp_path: Path, background: dict[str, Any], words: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"background": background}))
    with pytest.raises(ConfigError, match=words):
        load_settings(config, environ={}, base=tmp_path)


def test_a_reference_path_that_does_not_exist_is_a_start_up_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps({"background": {"method": "reference", "reference": {"path": "nope.fits"}}})
    )
    science = tmp_path / "science.fits"
    write_exposure(_science(0), science, fsync=False)
    monkeypatch.chdir(tmp_path)  # the relative path resolves here
    code = main(["process", "--config", str(config), "--out", str(tmp_path / "out"),
                 str(science)])  # fmt: skip
    assert code == 2
    message = capsys.readouterr().err
    assert "background.reference.path" in message and "nope.fits is not a file" in message
    assert not list((tmp_path / "out").glob("*_bsub.fits"))
