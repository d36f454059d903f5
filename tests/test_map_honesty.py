"""Maps say what they do not know: outside a CenterCrop is "no data", a constant map is called flat."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture
def crop_cfg(tmp_path):
    cfg = tmp_path / "crop.py"
    cfg.write_text("model = dict(type='tiny_models:LiteEffNet', num_classes=4)\n"
                   "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='ResizeEdge', scale=64),"
                   " dict(type='CenterCrop', crop_size=32), dict(type='PackInputs')]\n")
    return cfg


def test_outside_a_center_crop_is_nan_grey_and_said(invoke, tmp_path, crop_cfg):
    import cv2

    img = np.full((64, 128, 3), 200, np.uint8)  # wide: the 32 px centre crop of a 64 x 128 resize sees x 48..80
    cv2.imwrite(str(tmp_path / "wide.png"), img)
    out = tmp_path / "out"
    result = invoke("featmap", tmp_path / "wide.png", crop_cfg, "-o", out, "--save-raw", "--json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    raw = np.load(out / next(o["path"] for o in m["outputs"] if o["kind"] == "array"))
    assert raw.shape == (64, 128)
    assert np.isnan(raw[:, :40]).all() and np.isnan(raw[:, 90:]).all()  # never seen: NaN, not 0
    assert np.isfinite(raw[18:46, 50:78]).all() and np.isnan(raw[:10]).all()  # the crop is y 16..48, x 48..80
    png = next(o["path"] for o in m["outputs"] if o["kind"] == "image")
    drawn = cv2.cvtColor(cv2.imread(str(out / png)), cv2.COLOR_BGR2RGB)
    # the left edge of the panel: grey (equal channels), not the hottest colour of the map
    h = drawn.shape[0]
    left = drawn[h - 30:h - 5, 5:20].reshape(-1, 3).astype(int)
    assert (np.ptp(left, axis=1) <= 2).all()
    result = invoke("cam", tmp_path / "wide.png", crop_cfg, "-o", tmp_path / "cam", "--save-raw", "--json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    raw = np.load(tmp_path / "cam" / next(o["path"] for o in m["outputs"] if o["kind"] == "array"))
    assert np.isnan(raw[:, :40]).all()


def test_layernorm_channel_mean_is_called_flat_not_drawn_full_range(invoke, image_file, tmp_path):
    result = invoke("featmap", image_file, "timm.vit_tiny_patch16_224", "-o", tmp_path, "--json",
                    "--target-layers", "blocks.11.norm1", "--cfg-options", "model.img_size=64", "model.num_classes=3")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["flat_maps"] and "blocks.11.norm1" in m["flat_maps"][0]
    assert "numerically constant" in result.stderr and "select_max" in result.stderr
    # the same layer with a channel selection has a range, and is drawn
    result = invoke("featmap", image_file, "timm.vit_tiny_patch16_224", "-o", tmp_path / "b", "--json",
                    "--target-layers", "blocks.11.norm1", "--channel-reduction", "select_max",
                    "--cfg-options", "model.img_size=64", "model.num_classes=3")
    assert "flat_maps" not in json.loads(result.stdout)


def test_blank_cam_is_said(invoke, image_file, tmp_path):
    # torchvision's ViT starts with an all-zero head: no gradient reaches any layer, so Grad-CAM is blank
    result = invoke("cam", image_file, "vit_b_16", "-o", tmp_path, "--json",
                    "--cfg-options", "model.image_size=32", "model.num_classes=3", "visctl.input_size=32")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["flat_maps"] and "constant (blank)" in result.stderr
