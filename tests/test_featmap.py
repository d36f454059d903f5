"""`visctl featmap`: reductions, grids, containers, normalisation, comparison and alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DEMO_CFG, manifest

from visctl import featmaps
from visctl.choices import Normalize, Reduction
from visctl.errors import VisctlError

F = torch.tensor([[[1.0, 2.0], [3.0, 4.0]],     # channel 0: sum 10
                  [[0.0, 9.0], [0.0, 0.0]],     # channel 1: sum 9, max 9
                  [[5.0, 5.0], [5.0, -1.0]]])   # channel 2: sum 14


def test_reductions_by_hand():
    assert np.allclose(featmaps.reduce(F, Reduction.squeeze_mean)[0][1], [[2.0, 16 / 3], [8 / 3, 1.0]])
    label, m = featmaps.reduce(F, Reduction.select_max)[0]
    assert label == "channel 2" and np.array_equal(m, F[2].numpy())
    assert np.array_equal(featmaps.reduce(F, Reduction.pixel_wise_max)[0][1], [[5.0, 9.0], [5.0, 4.0]])
    top = featmaps.reduce(F, Reduction.none, topk=2)
    assert [lbl for lbl, _ in top] == ["channel 2", "channel 0"]
    assert featmaps.reduce(F, Reduction.none, topk=-1)[0][1].shape == (2, 2, 3)
    with pytest.raises(VisctlError, match="1 or 3 channels"):
        featmaps.reduce(torch.zeros(4, 2, 2), Reduction.none, topk=-1)


def test_channel_norm_is_a_per_channel_zscore():
    z = featmaps.channel_norm(F)
    assert torch.allclose(z.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)


@pytest.mark.parametrize("k, expected", [(1, (1, 1)), (4, (2, 2)), (5, (2, 3)), (9, (3, 3)), (13, (4, 4))])
def test_arrangement_never_drops_a_panel(k, expected):
    rows, cols = featmaps.arrangement(k)
    assert (rows, cols) == expected and rows * cols >= k
    with pytest.raises(VisctlError, match="holds 4 panels"):
        featmaps.arrangement(5, 2, 2)


def test_scales_per_map_layer_global():
    a, b = np.array([[0.0, 1.0]]), np.array([[0.0, 10.0]])
    maps = [("l1", a, False), ("l1", b, False), ("l2", a, False)]
    per_map = featmaps.scales(maps, Normalize.per_map)
    assert [s.hi for s in per_map] == [1.0, 10.0, 1.0]
    assert [s.hi for s in featmaps.scales(maps, Normalize.per_layer)] == [10.0, 10.0, 1.0]
    assert [s.hi for s in featmaps.scales(maps, Normalize.global_)] == [10.0, 10.0, 10.0]


def test_tuple_and_dict_outputs_give_one_map_each(invoke, image_file, tmp_path):
    result = invoke("featmap", image_file, "tiny_models:TupleNet", "--target-layers", "backbone,neck",
                    "--quiet", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    layers = sorted(o["layer"] for o in manifest(tmp_path)["outputs"])
    assert layers == ["backbone[0]", "backbone[1]", "neck[p3]", "neck[p4]"]


def test_topk_grid_and_per_layer_scale(invoke, held_out, tmp_path):
    paths = list(held_out)[:3]
    result = invoke("featmap", *paths, DEMO_CFG, "--channel-reduction", "none", "--topk", "5",
                    "--normalize", "per-layer", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    outs = manifest(tmp_path)["outputs"]
    assert len(outs) == 3 and all(len(o["scales"]) == 5 for o in outs)
    assert len({s for o in outs for s in o["scales"]}) == 1  # one scale for the layer across images


def test_compare_with_itself_is_zero(invoke, image_file, tmp_path):
    result = invoke("featmap", image_file, DEMO_CFG, "--compare", str(DEMO_CFG), "--save-raw", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    arrays = [o for o in manifest(tmp_path)["outputs"] if o["kind"] == "array"]
    diff = [o for o in arrays if "abs" in o["path"]]
    assert len(arrays) == 3 and len(diff) == 1
    assert np.abs(np.load(tmp_path / diff[0]["path"])).max() == 0


def test_compare_mismatched_shapes_name_both(invoke, image_file, tmp_path):
    result = invoke("featmap", image_file, DEMO_CFG, "--target-layers", "backbone.layer4", "--compare",
                    str(DEMO_CFG), "--cfg-options", "model.width=16", "load_from=None", "-o", tmp_path)
    assert result.exit_code == 2
    assert "model A gives (32, 16, 16), model B gives (64, 16, 16)" in result.stderr


def test_late_layer_peaks_on_the_object(invoke, held_out, tmp_path):
    folder = next(iter(held_out)).parents[1]
    result = invoke("featmap", folder, DEMO_CFG, "--target-layers", "backbone.layer4", "--save-raw",
                    "--batch-size", "50", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    arrays = {o["input"]: tmp_path / o["path"] for o in manifest(tmp_path)["outputs"] if o["kind"] == "array"}
    hits = 0
    for path, scene in held_out.items():
        m = np.load(arrays[str(path)])
        assert m.shape == scene.image.shape[:2]
        y, x = np.unravel_index(m.argmax(), m.shape)
        x0, y0, x1, y1 = scene.boxes[0]
        hits += x0 <= x < x1 and y0 <= y < y1
    assert hits >= 80, hits


def test_vit_tokens_and_errors(invoke, image_file, tmp_path):
    result = invoke("featmap", image_file, "timm.vit_tiny_patch16_224", "--cfg-options", "model.img_size=64",
                    "model.num_classes=3", "visctl.input_size=64", "--target-layers", "blocks.2", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    bad = invoke("featmap", image_file, DEMO_CFG, "--channel-reduction", "none", "--topk", "-1", "-o", tmp_path / "x")
    assert bad.exit_code == 2 and "1 or 3 channels" in bad.stderr
    bad = invoke("featmap", image_file, DEMO_CFG, "--channel-reduction", "none", "--topk", "6", "--arrangement",
                 "2", "2", "-o", tmp_path / "y")
    assert bad.exit_code == 2 and "holds 4 panels" in bad.stderr


def test_per_map_overlay_is_mmengines_draw_featmap():
    import torch
    from mmengine.visualization import Visualizer

    from visctl import render

    rng = np.random.default_rng(0)
    img = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    fmap = rng.random((30, 40)).astype(np.float32)
    expected = Visualizer.draw_featmap(torch.from_numpy(fmap)[None], overlaid_image=img, alpha=0.4)
    assert np.array_equal(render.mmengine_overlay(img, fmap, 0.4), expected)
    assert np.abs(render.overlay(img, (fmap - fmap.min()) / np.ptp(fmap), 0.4).astype(int) - expected).max() <= 3


def test_panel_size_and_resize_shape(invoke, tmp_path):
    import cv2

    image = tmp_path / "wide.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (240, 600, 3), dtype=np.uint8))

    def width(*extra):
        out = tmp_path / "_".join(extra or ("default",))
        result = invoke("featmap", image, DEMO_CFG, "-o", out, "--target-layers", "backbone.layer4", *extra)
        assert result.exit_code == 0, result.output
        m = manifest(out)
        return cv2.imread(str(out / m["outputs"][0]["path"])).shape[1], m["params"]["panel_size"]

    assert width() == (384, 384)  # one panel: the figure is as wide as the panel, capped at 384
    assert width("--panel-size", "512") == (512, 512)
    assert width("--resize-shape", "100", "250") == (250, 250)  # H W of the panel, not shrunk further
