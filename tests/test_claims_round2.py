"""Claims visctl prints are true (issue 24, second round): a --compare of equal models says A and B are equal
(not that the layer is zero), a flat box map made by --max-shape names --max-shape, FullGrad is labelled with no
target layer (and grad-cam's own print is replaced by one visctl line), and a per-pixel model is not called a
segmentation model when that was only inferred."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DEMO_CFG, ROOT, manifest

from visctl.choices import Reduction

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"


@pytest.fixture(scope="module")
def img(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("claims") / "img.png"
    Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype("uint8")).save(path)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from PIL import Image

    from visctl import shapes

    path = tmp_path_factory.mktemp("claims_scene") / "scene0.png"
    Image.fromarray(shapes.make_scene(200000, 128, n_objects=3, min_side=14, max_side=36).image).save(path)
    return path


# ---- 8: featmap --compare of equal models ----------------------------------------------------------------

@pytest.mark.parametrize("signed", [False, True])
def test_compare_of_equal_models_says_they_are_equal(invoke, img, tmp_path, signed):
    r = invoke("featmap", img, DEMO_CFG, "--compare", DEMO_CFG, *(["--signed"] if signed else []), "-o", tmp_path)
    assert r.exit_code == 0, r.output
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1, r.stderr
    assert "A and B are equal at this layer" in warning[0], warning
    assert "zero everywhere" not in warning[0] and "layer's output" not in warning[0], warning
    # the claim is true: A's own map is not flat (the layer's output is not zero), only the difference is
    assert ("|A-B|" if not signed else "A-B") in warning[0] and "1 map(s)" in warning[0], warning


def test_why_flat_of_a_difference_is_about_the_two_models():
    from visctl.featmaps import why_flat

    zero = torch.zeros(4, 5, 5)
    assert "A and B are equal" in why_flat(zero, Reduction.squeeze_mean, None, difference=True)[0]
    assert "zero everywhere" in why_flat(zero, Reduction.squeeze_mean, None)[0]  # a layer's own output: as before
    shifted = torch.full((4, 5, 5), 0.5)
    reason = why_flat(shifted, Reduction.squeeze_mean, None, difference=True)[0]
    assert "differ by the same amount at every position" in reason and "equal" not in reason


# ---- 9: boxam's flat map made by --max-shape -------------------------------------------------------------

def test_boxam_flat_map_from_max_shape_names_max_shape(invoke, scene, tmp_path):
    r = invoke("boxam", scene, DET_CFG, "--max-shape", "8", "--save-raw", "-o", tmp_path / "capped")
    assert r.exit_code == 0, r.output
    raw = np.load(tmp_path / "capped" / "scene0_boxam_all.npy")
    assert raw.max() == raw.min()  # the map is flat ...
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "--max-shape 8 8" in warning[0], r.stderr
    assert "do not change with this layer" not in warning[0], warning
    # ... and the claim is true: at the layer's own size (no cap) the map of the same boxes is not flat
    r = invoke("boxam", scene, DET_CFG, "--save-raw", "-o", tmp_path / "full")
    assert r.exit_code == 0 and "warning:" not in r.stderr, r.output
    full = np.load(tmp_path / "full" / "scene0_boxam_all.npy")
    assert full.max() > full.min()


# ---- 10: FullGrad uses no target layer --------------------------------------------------------------------

def test_fullgrad_is_labelled_with_no_target_layer(invoke, img, tmp_path):
    r = invoke("cam", img, DEMO_CFG, "-m", "fullgrad", "--save-raw", "-o", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert "Warning: target_layers" not in r.output, r.output  # grad-cam's own print
    assert "target layers from the config" not in r.stderr and "warning:" not in r.stderr, r.stderr
    assert "fullgrad uses no target layer" in r.stderr
    files = sorted(p.name for p in (tmp_path / "a").iterdir() if p.suffix in (".png", ".npy"))
    assert files and not any("layer" in f for f in files), files
    run = manifest(tmp_path / "a")["runs"][-1]
    assert run["params"]["target_layers"] is None, run["params"]
    # given target layers: one visctl warning that they are ignored for it, and the claim is true (same map)
    r2 = invoke("cam", img, DEMO_CFG, "-m", "fullgrad", "--target-layers", "backbone.layer3", "--save-raw",
                "-o", tmp_path / "b")
    assert r2.exit_code == 0, r2.output
    warnings = [ln for ln in r2.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "fullgrad" in warnings[0] and "ignored" in warnings[0], r2.stderr
    assert "Warning: target_layers" not in r2.output
    npy = [f for f in files if f.endswith(".npy")][0]
    np.testing.assert_array_equal(np.load(tmp_path / "a" / npy), np.load(tmp_path / "b" / npy))


def test_fullgrad_beside_a_layer_method_records_which_ignores_them(invoke, img, tmp_path):
    r = invoke("cam", img, DEMO_CFG, "-m", "fullgrad,gradcam", "--save-raw", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    params = manifest(tmp_path)["runs"][-1]["params"]
    assert params["target_layers"] == ["backbone.layer4"] and params["target_layers_ignored_by"] == ["fullgrad"]
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npy")
    assert [n for n in names if "fullgrad" in n and "layer" in n] == [], names
    assert [n for n in names if "gradcam" in n and "layer4" in n], names


# ---- 21: a per-pixel output is only a guess of segmentation ---------------------------------------------

def test_per_pixel_model_is_not_called_a_segmentation_model(img):
    import visctl
    from visctl.errors import VisctlError

    with pytest.raises(VisctlError) as err:
        visctl.cam(str(img), torch.nn.Conv2d(3, 4, 3))
    text, hint = str(err.value), err.value.hint or ""
    assert "segmentation model" not in text and "per pixel" in text, text
    assert "target_layers=" in hint and "task=" in hint, hint
    # said segmentation by the caller: no guess to own up to
    with pytest.raises(VisctlError) as err:
        visctl.cam(str(img), torch.nn.Conv2d(3, 4, 3), task="segmentation")
    assert "took the model for segmentation" not in str(err.value) and "task=" not in (err.value.hint or "")
