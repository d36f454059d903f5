"""`visctl cam`: right maps, every method, every architecture family, outputs and batching."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import DEMO_CFG, manifest

from visctl import cams, models

# ---- correctness on the demo classifier --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_cam_peak_lies_on_the_object(invoke, held_out, tmp_path, method):
    folder = next(iter(held_out)).parents[1]
    out = tmp_path / method
    result = invoke("cam", folder, DEMO_CFG, "--method", method, "--save-raw", "-o", out, "--batch-size", "50")
    assert result.exit_code == 0, result.output
    m = manifest(out)
    assert m["status"] == "ok" and len(m["inputs"]) == 100
    arrays = {o["input"]: out / o["path"] for o in m["outputs"] if o["kind"] == "array"}
    assert len(arrays) == 100
    hits = 0
    for path, scene in held_out.items():
        fmap = np.load(arrays[str(path)])
        assert fmap.dtype == np.float32 and fmap.shape == scene.image.shape[:2]  # original size
        y, x = np.unravel_index(fmap.argmax(), fmap.shape)
        x0, y0, x1, y1 = scene.boxes[0]
        hits += x0 <= x < x1 and y0 <= y < y1
    assert hits >= 85, f"{method}: peak on the object for {hits}/100"


def test_fast_path_equals_plain_grad_cam():
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM

    torch.manual_seed(0)
    model = models.build_model(dict(type="resnet18", num_classes=10)).eval()
    x = torch.randn(4, 3, 64, 64)
    for method, cls in ((cams.Method.gradcam, GradCAM), (cams.Method.layercam, LayerCAM),
                        (cams.Method.gradcamplusplus, GradCAMPlusPlus), (cams.Method.xgradcam, XGradCAM)):
        ref_model = copy.deepcopy(model)
        with cls(ref_model, [ref_model.layer3[-1], ref_model.layer4[-1]]) as ref:
            expected = ref(x, [cams.ClassTarget(c) for c in (1, 2, 3, 4)])
        engine = cams.CamEngine(model, method, ["layer3.1", "layer4.1"], [cams.Layout("nchw")] * 2)
        got, _ = engine(x, [cams.ClassTarget(c) for c in (1, 2, 3, 4)])
        assert np.abs(got - expected).max() <= 1e-5, method
        assert all(p.grad is None for p in model.parameters())  # frozen during the call: no parameter gradients
        assert all(p.requires_grad for p in model.parameters())  # and restored after it


def test_frozen_and_no_grad_models_work():
    model = models.build_model(dict(type="resnet18", num_classes=3)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    engine = cams.CamEngine(model, cams.Method.gradcam, ["layer4"], [cams.Layout("nchw")])
    with torch.no_grad():  # grad-cam alone fails here with "element 0 of tensors does not require grad"
        maps, logits = engine(torch.randn(2, 3, 64, 64), [cams.RankTarget(0), cams.RankTarget(0)])
    assert maps.shape == (2, 64, 64) and maps.max() > 0


def test_one_target_per_image_batch_equals_one_by_one():
    torch.manual_seed(0)
    model = models.build_model(dict(type="resnet18", num_classes=3)).eval()
    engine = cams.CamEngine(model, cams.Method.layercam, ["layer4"], [cams.Layout("nchw")])
    x = torch.randn(3, 3, 64, 64)
    with pytest.raises(ValueError):
        engine(x, [cams.ClassTarget(0)])  # grad-cam would give 1 map and 2 silent zero maps
    maps, _ = engine(x, [cams.ClassTarget(c) for c in (0, 1, 2)])
    for i, c in enumerate((0, 1, 2)):
        single, _ = engine(x[i:i + 1], [cams.ClassTarget(c)])
        assert np.abs(single[0] - maps[i]).max() < 1e-4


def test_every_method_runs_and_all_renders_side_by_side(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, DEMO_CFG, "--method", "all", "-o", tmp_path, "--batch-size", "64")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path)
    assert m["params"]["methods"] == [x.value for x in cams.Method]
    import cv2

    img = cv2.imread(str(tmp_path / m["outputs"][0]["path"]))
    assert img.shape[1] > 5 * img.shape[0] / 3  # a wide grid of panels


def test_method_spellings():
    assert cams.parse_method("GradCAM++") == [cams.Method.gradcamplusplus]
    assert cams.parse_method("gradcamplusplus") == [cams.Method.gradcamplusplus]
    assert cams.parse_method("LayerCAM,eigencam") == [cams.Method.layercam, cams.Method.eigencam]
    assert len(cams.parse_method("all")) == len(cams.Method)


def test_categories_by_index_and_name_one_panel_each(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, DEMO_CFG, "--target-category", "circle", "--target-category", "2,cross",
                    "--save-raw", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path)
    assert m["params"]["target_category"] == [0, 2, 3]
    assert m["inputs"][0]["targets"] == ["class 0 circle", "class 2 triangle", "class 3 cross"]
    assert len([o for o in m["outputs"] if o["kind"] == "array"]) == 3


def test_topk_and_default_layer_is_reported(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, "torchvision.resnet18", "--topk", "2", "-o", tmp_path,
                    "--cfg-options", "model.num_classes=5")
    assert result.exit_code == 0, result.output
    assert "default target layer: layer4" in result.stderr
    m = manifest(tmp_path)
    assert len(m["inputs"][0]["targets"]) == 2
    assert "random weights" in result.stderr


def test_save_path_file_json_and_atomic_outputs(invoke, image_file, tmp_path):
    target = tmp_path / "sub" / "cam.jpg"
    result = invoke("cam", image_file, DEMO_CFG, "--save-path", target, "--json")
    assert result.exit_code == 0, result.output
    assert target.is_file()
    doc = json.loads(result.stdout)
    assert doc["status"] == "ok" and doc["outputs"][0]["path"] == "cam.jpg"
    assert not list(tmp_path.rglob("*.part"))
    assert (target.parent / "index.html").read_text().count("<img") == 1


def test_batch_skips_unreadable_inputs_and_exits_1(invoke, held_out, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = list(held_out)[:3]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    result = invoke("cam", folder, DEMO_CFG, "-o", tmp_path / "out")
    assert result.exit_code == 1
    m = manifest(tmp_path / "out")
    assert m["status"] == "partial" and len(m["inputs"]) == 3
    assert m["failures"][0]["path"].endswith("broken.png")
    assert "broken.png" in (tmp_path / "out" / "index.html").read_text()


def test_preview_model_prints_shapes(invoke, image_file):
    result = invoke("cam", image_file, DEMO_CFG, "--preview-model")
    assert result.exit_code == 0
    assert "backbone.layer4  Sequential  -> 1x64x16x16" in result.stdout


def test_scorecam_and_ablationcam_batch_their_passes(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, DEMO_CFG, "--method", "scorecam,ablationcam", "--ratio-channels-to-ablate",
                    "0.25", "--batch-size", "32", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "forward passes each" in result.stderr
    assert "it/s" not in result.output  # grad-cam's tqdm bars do not leak


# ---- architectures (random weights, small inputs) -----------------------------------------------------------

ARCHS = [
    ("resnet18", {}, 64, "layer4"),
    ("resnet50", {}, 64, "layer4"),
    ("mobilenet_v3_large", {}, 64, "features.16"),
    ("efficientnet_b0", {}, 64, "features.8"),
    ("convnext_tiny", {}, 64, "features.7"),
    ("vit_b_16", {"image_size": 64}, 64, "encoder.layers.encoder_layer_11.ln_1"),
    ("swin_t", {}, 64, "features.7.1.norm1"),
    ("timm.resnet10t", {}, 64, "layer4"),
    ("timm.vit_tiny_patch16_224", {"img_size": 64}, 64, "blocks.11.norm1"),
    ("visctl.demo_models:shapes_classifier", {}, 64, "backbone.layer4"),
]


@pytest.mark.parametrize("arch, kwargs, size, default_layer", ARCHS, ids=[a[0] for a in ARCHS])
def test_architectures_default_layer_and_map(arch, kwargs, size, default_layer):
    torch.manual_seed(0)
    model = models.build_model(dict(type=arch, num_classes=5, **kwargs)).eval()
    for m in model.modules():  # torchvision's ViT starts with an all-zero head: no gradient, no map
        if isinstance(m, torch.nn.Linear) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.02)
    x = torch.randn(2, 3, size, size)
    setup = cams.plan(model, x[:1], None, None, None)
    assert setup.layers == [default_layer]
    engine = cams.CamEngine(model, cams.Method.gradcam, setup.layers, setup.layouts)
    maps, logits = engine(x, [cams.RankTarget(0), cams.RankTarget(0)])
    assert maps.shape == (2, size, size) and logits.shape == (2, 5)
    assert np.isfinite(maps).all() and maps.max() > 0


def test_vit_tokens_non_square_input_and_extra_tokens():
    model = models.build_model(dict(type="timm.vit_tiny_patch16_224", num_classes=3, img_size=(48, 80))).eval()
    x = torch.randn(1, 3, 48, 80)
    setup = cams.plan(model, x, ["blocks[-1].norm1"], None, None)
    assert setup.layouts[0] == cams.Layout("tokens", (3, 5), 1)
    maps, _ = cams.CamEngine(model, cams.Method.layercam, setup.layers, setup.layouts)(x, [cams.ClassTarget(0)])
    assert maps.shape == (1, 48, 80) and maps.max() > 0
    # no class token: --num-extra-tokens 0 is honoured
    model = models.build_model(dict(type="timm.vit_tiny_patch16_224", num_classes=3, img_size=64, class_token=False,
                                    global_pool="avg")).eval()
    setup = cams.plan(model, torch.randn(1, 3, 64, 64), ["blocks.11.norm1"], True, 0)
    assert setup.layouts[0] == cams.Layout("tokens", (4, 4), 0)


def test_swin_channels_last_is_detected_non_square():
    model = models.build_model(dict(type="swin_t", num_classes=3)).eval()
    x = torch.randn(1, 3, 64, 96)
    setup = cams.plan(model, x, None, None, None)
    assert setup.vit_like and setup.layouts[0].kind == "nhwc"
    maps, _ = cams.CamEngine(model, cams.Method.gradcam, setup.layers, setup.layouts)(x, [cams.ClassTarget(1)])
    assert maps.shape == (1, 64, 96)


def test_tuple_output_layer_is_a_clear_error():
    from torch import nn

    from visctl.errors import LayerError

    class Split(nn.Module):
        def forward(self, x):
            return x, x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.split = Split()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            a, _ = self.split(self.conv(x))
            return self.fc(a.mean((2, 3)))

    with pytest.raises(LayerError, match="returns a tuple"):
        cams.plan(Net().eval(), torch.randn(1, 3, 16, 16), ["split"], None, None)


def test_ctrl_c_keeps_finished_outputs_and_a_true_manifest(invoke, held_out, tmp_path, monkeypatch):
    from visctl import render

    real = render.map_figure
    calls = {"n": 0}

    def interrupt_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(render, "map_figure", interrupt_on_second)
    paths = list(held_out)[:3]
    result = invoke("cam", *paths, DEMO_CFG, "--batch-size", "1", "-o", tmp_path)
    assert result.exit_code == 130
    m = manifest(tmp_path)
    assert m["status"] == "interrupted" and len(m["outputs"]) == 1
    assert (tmp_path / m["outputs"][0]["path"]).is_file() and not list(tmp_path.glob("*.part"))
