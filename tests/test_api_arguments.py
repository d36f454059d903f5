"""The public functions check their arguments as the CLI checks its options: a wrong type, None or an
out-of-range number is a VisctlError (an ArgumentError, also a ValueError) with a hint, never a raw TypeError,
AttributeError or a silently accepted value; list arguments take lists as the CLI takes repeated values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import DEMO_CFG, ROOT

import visctl
from visctl import arguments
from visctl.errors import ArgumentError, VisctlError
from visctl.options import BY_COMMAND

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
IMAGE = np.zeros((32, 32, 3), np.uint8)

#: the CLI command -> how its library function is called with one argument changed
CALLS = {
    "cam": lambda **kw: visctl.cam(IMAGE, DEMO_CFG, **kw),
    "featmap": lambda **kw: visctl.featmap(IMAGE, DEMO_CFG, **kw),
    "boxam": lambda **kw: visctl.boxam(IMAGE, DET_CFG, **kw),
    "slice": lambda **kw: visctl.slice(IMAGE, DET_CFG, **kw),
    "recon": lambda **kw: visctl.recon(IMAGE, MAE_CFG, **kw),
    "tsne": lambda **kw: visctl.tsne(DEMO_CFG, **kw),
    "pipeline": lambda **kw: visctl.pipeline(DEMO_CFG, **kw),
    "browse": lambda **kw: visctl.browse(DEMO_CFG, **kw),
    "lr": lambda **kw: visctl.lr(DEMO_CFG, **kw),
    "audit": lambda **kw: visctl.audit(DEMO_CFG, **kw),
}


def _cli_ranges() -> dict[tuple[str, str], tuple[object, object]]:
    from visctl.cli import command

    found = {}
    for name, cmd in command().commands.items():
        for p in cmd.params:
            low, high = getattr(p, "min", None), getattr(p, "max", None)
            if (low is not None or high is not None) and name in arguments.LIMITS:
                found[(name, p.name)] = (low, high)
    return found


SHARED_RUN_OPTIONS = {"threads", "seed", "max_pixels"}  # RunOptions (the session's), not the functions' own
CLI_ONLY = {"show_interval", "images"}  # --show's pause; demo's image count: no library argument


def test_every_cli_range_is_the_librarys():
    """The same bounds on both sides: every ranged CLI option is in LIMITS with its bounds, and every LIMITS entry
    is an argument of the command's library function."""
    import inspect


    cli = _cli_ranges()
    for (command, name), (low, high) in cli.items():
        if name in CLI_ONLY or (name in SHARED_RUN_OPTIONS and name not in arguments.LIMITS[command]):
            continue
        limit = arguments.LIMITS[command].get(name)
        assert limit is not None, f"visctl {command} --{name} has a range the library does not check"
        if (command, name) in arguments.ABOVE_LOW:  # click's help would show low<=x: the low bound is refused
            assert (low, high) == (None, limit.high), (command, name)
        else:
            assert (limit.low, limit.high) == (low, high), (command, name)
    functions = dict(cam=visctl.cam, featmap=visctl.featmap, boxam=visctl.boxam, slice=visctl.slice,
                     recon=visctl.recon, tsne=visctl.tsne, pipeline=visctl.pipeline,
                     browse=visctl.browse, lr=visctl.lr, audit=visctl.audit)
    for command, limits in arguments.LIMITS.items():
        params = inspect.signature(functions[command]).parameters
        fields = {f.name for f in dataclasses.fields(BY_COMMAND[command])}  # taken as **fields
        for name in limits:
            assert name in params or name in fields, \
                f"{command}: LIMITS names {name}, which visctl.{functions[command].__name__} lacks"


def _bad_values(limit: arguments.Limit) -> list[object]:
    bad: list[object] = [True, "3", float("nan"), float("inf")]
    if limit.low is not None:
        below = limit.low - 1
        while below in limit.also:
            below -= 1
        bad.append(int(below) if limit.integer else below)
    if limit.high is not None:
        bad.append(int(limit.high) + 1 if limit.integer else limit.high + 0.5)
    if limit.integer:
        bad.append((limit.low or 0) + 1.5)
    return bad


CASES = [(command, name, value) for command, limits in arguments.LIMITS.items() for name, limit in limits.items()
         for value in _bad_values(limit)]


@pytest.mark.parametrize("command, name, value", CASES, ids=[f"{c}-{n}-{v!r}" for c, n, v in CASES])
def test_an_out_of_range_or_non_number_argument_is_refused_before_any_work(command, name, value, monkeypatch):
    from visctl.library import _common

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(_common, "open_model", no_model)
    if (command, name) in arguments.PAIRS:
        value = (value, 4)
    if (command, name) in arguments.LISTS:
        value = [0, value]
    with pytest.raises(ArgumentError) as info:
        CALLS[command](**{name: value})
    assert isinstance(info.value, ValueError) and f"{name}=" in info.value.message


@pytest.mark.parametrize("call", [
    lambda: visctl.cam(None, DEMO_CFG), lambda: visctl.cam(IMAGE, None), lambda: visctl.cam(IMAGE, 5),
    lambda: visctl.featmap(IMAGE, None), lambda: visctl.boxam(IMAGE, None), lambda: visctl.slice(IMAGE, None),
    lambda: visctl.recon(IMAGE, None), lambda: visctl.recon(None, MAE_CFG), lambda: visctl.tsne(None),
    lambda: visctl.tsne(DEMO_CFG, test_cfg=3), lambda: visctl.lr(None), lambda: visctl.lr(3.5),
    lambda: visctl.pipeline(None), lambda: visctl.browse(None), lambda: visctl.browse(["a.py"]),
    lambda: visctl.cam(IMAGE, DEMO_CFG, method=None), lambda: visctl.cam(IMAGE, DEMO_CFG, method=5),
    lambda: visctl.cam(IMAGE, DEMO_CFG, target_layers=5), lambda: visctl.cam(IMAGE, DEMO_CFG, target_category=1.5),
    lambda: visctl.cam(IMAGE, DEMO_CFG, aug_smooth="yes"),
    lambda: visctl.featmap(IMAGE, DEMO_CFG, channel_reduction="bogus"),
    lambda: visctl.featmap(IMAGE, DEMO_CFG, arrangement=3),
    lambda: visctl.boxam(IMAGE, DET_CFG, method=["gradcam", "layercam"]),
    lambda: visctl.slice(IMAGE, DET_CFG, merge="bogus"),
    lambda: visctl.tsne(DEMO_CFG, pooling="bogus"),
])
def test_none_or_a_wrong_type_is_a_visctl_error(call):
    with pytest.raises(VisctlError) as info:
        call()
    assert info.value.hint


@pytest.mark.parametrize("value", ["", [], [""], "layer4,,head", ["head", " "]])
@pytest.mark.parametrize("command", ["cam", "featmap", "boxam", "tsne"])
def test_an_empty_layer_list_is_refused_not_the_default(command, value):
    with pytest.raises(ArgumentError, match="target_layers"):
        CALLS[command](target_layers=value)


@pytest.mark.parametrize("value", ["", [], ["circle", ""], [-1]])
def test_an_empty_or_negative_class_is_refused(value):
    with pytest.raises(VisctlError):
        visctl.cam(IMAGE, DEMO_CFG, target_category=value)


def test_a_list_of_methods_runs_each_as_the_clis_comma_list():
    listed = visctl.cam(IMAGE, DEMO_CFG, method=["gradcam", "layercam"])
    joined = visctl.cam(IMAGE, DEMO_CFG, method="gradcam,layercam")
    assert listed.methods == joined.methods == ("gradcam", "layercam")
    assert listed[0].maps.keys() == joined[0].maps.keys() and len(listed[0].maps) == 2
    for key, fmap in joined[0].maps.items():
        np.testing.assert_array_equal(listed[0].maps[key], fmap)
    twice = visctl.cam(IMAGE, DEMO_CFG, method=["gradcam", "GradCAM"])  # one method named twice runs once
    assert twice.methods == ("gradcam",)


def test_a_string_of_layers_is_split_as_the_cli_splits_it():
    assert arguments.names("a, b", "target_layers", "a layer name") == ["a", "b"]
    assert arguments.names(["a,b", "c"], "target_layers", "a layer name") == ["a", "b", "c"]
    assert arguments.names(None, "target_layers", "a layer name") is None
    assert arguments.skip_types([""]) == [] and arguments.skip_types(None) is None


def test_limits_describe_their_range():
    assert arguments.LIMITS["boxam"]["topk"].allows(-1) and not arguments.LIMITS["boxam"]["topk"].allows(0)
    assert not arguments.LIMITS["slice"]["patch_overlap_ratio"].allows(0.96)
    assert not arguments.LIMITS["cam"]["alpha"].allows(math.nan)
