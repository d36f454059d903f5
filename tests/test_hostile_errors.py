"""Hostile and clumsy inputs: every mistake ends in one `error:` line, one `hint:` line, exit 2, no traceback.

The matrices are generated from the click commands behind ``visctl.cli.app``, so a new command or option
inherits them: every option with a range or a closed set of choices x values outside it; every command that
takes images x bad image arguments; every output-file option x paths that cannot be written.
"""

from __future__ import annotations

import json
import math
import os
from enum import Enum
from pathlib import Path

import pytest
import typer
from conftest import DEMO_CFG, assert_one_error, manifest

from visctl.cli import app

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]



def _dummy_positionals(cmd) -> list[str]:
    """Values for a command's required arguments: click checks every option before the command runs."""
    return ["x" for p in cmd.params if p.param_type_name == "argument" and p.required]


def _range(param) -> tuple[object, object]:
    # typer >= 0.18 keeps min/max on the option; older typer on click's IntRange/FloatRange type
    kind = getattr(param, "type", None)
    return (getattr(param, "min", getattr(kind, "min", None)), getattr(param, "max", getattr(kind, "max", None)))


def _choices(param) -> list[str] | None:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [str(m.value) for m in annotation]
    return list(getattr(getattr(param, "type", None), "choices", None) or []) or None


def _is_number(param) -> bool:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    name = getattr(getattr(param, "type", None), "name", "")
    return annotation in (int, float) or str(annotation) in ("tuple[int, int]", "tuple[float, float]") \
        or name in ("integer", "float", "integer range", "float range")


def _bad_values() -> list[tuple[str, str, str, str]]:
    """(command, option, bad value, why) for every option with a range, choices or a numeric type."""
    cases = []
    for name, cmd in COMMANDS.items():
        for p in cmd.params:
            if p.param_type_name != "option" or getattr(p, "is_flag", False):
                continue
            opt = p.opts[0]
            lo, hi = _range(p)
            is_int = getattr(getattr(p, "type_descriptor", None), "annotation", None) is int or \
                "int" in str(getattr(getattr(p, "type_descriptor", None), "annotation", ""))
            step = 1 if is_int else 0.5
            if lo is not None:
                cases.append((name, opt, str(lo - step), "below min"))
            if hi is not None:
                cases.append((name, opt, str(hi + step), "above max"))
            if _choices(p):
                cases.append((name, opt, "no-such-choice", "not a choice"))
            if _is_number(p):
                cases.append((name, opt, "abc", "not a number"))
    return cases


BAD_VALUES = _bad_values()


def test_the_matrix_covers_the_ranged_options():
    # the issue counted 34 options whose range click checks; the matrix must not silently shrink to nothing
    ranged = {(c, o) for c, o, _v, why in BAD_VALUES if why in ("below min", "above max")}
    assert len(ranged) >= 34, sorted(ranged)
    assert ("cam", "--seed") in ranged and ("cam", "--threads") in ranged and ("featmap", "--resize-shape") in ranged


@pytest.mark.parametrize(("command", "option", "value", "why"), BAD_VALUES,
                         ids=[f"{c}{o}={v}" for c, o, v, _ in BAD_VALUES])
def test_out_of_range_option_is_one_error(invoke, command, option, value, why):
    cmd = COMMANDS[command]
    param = next(p for p in cmd.params if option in p.opts)
    values = [value] * (param.nargs if param.nargs > 1 else 1)
    result = invoke(command, option, *values, *_dummy_positionals(cmd))
    assert_one_error(result, f"'{option}'")
    assert f"visctl {command} --help" in result.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_usage_mistakes_are_one_error(invoke, command):
    cmd = COMMANDS[command]
    assert_one_error(invoke(command, "--no-such-option", *_dummy_positionals(cmd)), "--no-such-option")
    if _dummy_positionals(cmd):
        assert_one_error(invoke(command), "missing argument")


def test_unknown_command_and_the_exits_that_are_not_errors(invoke):
    assert_one_error(invoke("nosuch"), "nosuch")
    assert invoke("--version").exit_code == 0
    help_ = invoke("cam", "--help")
    assert help_.exit_code == 0 and "--target-layers" in help_.stdout and "error:" not in help_.output
    bare = invoke()
    assert bare.exit_code == 2 and "Usage:" in bare.output and "error:" not in bare.output  # `visctl` alone: help


# -- every command that takes images x bad image arguments --------------------------------------------------

IMAGE_COMMANDS = sorted(name for name, cmd in COMMANDS.items()
                        if any(p.param_type_name == "argument" and str(p.metavar or "").lstrip("[").startswith("IMG")
                               for p in cmd.params))


def _bad_images(tmp: Path) -> dict[str, tuple[str, str]]:
    (tmp / "empty").mkdir()
    fifo = tmp / "pipe.png"
    os.mkfifo(fifo)
    return {"missing": (str(tmp / "nope.png"), "image not found"),
            "fifo": (str(fifo), "not a regular file"),
            "empty-dir": (str(tmp / "empty"), "no images"),
            "glob-matches-nothing": (str(tmp / "*.nomatch.png"), "matches no file")}


def test_image_commands_are_found():
    assert {"cam", "featmap", "boxam", "slice", "recon"} <= set(IMAGE_COMMANDS)


@pytest.mark.parametrize("command", IMAGE_COMMANDS)
def test_bad_image_arguments_are_one_error(invoke, tmp_path, command):
    for kind, (arg, needle) in _bad_images(tmp_path).items():
        result = invoke(command, arg, DEMO_CFG, "-o", tmp_path / "out")
        assert_one_error(result, needle)
        assert not (tmp_path / "out").exists(), kind


# -- every output-file option x paths that cannot be written ------------------------------------------------

def _file_options() -> list[tuple[str, str, bool]]:
    """(command, option, a directory is allowed) for every option that names one output file."""
    out = []
    for name, cmd in COMMANDS.items():
        for p in cmd.params:
            if p.param_type_name == "option" and any(o in ("--save-path", "--out-file", "--csv") for o in p.opts):
                out.append((name, p.opts[0], "directory" in (p.help or "")))
    return out


FILE_OPTIONS = _file_options()


def test_file_options_are_found():
    assert {("cam", "--save-path"), ("featmap", "--out-file"), ("recon", "--out-file"), ("lr", "--save-path"),
            ("lr", "--csv")} <= {(c, o) for c, o, _ in FILE_OPTIONS}


@pytest.mark.parametrize(("command", "option", "dir_ok"), FILE_OPTIONS, ids=[f"{c}{o}" for c, o, _ in FILE_OPTIONS])
def test_unwritable_output_file_is_one_error(invoke, image_file, tmp_path, command, option, dir_ok):
    blocker = tmp_path / "a-file.txt"
    blocker.write_text("not a folder")
    bad = {"under-a-file": (blocker / "x.png", "is a file, not a folder")}
    if not dir_ok:
        bad["a-directory"] = (tmp_path, "is a directory")
    if option != "--csv" and not dir_ok:  # where a directory is allowed, a name that is no image's is one
        bad["unknown-suffix"] = (tmp_path / "out.xyz", "cannot write a .xyz file")
    args = [DEMO_CFG] if command == "lr" else [image_file, DEMO_CFG]
    for kind, (value, needle) in bad.items():
        result = invoke(command, *args, option, value, "-o", tmp_path / "out")
        assert_one_error(result, needle)
        assert blocker.read_text() == "not a folder", kind


# -- item 13: the tracebacks of the issue, each one error ---------------------------------------------------

def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def hostile_configs(tmp_path) -> dict[str, Path]:
    base = f"_base_ = {str(DEMO_CFG)!r}\n"
    (tmp_path / "boom_mod.py").write_text("import torch.nn\n\n\nclass Boom(torch.nn.Module):\n    def __init__(self, **kw):\n"
                                          "        raise RuntimeError('constructor failed')\n")
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    from visctl.shapes import write_scenes

    for p, _ in write_scenes(tmp_path / "scenes", range(100_000, 100_003)):
        p.rename(unlabelled / p.name)
    return {
        "str-model": _write(tmp_path / "str_model.py", "model = 'resnet18'\n"),
        "raising-model": _write(tmp_path / "raising.py", base + "model = dict(_delete_=True, type='boom_mod:Boom')\n"),
        # the dataloader's pipeline is what inference uses (mmpretrain's ImageClassificationInferencer)
        "scale-0": _write(tmp_path / "scale0.py", base + "test_dataloader = dict(dataset=dict(pipeline=["
                          "dict(type='LoadImageFromFile'), dict(type='Resize', scale=(0, 0)), "
                          "dict(type='PackInputs')]))\n"),
        "mean-2": _write(tmp_path / "mean2.py", base + "data_preprocessor = dict(mean=[1.0, 2.0], std=[1.0, 1.0], "
                         "to_rgb=True)\n"),
        "cycle": _write(tmp_path / "cyc_a.py", "_base_ = './cyc_b.py'\n"),
        "cycle-b": _write(tmp_path / "cyc_b.py", "_base_ = './cyc_a.py'\n"),
        "unlabelled": _write(tmp_path / "unlabelled.py", base + "test_dataloader = dict(batch_size=4, dataset=dict("
                             f"type='CustomDataset', data_root={str(unlabelled)!r}, "
                             "pipeline={{_base_.test_pipeline}}))\n"),
    }


CAM_CASES = {
    "str-model": ([], "not a dict"),
    "raising-model": ([], "constructor failed"),
    "scale-0": ([], "must be at least 1"),
    "mean-2": ([], "is not 3 numbers"),
    "cycle": ([], "form a cycle"),
    "cfg-unbalanced": (["--cfg-options", "model.num_classes=[1,2"], "cannot read the value"),
    "cfg-index-past-list": (["--cfg-options", "test_pipeline.7.scale=3"], "cannot set 'test_pipeline.7.scale'"),
    "cfg-no-key": (["--cfg-options", "=3"], "no key before '='"),
    "topk-past-classes": (["--topk", "1000"], "--topk 1000 asks for more classes than the model has (4)"),
    "device-syntax": (["--device", "cuda:abc"], "not a device name"),
}


@pytest.mark.parametrize("case", sorted(CAM_CASES))
def test_broken_configs_and_options_are_one_error(invoke, image_file, tmp_path, hostile_configs, monkeypatch, case):
    monkeypatch.syspath_prepend(str(tmp_path))  # boom_mod beside the config
    extra, needle = CAM_CASES[case]
    cfg = hostile_configs.get(case, DEMO_CFG)
    result = invoke("cam", image_file, cfg, *extra, "-o", tmp_path / "out")
    assert_one_error(result, needle)
    assert not (tmp_path / "out").exists()


def test_lr_window_and_tsne_mistakes_are_one_error(invoke, tmp_path, hostile_configs, held_out):
    for size in ("0*0", "100000*100000", "nan*3"):
        assert_one_error(invoke("lr", DEMO_CFG, "-d", "100", "--window-size", size, "-o", tmp_path / "lr"),
                         "--window-size")
    data_root = next(iter(held_out)).parent.parent
    assert_one_error(invoke("tsne", DEMO_CFG, "--metric", "nosuch", "--cfg-options",
                            f"test_dataloader.dataset.data_root={data_root}", "-o", tmp_path / "t"), "--metric nosuch: ")
    assert_one_error(invoke("tsne", hostile_configs["unlabelled"], "-o", tmp_path / "t2"), "no class labels")


# -- item 15: no silent wrong results -----------------------------------------------------------------------

def test_nan_checkpoint_is_an_error_naming_the_weights(invoke, image_file, tmp_path):
    import torch

    sd = torch.load(ROOT_CKPT, weights_only=True)

    def nanify(d):
        return {k: nanify(v) if isinstance(v, dict) else v * float("nan")
                if torch.is_tensor(v) and v.is_floating_point() else v for k, v in d.items()}
    torch.save(nanify(sd), tmp_path / "nan.pth")
    for command in ("cam", "featmap"):
        result = invoke(command, image_file, DEMO_CFG, tmp_path / "nan.pth", "-o", tmp_path / command)
        assert_one_error(result, "hold NaN or infinite values", "backbone.")
        assert not (tmp_path / command).exists()


ROOT_CKPT = DEMO_CFG.parent / "classifier.pth"


def test_cam_skips_an_image_whose_scores_are_not_finite():
    import numpy as np
    import torch

    from visctl.cams import nonfinite_rows

    logits = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [0.0, 1.0]])
    maps = np.zeros((3, 4, 4), np.float32)
    maps[2, 1, 1] = np.inf
    assert nonfinite_rows(logits, maps) == {1, 2}
    assert nonfinite_rows(logits[:1], maps[:1]) == set()


def test_manifest_json_is_strict():
    from visctl.output.manifest import to_json

    text = to_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": (float("-inf"),)})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": [None]}

    def refuse(token):
        raise ValueError(token)
    json.loads(text, parse_constant=refuse)  # no bare NaN/Infinity a strict parser refuses


def test_float_images_nan_pixels_and_constant(tmp_path):
    import warnings

    import cv2
    import numpy as np

    from visctl.errors import InputError, InputWarning
    from visctl.images import read_image

    ramp = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (32, 1))[..., None].repeat(3, 2)
    ramp[5, 5, :] = np.nan
    cv2.imwrite(str(tmp_path / "nan.tiff"), ramp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = read_image(tmp_path / "nan.tiff")
    assert [str(w.message).split(": ", 1)[1] for w in caught if issubclass(w.category, InputWarning)] == [
        "3 NaN or infinite value(s) left out of the intensity range and drawn as 0"]
    assert img.max() == 255 and img[5, 6].max() > 0  # the range comes from the finite pixels, not all black
    assert tuple(img[5, 5]) == (0, 0, 0)
    for value, expected in ((0.5, 128), (200.0, 200), (-7.0, 128)):
        cv2.imwrite(str(tmp_path / "const.tiff"), np.full((8, 8, 3), value, np.float32))
        assert int(read_image(tmp_path / "const.tiff").mean()) == expected, value
    cv2.imwrite(str(tmp_path / "allnan.tiff"), np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(InputError, match="no finite pixel"):
        read_image(tmp_path / "allnan.tiff")


def test_nan_pixels_are_reported_by_the_run(invoke, tmp_path):
    import cv2
    import numpy as np

    img = np.random.default_rng(0).random((40, 40, 3), dtype=np.float32)
    img[3, 3, 0] = np.nan
    cv2.imwrite(str(tmp_path / "nan.tiff"), img)
    result = invoke("cam", tmp_path / "nan.tiff", DEMO_CFG, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("NaN or infinite value(s) left out") == 1
    json.loads((tmp_path / "out" / "manifest.json").read_text(), parse_constant=lambda t: 1 / 0)


def test_tsne_records_the_perplexity_it_used(invoke, tmp_path, held_out):
    data_root = next(iter(held_out)).parent.parent
    result = invoke("tsne", DEMO_CFG, "--perplexity", "50", "--max-num-samples-per-class", "2", "--n-iter", "250",
                    "--cfg-options", f"test_dataloader.dataset.data_root={data_root}", "-o", tmp_path / "t")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "t")
    n = m["params"]["samples"]
    assert n == 8 and m["params"]["perplexity_requested"] == 50
    assert math.isclose(m["params"]["perplexity"], (n - 1) / 3) and "--perplexity 50 lowered to 2.33" in result.stderr
    assert any("--perplexity 50 lowered to 2.33" in note for note in m["notes"])


# -- item 16: messages ----------------------------------------------------------------------------------------

def test_messages_carry_no_terminal_escapes(capsys):
    from visctl.errors import VisctlError, report

    report(VisctlError("bad \x1b[31mred\x1b[0m thing\x07", hint="\x1b[1mfix\x1b[0m it"))
    err = capsys.readouterr().err
    assert err == "error: bad red thing\nhint: fix it\n"


@pytest.mark.parametrize("command", ["cam", "featmap", "boxam"])
def test_a_masked_image_model_is_one_error_naming_recon(invoke, image_file, tmp_path, command):
    """An MAE's forward takes a mask beside the images: a command that explains a model's forward says so once
    (exit 2, nothing written) and names the command that draws such a model, on the CLI and in Python."""
    import visctl
    from visctl.errors import ModelError

    mae = DEMO_CFG.parent.parent / "demo_mae" / "config.py"
    result = invoke(command, image_file, mae, "-o", tmp_path / command)
    assert_one_error(result, "MaskedAutoencoderViT does not run on images alone")
    assert "is drawn by recon (`visctl recon`, `visctl.recon`)" in result.stderr
    assert not (tmp_path / command).exists()
    with pytest.raises(ModelError, match="does not run on images alone"):
        getattr(visctl, command)(image_file, str(mae), options=visctl.RunOptions(device="cpu"))


def test_a_pipeline_step_torch_refuses_is_one_error_naming_the_step(invoke, image_file, tmp_path):
    """RandomErasing(scale=(2, 1)) makes torch raise a RuntimeError: a config's value, so one error (exit 2)
    naming the step, not an internal error."""
    result = invoke("cam", image_file, DEMO_CFG, ROOT_CKPT, "--cfg-options",
                    "test_dataloader.dataset.pipeline.1.type=RandomErasing",
                    "test_dataloader.dataset.pipeline.1.scale=(2,1)", "test_dataloader.dataset.pipeline.1.p=1.0",
                    "-o", tmp_path / "o")  # p=1: it always erases (a step that may not run proves nothing)
    assert_one_error(result, "pipeline step RandomErasing(scale=(2, 1), p=1.0): RuntimeError")


def test_a_missing_compare_checkpoint_names_compare(invoke, image_file, tmp_path):
    """The second model's checkpoint: the error names --compare, and the hint is not the first model's (leave
    it out to use load_from)."""
    for args in (["featmap", image_file, DEMO_CFG, ROOT_CKPT, "--compare", f"{DEMO_CFG},{tmp_path / 'no.pth'}"],
                 ["audit", DEMO_CFG, ROOT_CKPT, "--data", image_file.parent.parent, "--compare", tmp_path / "no.pth"]):
        result = invoke(*args, "-o", tmp_path / args[0])
        assert_one_error(result, f"--compare names a checkpoint that is not found: {tmp_path / 'no.pth'}")
        assert "load_from" not in result.stderr
