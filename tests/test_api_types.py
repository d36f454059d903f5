"""Every argument of every public function is type-checked before any work (visctl.arguments.TYPES): a value of
the wrong type is an ArgumentError naming the argument, with a hint -- never a raw AttributeError/TypeError from
inside the run, nor a silently accepted value ('no' as a bool, a complex image).

The cases are generated from the functions' signatures, so a new argument without a kind in the table fails here.
Nothing is loaded: the model and images named do not exist, the check comes first.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest

import visctl
from visctl import arguments
from visctl.errors import ArgumentError
from visctl.library import EXPORTS

#: a value of the wrong type for each kind of argument (the kind's name without its '?', which allows None)
WRONG: dict[str, list[object]] = {
    "number": ["x", [1.5j]],
    "bool": ["no", 1],
    "str": [5, ["a"]],
    "path": [5, ""],
    "names": [5, [None]],
    "categories": [2.5, {"a": 1}],
    "skip_type": [5],
    "model": [5, None],
    "config": [5],
    "audit_model": [5],
    "images": [5, np.zeros((8, 8, 3), np.complex64), [np.zeros((8, 8, 3), np.uint8), {"x": 1}]],
    "options": [5, "a=1", {"x": 1}, ["noequals"]],
    "session": [5, "s"],
    "settings": [5, "method=gradcam"],
    "mask": [5, np.ones((8, 8), np.uint8)],
    "box": [5, ["a", "b", "c", "d"]],
    "compare": [5, (5, None), ("a.py", 5, 6)],
    "max_shape": ["20", [None], 2.5, (True,), [1, 2, 3], [0]],
    "learning_rate": [[1], "fast", True],
    "window": [5, (12, 7)],
    "fail_under": [5, {"pointing": "high"}],
}
MISSING_MODEL = "no_such_config.py"  # a valid type; never read, since the check refuses first
REQUIRED = {"images": "no_such_image.png", "model": MISSING_MODEL, "config": MISSING_MODEL}


def _functions() -> dict[str, object]:
    found = {}
    for name, (module, attr) in EXPORTS.items():
        value = getattr(importlib.import_module(module if module.startswith("visctl.") else f"visctl.library.{module}"),
                        attr)
        if inspect.isfunction(value):
            found[name] = value
    return found


FUNCTIONS = _functions()


def _arguments(name: str) -> list[str]:
    """A public function's arguments: its named parameters, and the fields of its options object that it takes
    as keywords (``**fields``)."""
    from visctl.options import BY_COMMAND

    params = inspect.signature(FUNCTIONS[name]).parameters
    found = [p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_KEYWORD]
    if any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
        found += [f.name for f in dataclasses.fields(BY_COMMAND[name]) if f.name not in found]
    return found


def _cases() -> list[tuple[str, str, object]]:
    cases = []
    for name in FUNCTIONS:
        for arg in _arguments(name):
            kind = arguments.TYPES.get(name, {}).get(arg, "<no kind>")
            for value in WRONG.get(kind.rstrip("?"), [object()]):
                if value is not None or not kind.endswith("?"):  # '?': None means the default
                    cases.append((name, arg, value))
    return cases


def _call(name: str, arg: str, value: object) -> None:
    function = FUNCTIONS[name]
    params = inspect.signature(function).parameters
    kwargs = {p: REQUIRED[p] for p, v in params.items() if v.default is inspect.Parameter.empty and p != arg
              and v.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    kwargs[arg] = value
    function(**kwargs)  # type: ignore[operator]


def test_every_function_is_checked() -> None:
    assert set(FUNCTIONS) >= {"cam", "featmap", "boxam", "slice", "tsne", "recon", "lr", "pipeline", "browse",
                              "audit", "open"}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_argument_has_a_kind(name: str) -> None:
    function = FUNCTIONS[name]
    assert getattr(function, "typed_as", None) == name, f"visctl.{name} is not decorated with arguments.typed"
    assert set(_arguments(name)) == set(arguments.TYPES[name]), name
    for kind in arguments.TYPES[name].values():
        assert kind.rstrip("?") in WRONG, kind


@pytest.mark.parametrize(("name", "arg", "value"), _cases(),
                         ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_wrong_type_is_refused_naming_the_argument(name: str, arg: str, value: object) -> None:
    with pytest.raises(ArgumentError) as caught:
        _call(name, arg, value)
    error = caught.value
    said = f"{error.message} {error.hint}"
    assert arg in said or "--" + arg.replace("_", "-") in said, said
    assert error.hint


def test_defaults_and_right_types_pass() -> None:
    """No false refusals: every function's defaults, and values of the right types, pass the check."""
    for name, function in FUNCTIONS.items():
        params = inspect.signature(function).parameters
        values = {p: (REQUIRED[p] if v.default is inspect.Parameter.empty else v.default) for p, v in params.items()
                  if v.kind is not inspect.Parameter.VAR_KEYWORD}
        arguments.types(name, **values)
    arguments.types("cam", images=[Path("a.png"), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8)],
                    vit_like=np.bool_(True), colormap=None, target_box=[1, 2, 3.5, 4], target_mask=Path("m.npy"),
                    options=visctl.RunOptions(), session=None, target_category=[1, "cat"], method=["gradcam"])
    arguments.types("featmap", compare=("a.py", "b.pth"), overlaid=False, arrangement=(2, 2),
                    channel_reduction="none", colormap=None)
    arguments.types("boxam", max_shape=20, colormap=None, method="gradcam")
    arguments.types("boxam", max_shape=[20, -1])
    arguments.types("tsne", learning_rate=200, class_idx=[0, 1])
    arguments.types("tsne", learning_rate="auto")
    arguments.types("lr", window_size="12*7", drop_last=None)
    arguments.types("audit", fail_under={"pointing": 0.5})
    arguments.types("audit", fail_under="pointing=0.5")


def test_colormap_none_means_the_default_everywhere() -> None:
    """cam, boxam and featmap all take colormap=None as their default (jet), none raises on it."""
    from visctl.library import boxam, cam, featmap
    from visctl.options import BoxamOptions, CamOptions, FeatmapOptions

    assert cam.check_options(CamOptions(colormap=None))[1] == cam.check_options(CamOptions(colormap="jet"))[1]
    assert boxam.check_options(BoxamOptions(colormap=None))[0] == "jet"
    assert featmap.check_options(FeatmapOptions(colormap=None)) == "jet"
