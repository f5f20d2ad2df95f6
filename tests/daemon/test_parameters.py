"""Every background, stack, rolling-sky, reference and skymatch setting reaches its processor,
or is the daemon's own policy (named below with where it acts): a new setting fails here
until it is one or the other."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from daemon.app.parameters import (
    model_parameters,
    rolling_sky_parameters,
    scaling_parameters,
    sky_matcher_parameters,
    stack_parameters,
)
from daemon.app.settings import (
    BackgroundSettings,
    ReferenceFitSettings,
    ReferenceSettings,
    RollingSkySettings,
    SkyMatchSettings,
    StackSettings,
)
from processors import (
    Exposure,
    RollingStack,
    model_exposure_background,
    rolling_sky_background,
    sky_member,
)
from processors.sky_matcher import SkyMatcher
from tests.conftest import small_exposure


def _sky_matcher_flat(skymatch: SkyMatchSettings) -> dict[str, Any]:
    params = sky_matcher_parameters(skymatch)
    stat = params.pop("stat")
    return {**dataclasses.asdict(stat), **params}


def _nothing(_: Any) -> dict[str, Any]:
    return {}


#: Each section, and the processor parameters derived from it.
SECTIONS: dict[str, tuple[type[BaseModel], Callable[[Any], dict[str, Any]]]] = {
    "background": (BackgroundSettings, model_parameters),
    "background.stack": (StackSettings, stack_parameters),
    "background.rolling_sky": (RollingSkySettings, rolling_sky_parameters),
    "background.reference": (ReferenceSettings, _nothing),
    "background.reference.fit": (ReferenceFitSettings, scaling_parameters),
    "skymatch": (SkyMatchSettings, _sky_matcher_flat),
}
#: Values a section is varied from where its defaults forbid changing some field alone.
BASES: dict[str, dict[str, Any]] = {"background.reference.fit": {"dispersion_axis": 1}}

#: Settings the daemon acts on itself rather than passing to a processor, and where.
POLICY = {
    "background": {
        "method": "flow.backgrounds: own model, stack, rolling sky or reference",
        "errors": "flow.pipeline: subtract_background(errors=...); flow.reference_method",
        "coverage_dq": "flow.backgrounds: coverage_mask of each exposure (per-exposure DQ)",
        "source_dq": "flow.pipeline: subtract_background(source_dq=...)",
        "stack": "the background.stack section",
        "rolling_sky": "the background.rolling_sky section",
        "reference": "the background.reference section",
    },
    "background.reference": {
        "path": "state.references: the one reference file",
        "folder": "state.references: the folder a reference is chosen from",
        "match_keys": "state.references: header keys an exposure and its reference share",
        "scale": "flow.reference_method: a fixed scale, or fit (the fit section)",
        "fit": "the background.reference.fit section",
    },
    "background.stack": {
        "min_members": "flow.backgrounds: fewest members to use the stack",
        "when_insufficient": "flow.backgrounds: what a too small stack falls back to",
        "wait_seconds": "flow: how long a science exposure waits for its stack",
        "after_wait": "flow.backgrounds: the fallback once the wait is over",
        "save_combined": "flow.pipeline: writes the combined background",
    },
    "background.rolling_sky": {
        "members": "state.stacks: sky templates kept per stack key",
        "min_members": "flow.backgrounds: fewest other frames to use a template",
    },
    "skymatch": {
        "enabled": "app.service: sky matching on or off",
        "group_key": "state.skymatch_groups: the mosaic group of an exposure",
        "skylist": "state.skymatch_groups: the levels of skymethod user (skymatch.skylist)",
        "close_after_seconds": "state.skymatch_groups: idle groups close",
        "max_members": "state.skymatch_groups: full groups close",
        "end_when": "state.skymatch_groups: a group's last exposure",
    },
}

FIELDS = [
    (section, name) for section, (model, _) in SECTIONS.items() for name in model.model_fields
]


def _literals(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]


def _other_value(model: type[BaseModel], name: str, base: dict[str, Any] | None = None) -> Any:
    """A valid value of the field that differs from its default (given ``base``)."""
    field = model.model_fields[name]
    default = getattr(model.model_validate(base or {}), name)
    if isinstance(default, BaseModel):
        inner = type(default)
        first = next(n for n in inner.model_fields if not isinstance(getattr(default, n), dict))
        return default.model_copy(update={first: _other_value(inner, first)})
    others = [not default, 2, 7, 0.5, 0.25, 1.5, None, ["X"], "x"]
    candidates = [*_literals(field.annotation), *others]
    for candidate in candidates:
        try:
            value = getattr(model.model_validate({**(base or {}), name: candidate}), name)
        except ValidationError:
            continue
        if value != default:
            return value
    pytest.fail(f"no valid non-default value for {model.__name__}.{name} among {candidates}")


@pytest.mark.parametrize(("section", "name"), FIELDS, ids=[f"{s}.{n}" for s, n in FIELDS])
def test_every_setting_reaches_its_processor_or_is_named_policy(section: str, name: str) -> None:
    model, derive = SECTIONS[section]
    base = BASES.get(section, {})
    default = model.model_validate(base)
    changed = model.model_validate({**default.model_dump(), name: _other_value(model, name, base)})
    before, after = derive(default), derive(changed)
    if name in POLICY.get(section, {}):
        assert after == before, f"{section}.{name} is policy but reaches a processor"
        return
    differing = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert len(differing) == 1, f"{section}.{name} is not passed to its processor"
    [key] = differing
    assert after[key] == getattr(changed, name)


def test_policy_names_only_existing_settings() -> None:
    for section, names in POLICY.items():
        model, _ = SECTIONS[section]
        assert set(names) <= set(model.model_fields), section


def test_model_parameters_drive_the_background_model() -> None:
    settings = BackgroundSettings(box_size=16, filter_size=1, sigma_low=2.5, estimator="median")
    model = model_exposure_background(small_exposure(size=64), **model_parameters(settings))
    assert model.params["box_size"] == (16, 16)
    assert model.params["filter_size"] == (1, 1)
    assert model.params["sigma_low"] == 2.5
    assert model.params["estimator"] == "median"
    assert model.mesh.shape == (4, 4)


def test_stack_parameters_configure_the_rolling_stack() -> None:
    settings = StackSettings(max_members=3, max_age_seconds=60.0, combine="median", k_err=2.0)
    stack = RollingStack((8, 8), **stack_parameters(settings, threads=3))
    assert (stack.max_members, stack.max_age, stack.combine, stack.k_err, stack.threads) == (
        3,
        60.0,
        "median",
        2.0,
        3,  # background.threads
    )
    for index, level in enumerate([1.0, 2.0, 9.0, 4.0]):
        stack.add(f"b{index}", Exposure(np.full((8, 8), level, np.float32)), obs_time=index)
    assert stack.depth == 3  # the oldest left
    assert float(stack.combined().sci[0, 0]) == 4.0  # median of 2, 9, 4


def test_rolling_sky_parameters_choose_the_combination() -> None:
    params = rolling_sky_parameters(RollingSkySettings(combine="median"))
    box = {"box_size": 16, "filter_size": 1}
    models = [model_exposure_background(small_exposure(i, size=64), **box) for i in range(3)]
    sky = rolling_sky_background(models[0], [sky_member(m) for m in models[1:]], **params)
    assert sky.params["combine"] == "median"


def test_sky_matcher_parameters_configure_the_matcher() -> None:
    settings = SkyMatchSettings(skystat="median", nclip=2, skymethod="global+match", dqbits=0)
    matcher = SkyMatcher(**sky_matcher_parameters(settings))
    assert (matcher.stat.skystat, matcher.stat.nclip) == ("median", 2)
    assert (matcher.skymethod, matcher.dqbits) == ("global+match", 0)
