"""Option values that used to be silently ignored, meaningless or a traceback end as one error line and a hint
(exit 2): an empty --target-layers or --target-category, --arrangement 0 0, an inverted --target-box, numbers
out of range, a mask .npy that needs pickle; and a checkpoint load says how much of the model it filled."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import DEMO_CFG, ROOT, manifest

from visctl import building, checkpoints
from visctl.errors import InputError

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"


def _refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith("error: ") for line in lines) and any(line.startswith("hint: ") for line in lines)
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize("command, config", [("cam", DEMO_CFG), ("featmap", DEMO_CFG), ("boxam", DET_CFG)])
@pytest.mark.parametrize("value", ["", ",", "layer4,,head"])
def test_an_empty_target_layer_is_an_error_not_the_default(invoke, image_file, tmp_path, command, config, value):
    _refused(invoke(command, image_file, config, "--target-layers", value, "-o", tmp_path / "o"), "--target-layers")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_tsne_empty_target_layer(invoke, tmp_path):
    _refused(invoke("tsne", DEMO_CFG, "--target-layers", "", "-o", tmp_path / "o"), "--target-layers")


@pytest.mark.parametrize("value", ["", "circle,,square", ","])
def test_an_empty_target_category_is_an_error_not_the_predicted_class(invoke, image_file, tmp_path, value):
    _refused(invoke("cam", image_file, DEMO_CFG, "-c", value, "-o", tmp_path / "o"), "--target-category")


@pytest.mark.parametrize("rows_cols", [("0", "0"), ("0", "3"), ("-2", "4")])
def test_arrangement_with_no_rows_or_columns_is_an_error(invoke, image_file, tmp_path, rows_cols):
    _refused(invoke("featmap", image_file, DEMO_CFG, "--channel-reduction", "none", "--arrangement", *rows_cols,
                    "-o", tmp_path / "o"), "arrangement")


@pytest.mark.parametrize("box, word", [("30,10,5,40", "inverted"), ("5,40,30,10", "inverted"),
                                       ("5,5,5,20", "empty"), ("-9,-9,-1,-1", "left of or above"),
                                       ("1,2,3", "four"), ("0,0,nan,4", "finite")])
def test_a_bad_target_box_is_refused_before_the_model_loads(invoke, image_file, tmp_path, box, word):
    _refused(invoke("cam", image_file, DEMO_CFG, "--target-box", box, "-o", tmp_path / "o"), "--target-box", word)
    assert "checkpoint" not in invoke("cam", image_file, DEMO_CFG, "--target-box", box, "-o", tmp_path / "o").stderr


def test_the_inverted_box_hint_gives_the_box_meant():
    from visctl.errors import ArgumentError
    from visctl.library.cam import parse_box

    with pytest.raises(ArgumentError) as info:
        parse_box("30,10,5,40")
    assert "did you mean 5,10,30,40?" in str(info.value.hint)
    assert parse_box([5, 10, 30, 40]) == [5.0, 10.0, 30.0, 40.0]


@pytest.mark.parametrize("args, word", [
    (("featmap", "{img}", DEMO_CFG, "--channel-reduction", "none", "--topk", "0"), "topk"),
    (("featmap", "{img}", DEMO_CFG, "--channel-reduction", "none", "--topk", "-3"), "topk"),
    (("boxam", "{img}", DET_CFG, "--topk", "0"), "topk"),
    (("pipeline", DEMO_CFG, "--number", "0"), "number"),
    (("pipeline", DEMO_CFG, "--number", "-2"), "number"),
    (("browse", DEMO_CFG, "--number", "0"), "number"),
    (("pipeline", DEMO_CFG, "-m", "original", "-r", "0"), "rescale"),
    (("pipeline", DEMO_CFG, "--adaptive", "--min-edge-length", "900", "--max-edge-length", "300"), "--min-edge-length"),
    (("tsne", DEMO_CFG, "--class-idx", "-1"), "--class-idx -1"),
    (("tsne", DEMO_CFG, "--target-layers", "head", "--all-stages"), "--all-stages"),
])
def test_numbers_without_a_cli_range_are_checked_by_the_library(invoke, image_file, tmp_path, args, word):
    """Checked before the dataset or the model is read (the demo config's dataset folder does not exist here)."""
    args = [str(image_file) if a == "{img}" else a for a in args]
    _refused(invoke(*args, "-o", tmp_path / "o"), word)
    assert "dataset folder not found" not in invoke(*args, "-o", tmp_path / "o").stderr


def _save_object_array(path):
    np.save(path, np.array([[1, None], [0, 1]], dtype=object), allow_pickle=True)
    return path


def test_an_object_dtype_mask_file_is_refused_and_never_unpickled(invoke, image_file, tmp_path):
    evil = _save_object_array(tmp_path / "evil.npy")
    _refused(invoke("recon", image_file, MAE_CFG, "--mask-file", evil, "-o", tmp_path / "o"), "Python objects")


@pytest.mark.parametrize("make, words", [
    (lambda p: _save_object_array(p), "Python objects"),
    (lambda p: np.save(p, np.array([["a", "b"]])), "not numbers"),
    (lambda p: np.save(p, np.zeros((2, 2), dtype=[("a", "i4")])), "not numbers"),
    (lambda p: np.save(p, np.zeros((2, 2, 2))), "3-D"),
    (lambda p: np.save(p, np.array([[np.nan, 1.0]])), "NaN"),
    (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "not a valid .npy"),
    (lambda p: p.write_bytes(b""), "cannot read"),
])
def test_mask_arrays_are_numbers_in_two_dimensions(tmp_path, make, words):
    from visctl.images import read_mask_array

    path = tmp_path / "m.npy"
    make(path)
    with pytest.raises(InputError, match=words):
        read_mask_array(path, "--target-mask")


def test_mask_array_over_the_pixel_budget_is_refused_from_its_header(tmp_path):
    from visctl.images import read_mask_array

    path = tmp_path / "big.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(4000, 4000)).flush()
    with pytest.raises(InputError, match="pixel budget"):
        read_mask_array(path, max_pixels=1000)
    assert read_mask_array(path).shape == (4000, 4000)


def test_recon_mask_file_with_a_mask_ratio_is_an_error_not_ignored(invoke, image_file, tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((8, 8), bool))
    _refused(invoke("recon", image_file, MAE_CFG, "--mask-file", tmp_path / "m.npy", "--mask-ratio", "0.5",
                    "-o", tmp_path / "o"), "--mask-ratio")


# ---- checkpoint loads: counted in parameter values, and a warning when much stayed random ----------------------

def _wrong_shapes(tmp_path):
    """The demo classifier's checkpoint with every conv and linear weight (the >= 2-D ones) of another shape."""
    state = torch.load(DEMO_CFG.parent / "classifier.pth", weights_only=True)["state_dict"]
    bad = {k: (torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.ndim >= 2 else v) for k, v in state.items()}
    path = tmp_path / "wrong_shapes.pth"
    torch.save(bad, path)
    return path, state, bad


def test_a_checkpoint_of_wrong_shaped_weights_warns_with_true_numbers(invoke, image_file, tmp_path):
    path, state, bad = _wrong_shapes(tmp_path)
    model = building.build_model(dict(type="visctl.demo_models:shapes_classifier"))
    params = dict(model.named_parameters())
    fits = [k for k, v in bad.items() if k in state and v.shape == state[k].shape]
    loaded = sum(params[k].numel() for k in fits if k in params)
    total = sum(p.numel() for p in params.values())
    assert 0 < loaded < 0.05 * total and len(fits) / len(state) >= 0.5  # most tensors, few values
    result = invoke("cam", image_file, DEMO_CFG, path, "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stderr.splitlines() if str(path) in x)
    assert line.startswith("warning: checkpoint"), result.stderr
    share = 100 * loaded / total
    shown = re.search(r"loaded ([<>]?[\d.]+)% of the model's parameters \(([\d,]+) of ([\d,]+) values; (\d+)/(\d+) "
                      r"tensors\)", line)
    assert shown, line
    assert abs(float(shown.group(1).lstrip("<>")) - share) <= 0.05 + 1e-9
    assert int(shown.group(2).replace(",", "")) == loaded and int(shown.group(3).replace(",", "")) == total
    assert (int(shown.group(4)), int(shown.group(5))) == (len(fits), len(model.state_dict()))
    n_mismatched = sum(1 for k, v in bad.items() if v.ndim >= 2)
    assert f"{n_mismatched} mismatched" in line and "; 0 missing;" in line
    assert line.removeprefix("warning: ") in manifest(tmp_path / "o")["notes"]


def test_a_checkpoint_missing_only_a_little_is_a_note(tmp_path):
    model = building.build_model(dict(type="visctl.demo_models:shapes_classifier"))
    state = model.state_dict()
    small = min((k for k, v in dict(model.named_parameters()).items() if v.ndim == 1), key=lambda k: state[k].numel())
    partial = {k: v for k, v in state.items() if k != small}
    torch.save(partial, tmp_path / "p.pth")
    summary = checkpoints.load_checkpoint(model, str(tmp_path / "p.pth"))
    assert summary["total_values"] - summary["loaded_values"] == state[small].numel()
    assert not checkpoints.checkpoint_warns(summary)
    assert "of the model's parameters" in checkpoints.checkpoint_note(summary)
    torch.save(state, tmp_path / "full.pth")
    full = checkpoints.load_checkpoint(model, str(tmp_path / "full.pth"))
    n = len(state)
    assert checkpoints.checkpoint_note(full) == f"checkpoint {tmp_path / 'full.pth'}: loaded {n}/{n} tensors; 0 missing; " \
                                           "0 unexpected"
