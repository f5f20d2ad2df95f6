"""The stack and rolling-sky methods end to end on real folders, including restarts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io.fits import Header

from daemon.fileio.fits_io import read_exposure
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

pytestmark = pytest.mark.asyncio

SHAPE = (96, 128)


def _header(index: int) -> Header:
    header = Header()
    header["INSTRUME"], header["DETECTOR"], header["FILTER"] = "SIMCAM", "SIM1", "J"
    header["MJD-OBS"] = 61000.0 + index / 1440.0  # one a minute
    return header


def _sky(level: float, index: int, *, err: bool = True, shape=SHAPE) -> Exposure:
    rng = np.random.default_rng(index)
    sci = (level + rng.normal(0, 1.0, shape)).astype(np.float32)
    return Exposure(sci, err=np.ones(shape) if err else None,
                    dq=np.zeros(shape, np.uint32), header=_header(index))  # fmt: skip


def _science(index: int, sky: float, shape=SHAPE, nints: int | None = None) -> Exposure:
    rng = np.random.default_rng(100 + index)
    full = shape if nints is None else (nints, *shape)
    sci = (sky + 50.0 + rng.normal(0, 1.0, full)).astype(np.float32)
    return Exposure(sci, err=np.full(full, 2.0), header=_header(index))


def _stack_settings(tmp_path: Path, **stack):
    return test_settings(
        tmp_path,
        background={"method": "stack", "stack": {"min_members": 2, **stack}},
        routing={"background_when": {"filename": ["*_sky*"]}},
    )


async def test_science_gets_the_combined_stack_with_its_members_recorded(tmp_path) -> None:
    settings = _stack_settings(tmp_path, save_combined=True)
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings) as service:
        for index, level in enumerate([10.0, 12.0, 14.0]):
            drop_fits(inbox, f"n{index}_sky.fits", _sky(level, index))
        await wait_until(
            lambda: (
                metric(service, "skystream_exposures_processed_total", {"outcome": "background"})
                == 3
            )
        )
        drop_fits(inbox, "target.fits", _science(5, sky=12.0))
        await wait_until(lambda: len(products_in(out)) == 1)
        assert metric(service, "skystream_stack_depth", {"stack_key": "SIMCAM/SIM1/J"}) == 3
        assert metric(service, "skystream_stack_bytes", {"stack_key": "SIMCAM/SIM1/J"}) > 0
    product = read_exposure(out / "target_bsub.fits")
    assert product.header["BKGMETH"] == "stack"
    assert product.header["BKGNINP"] == 3
    assert [product.header[f"BKGINP0{i}"] for i in (1, 2, 3)] == ["n0_sky", "n1_sky", "n2_sky"]
    assert abs(float(np.median(product.sci)) - 50.0) < 0.2  # 12 + 50 - mean(10, 12, 14)
    sidecar = json.loads((out / "target_bsub.json").read_text())
    assert sidecar["inputs_used"] == ["n0_sky", "n1_sky", "n2_sky"]
    assert sidecar["status"] == "COMPLETE"
    combined = read_exposure(Path(sidecar["background_uri"]))
    assert combined.sci.shape == SHAPE
    np.testing.assert_allclose(np.median(combined.sci), 12.0, atol=0.1)
    np.testing.assert_allclose(combined.err, np.sqrt(3.0) / 3.0, rtol=1e-5)  # sqrt(sum)/n
    assert not list(out.glob("n*_sky_bsub.fits"))  # backgrounds make no products


@pytest.mark.parametrize(
    ("policy", "method", "status"), [("model", "model", "COMPLETE"), ("skip", "stack", "SKIPPED")]
)
async def test_insufficient_stack_policies(tmp_path, policy, method, status) -> None:
    settings = _stack_settings(tmp_path, when_insufficient=policy)
    out = settings.output.directory
    async with running(settings) as service:
        science = simulate_exposure(0, size=128, seed=2)
        drop_fits(settings.source.directory.path, "early.fits", science)
        await wait_until(lambda: len(products_in(out)) == 1)
        outcome = "skipped" if status == "SKIPPED" else "complete"
        await wait_for_count(service, "skystream_exposures_processed_total",
                             {"outcome": outcome}, 1)  # fmt: skip
    product = read_exposure(out / "early_bsub.fits")
    sidecar = json.loads((out / "early_bsub.json").read_text())
    assert product.header["S_BKDSUB"] == status
    assert product.header["BKGMETH"] == method
    assert sidecar["status"] == status
    assert "fewer than 2 usable member(s)" in sidecar["notes"][0]
    if status == "SKIPPED":
        assert product.header["BKGSUB"] is False
        np.testing.assert_array_equal(product.sci, science.sci)


async def test_wait_policy_holds_science_until_backgrounds_arrive(tmp_path) -> None:
    settings = _stack_settings(tmp_path, when_insufficient="wait", wait_seconds=60)
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings):
        drop_fits(inbox, "patient.fits", _science(9, sky=20.0))
        await asyncio.sleep(1.0)
        assert not products_in(out)  # waiting, not failed
        drop_fits(inbox, "a_sky.fits", _sky(20.0, 1))
        drop_fits(inbox, "b_sky.fits", _sky(20.0, 2))
        await wait_until(lambda: len(products_in(out)) == 1)
    product = read_exposure(out / "patient_bsub.fits")
    assert product.header["BKGMETH"] == "stack"
    assert abs(float(np.median(product.sci)) - 50.0) < 0.2


async def test_wait_policy_gives_up_after_the_timeout(tmp_path) -> None:
    settings = _stack_settings(tmp_path, when_insufficient="wait", wait_seconds=0.5)
    out = settings.output.directory
    async with running(settings):
        drop_fits(settings.source.directory.path, "lonely.fits", _science(3, sky=20.0))
        await wait_until(lambda: len(products_in(out)) == 1)
    assert read_exposure(out / "lonely_bsub.fits").header["S_BKDSUB"] == "SKIPPED"


async def test_stack_survives_a_restart_and_a_deleted_member(tmp_path) -> None:
    settings = _stack_settings(tmp_path)
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings) as service:
        for index in range(3):
            drop_fits(inbox, f"r{index}_sky.fits", _sky(30.0, index))
        await wait_until(
            lambda: (
                metric(service, "skystream_exposures_processed_total", {"outcome": "background"})
                == 3
            )
        )
    (inbox / "r0_sky.fits").unlink()  # gone before the restart
    async with running(settings) as service:
        assert metric(service, "skystream_exposures_processed_total",
                      {"outcome": "background"}) == 0  # fmt: skip
        drop_fits(inbox, "after.fits", _science(7, sky=30.0))
        await wait_until(lambda: len(products_in(out)) == 1)
    product = read_exposure(out / "after_bsub.fits")
    assert product.header["BKGNINP"] == 2
    assert {product.header["BKGINP01"], product.header["BKGINP02"]} == {"r1_sky", "r2_sky"}
    assert abs(float(np.median(product.sci)) - 50.0) < 0.2


async def test_background_of_the_wrong_shape_is_quarantined(tmp_path) -> None:
    settings = _stack_settings(tmp_path)
    inbox = settings.source.directory.path
    async with running(settings) as service:
        drop_fits(inbox, "good_sky.fits", _sky(5.0, 1))
        await wait_until(
            lambda: (
                metric(service, "skystream_exposures_processed_total", {"outcome": "background"})
                == 1
            )
        )
        drop_fits(inbox, "odd_sky.fits", _sky(5.0, 2, shape=(64, 64)))
        reason_file = settings.quarantine.directory / "odd_sky.fits.reason.json"
        await wait_until(reason_file.exists)
        assert json.loads(reason_file.read_text())["reason"] == "stack_mismatch"
        assert metric(service, "skystream_stack_members_rejected_total", {"reason": "shape"}) == 1


async def test_member_without_err_leaves_the_error_unknown_not_zero(tmp_path) -> None:
    settings = _stack_settings(tmp_path)
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings) as service:
        drop_fits(inbox, "e1_sky.fits", _sky(8.0, 1))
        drop_fits(inbox, "e2_sky.fits", _sky(8.0, 2, err=False))
        await wait_until(
            lambda: (
                metric(service, "skystream_exposures_processed_total", {"outcome": "background"})
                == 2
            )
        )
        drop_fits(inbox, "sci.fits", _science(4, sky=8.0))
        await wait_until(lambda: len(products_in(out)) == 1)
    product = read_exposure(out / "sci_bsub.fits")
    assert "background error unknown" in product.header["BKGERRMD"]
    np.testing.assert_array_equal(product.err, 2.0)


async def test_rateints_science_gets_the_2d_stack_on_every_integration(tmp_path) -> None:
    settings = _stack_settings(tmp_path)
    inbox, out = settings.source.directory.path, settings.output.directory
    async with running(settings) as service:
        for index in range(2):
            sky = _sky(40.0, index)
            drop_fits(inbox, f"c{index}_sky.fits", sky.with_changes(
                dq=np.full(SHAPE, int(DQ.HOT), np.uint32)))  # fmt: skip
        await wait_until(
            lambda: (
                metric(service, "skystream_exposures_processed_total", {"outcome": "background"})
                == 2
            )
        )
        drop_fits(inbox, "cube.fits", _science(6, sky=40.0, nints=3))
        await wait_until(lambda: len(products_in(out)) == 1)
    product = read_exposure(out / "cube_bsub.fits")
    assert product.shape == (3, *SHAPE)
    for plane in product.sci:
        assert abs(float(np.median(plane)) - 50.0) < 0.3
    assert (product.dq & DQ.HOT).all()


async def test_rolling_sky_uses_recent_frames_and_survives_a_restart(tmp_path) -> None:
    settings = test_settings(
        tmp_path,
        background={"method": "rolling-sky", "box_size": 32,
                    "rolling_sky": {"members": 3, "min_members": 2}},
    )  # fmt: skip
    inbox, out = settings.source.directory.path, settings.output.directory
    frames = [simulate_exposure(i, size=256, seed=4) for i in range(5)]
    async with running(settings):
        for index in range(3):
            drop_fits(inbox, f"d{index}.fits", frames[index])
            await wait_until(lambda n=index: len(products_in(out)) == n + 1)
    first = json.loads((out / "d0_bsub.json").read_text())
    third = json.loads((out / "d2_bsub.json").read_text())
    assert first["method"] == "model"
    assert "own model used" in first["notes"][0]
    assert third["method"] == "rolling-sky"
    assert third["inputs_used"] == ["d0", "d1"]
    async with running(settings):
        drop_fits(inbox, "d3.fits", frames[3])
        await wait_until(lambda: len(products_in(out)) == 4)
    fourth = json.loads((out / "d3_bsub.json").read_text())
    assert fourth["inputs_used"] == ["d0", "d1", "d2"]
    truth = frames[3].header["TRUESKY"]
    assert abs(fourth["background_level"] - truth) < 0.1 * frames[3].header["TRUENOIS"]


async def test_state_that_cannot_be_saved_is_retried_and_named_in_readyz(tmp_path) -> None:
    settings = _stack_settings(tmp_path)
    inbox = settings.source.directory.path
    stacks = settings.state.directory / "stacks"
    async with running(settings) as service:
        stacks.rmdir()
        stacks.write_text("not a folder")  # saving stack state now fails with an OSError
        drop_fits(inbox, "blocked_sky.fits", _sky(3.0, 1))

        def named() -> bool:
            return any(
                reason.startswith("state folder: Not a directory (ENOTDIR) since ")
                for reason in service.readiness()[1]
            )

        await wait_until(named)
        assert not service.readiness()[0]
        assert not (settings.quarantine.directory / "blocked_sky.fits.reason.json").exists()
        assert (inbox / "blocked_sky.fits").exists()
        assert (
            metric(service, "skystream_exposures_processed_total", {"outcome": "background"}) == 0
        )
        stacks.unlink()
        stacks.mkdir()  # the operator fixes it; the next attempt succeeds
        await wait_until(
            lambda: (
                metric(service, "skystream_exposures_processed_total", {"outcome": "background"})
                == 1
            )
        )
        assert service.readiness() == (True, [])
    assert len(list(stacks.glob("*.json"))) == 1
