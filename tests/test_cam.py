"""`visctl cam`: right maps, every method, every architecture family, outputs and batching."""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import DEMO_CFG, manifest

from visctl import building, cams, checkpoints, layers
from visctl.choices import Method
from visctl.layers import Layout

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
    model = building.build_model(dict(type="resnet18", num_classes=10)).eval()
    x = torch.randn(4, 3, 64, 64)
    for method, cls in ((Method.gradcam, GradCAM), (Method.layercam, LayerCAM),
                        (Method.gradcamplusplus, GradCAMPlusPlus), (Method.xgradcam, XGradCAM)):
        ref_model = copy.deepcopy(model)
        with cls(ref_model, [ref_model.layer3[-1], ref_model.layer4[-1]]) as ref:
            expected = ref(x, [cams.ClassTarget(c) for c in (1, 2, 3, 4)])
        engine = cams.CamEngine(model, method, ["layer3.1", "layer4.1"], [Layout("nchw")] * 2)
        got, _ = engine(x, [cams.ClassTarget(c) for c in (1, 2, 3, 4)])
        assert np.abs(got - expected).max() <= 1e-5, method
        assert all(p.grad is None for p in model.parameters())  # frozen during the call: no parameter gradients
        assert all(p.requires_grad for p in model.parameters())  # and restored after it


def test_frozen_and_no_grad_models_work():
    model = building.build_model(dict(type="resnet18", num_classes=3)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    engine = cams.CamEngine(model, Method.gradcam, ["layer4"], [Layout("nchw")])
    with torch.no_grad():  # grad-cam alone fails here with "element 0 of tensors does not require grad"
        maps, logits = engine(torch.randn(2, 3, 64, 64), [cams.RankTarget(0), cams.RankTarget(0)])
    assert maps.shape == (2, 64, 64) and maps.max() > 0


def test_one_target_per_image_batch_equals_one_by_one():
    torch.manual_seed(0)
    model = building.build_model(dict(type="resnet18", num_classes=3)).eval()
    engine = cams.CamEngine(model, Method.layercam, ["layer4"], [Layout("nchw")])
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
    assert m["params"]["methods"] == [x.value for x in Method]
    import cv2

    img = cv2.imread(str(tmp_path / m["outputs"][0]["path"]))
    side = m["params"]["panel_size"]
    assert img.shape[1] == 6 * side + 5 * 6  # side by side: rows of 6 panels, 6 px apart
    assert img.shape[0] < 3 * 2 * side  # the 16 panels (the original and 15 maps) in 3 rows


def test_method_spellings():
    assert cams.parse_method("GradCAM++") == [Method.gradcamplusplus]
    assert cams.parse_method("gradcamplusplus") == [Method.gradcamplusplus]
    assert cams.parse_method("LayerCAM,eigencam") == [Method.layercam, Method.eigencam]
    assert len(cams.parse_method("all")) == len(Method)


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


def test_save_path_file_name_with_several_images_is_refused_before_any_work(invoke, held_out, tmp_path):
    folder = next(iter(held_out)).parents[1]
    target = tmp_path / "out" / "x.png"
    # a missing checkpoint is found when the model loads: the --save-path error comes first, before any work
    result = invoke("cam", folder, DEMO_CFG, tmp_path / "missing.pth", "--save-path", target)
    assert result.exit_code == 2, result.output
    assert "--save-path" in result.stderr and "names one image file, and there are 100 input images" in result.stderr
    assert "hint: give a directory" in result.stderr and "Traceback" not in result.output
    assert "checkpoint not found" not in result.stderr
    assert not (tmp_path / "out").exists()  # no directory named x.png, nothing written
    # featmap's --out-file likewise, before the features are computed
    result = invoke("featmap", folder, DEMO_CFG, tmp_path / "missing.pth", "--out-file", target)
    assert result.exit_code == 2 and "--out-file names one file, and there are 100 images" in result.stderr
    assert not (tmp_path / "out").exists()


def test_save_path_directory_with_several_images(invoke, held_out, tmp_path):
    images = sorted(held_out)[:2]
    target = tmp_path / "run.v2"  # a suffix that is not an image's: a directory
    result = invoke("cam", *images, DEMO_CFG, "--save-path", target)
    assert result.exit_code == 0, result.output
    assert target.is_dir() and len(list(target.glob("*_cam_*.png"))) == 2
    assert manifest(target)["status"] == "ok"


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
    model = building.build_model(dict(type=arch, num_classes=5, **kwargs)).eval()
    for m in model.modules():  # torchvision's ViT starts with an all-zero head: no gradient, no map
        if isinstance(m, torch.nn.Linear) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.02)
    x = torch.randn(2, 3, size, size)
    setup = cams.plan(model, x[:1], None, None, None)
    assert setup.layers == [default_layer]
    engine = cams.CamEngine(model, Method.gradcam, setup.layers, setup.layouts)
    maps, logits = engine(x, [cams.RankTarget(0), cams.RankTarget(0)])
    assert maps.shape == (2, size, size) and logits.shape == (2, 5)
    assert np.isfinite(maps).all() and maps.max() > 0


def test_vit_tokens_non_square_input_and_extra_tokens():
    model = building.build_model(dict(type="timm.vit_tiny_patch16_224", num_classes=3, img_size=(48, 80))).eval()
    x = torch.randn(1, 3, 48, 80)
    setup = cams.plan(model, x, ["blocks[-1].norm1"], None, None)
    assert setup.layouts[0] == Layout("tokens", (3, 5), 1)
    maps, _ = cams.CamEngine(model, Method.layercam, setup.layers, setup.layouts)(x, [cams.ClassTarget(0)])
    assert maps.shape == (1, 48, 80) and maps.max() > 0
    # no class token: --num-extra-tokens 0 is honoured
    model = building.build_model(dict(type="timm.vit_tiny_patch16_224", num_classes=3, img_size=64, class_token=False,
                                    global_pool="avg")).eval()
    setup = cams.plan(model, torch.randn(1, 3, 64, 64), ["blocks.11.norm1"], True, 0)
    assert setup.layouts[0] == Layout("tokens", (4, 4), 0)


def test_swin_channels_last_is_detected_non_square():
    model = building.build_model(dict(type="swin_t", num_classes=3)).eval()
    x = torch.randn(1, 3, 64, 96)
    setup = cams.plan(model, x, None, None, None)
    assert setup.vit_like and setup.layouts[0].kind == "nhwc"
    maps, _ = cams.CamEngine(model, Method.gradcam, setup.layers, setup.layouts)(x, [cams.ClassTarget(1)])
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
    # the figures are drawn in the writer's pool: the image interrupted while drawn (the second) is not listed;
    # the first is, and so is the third when the pool had drawn it already. Every listed file is whole.
    assert m["status"] == "interrupted" and 1 <= len(m["outputs"]) <= 2
    listed = [o.get("input") for o in m["outputs"]]
    assert str(paths[0]) in listed and str(paths[1]) not in listed
    assert all((tmp_path / o["path"]).is_file() for o in m["outputs"]) and not list(tmp_path.glob("*.part"))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(o["path"] for o in m["outputs"])


# ---- every method against plain grad-cam -------------------------------------------------------------------

def _grad_cam_classes() -> dict:
    import pytorch_grad_cam as gc

    return {Method.gradcam: gc.GradCAM, Method.gradcamplusplus: gc.GradCAMPlusPlus,
            Method.xgradcam: gc.XGradCAM, Method.eigencam: gc.EigenCAM,
            Method.eigengradcam: gc.EigenGradCAM, Method.layercam: gc.LayerCAM,
            Method.hirescam: gc.HiResCAM, Method.gradcamelementwise: gc.GradCAMElementWise,
            Method.scorecam: gc.ScoreCAM, Method.ablationcam: gc.AblationCAM,
            Method.fullgrad: gc.FullGrad, Method.shapleycam: gc.ShapleyCAM,
            Method.kpcacam: gc.KPCA_CAM, Method.fem: gc.FEM, Method.randomcam: gc.RandomCAM}


# the first principal component's sign is arbitrary; grad-cam leaves it so, visctl orients it (cams.orient)
EIGEN = {Method.eigencam, Method.eigengradcam, Method.kpcacam}


def _vit_reshape(t):
    # grad-cam's tutorial reshape_transform for ViTs (drop the class token, tokens -> 4x4 grid, channels first)
    result = t[:, 1:, :].reshape(t.size(0), 4, 4, t.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _nhwc_reshape(t):
    # grad-cam's Swin reshape_transform, for a layer that already is (N, H, W, C)
    return t.transpose(2, 3).transpose(1, 2)


def _tiny_model(kind: str):
    from tiny_models import ChannelsLastNet, TinyCNN

    torch.manual_seed(0)
    if kind == "cnn":
        model, layer, reshape = TinyCNN(), "features.5", None
        with torch.no_grad():  # non-trivial running statistics, so FullGrad's BatchNorm biases matter
            model.train()(torch.randn(8, 3, 32, 32))
    elif kind == "vit":
        model = building.build_model(dict(type="timm.vit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=8,
                                        embed_dim=24, depth=2, num_heads=2))
        layer, reshape = "blocks.1.norm1", _vit_reshape
    else:
        model, layer, reshape = ChannelsLastNet(), "blocks.1.norm1", _nhwc_reshape
    return model.eval(), layer, reshape


@contextmanager
def _negated_projections(monkeypatch):
    """Plain grad-cam with the other sign of the principal component, wherever its modules bound the function."""
    import sys

    from pytorch_grad_cam.utils import svd_on_activations as svd

    with monkeypatch.context() as mp:
        for name in ("get_2d_projection", "get_2d_projection_kernel"):
            fn = getattr(svd, name)
            for mod_name, mod in list(sys.modules.items()):
                if mod_name.startswith("pytorch_grad_cam") and getattr(mod, name, None) is fn:
                    mp.setattr(mod, name, lambda *a, _fn=fn, **k: -_fn(*a, **k))
        yield


def _plain_grad_cam(cls, model, layer, reshape, x, cats, ablation_vit=False, eigen_smooth=False):
    from pytorch_grad_cam import AblationLayerVit
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ref_model = copy.deepcopy(model)
    kwargs = {"ablation_layer": AblationLayerVit()} if ablation_vit else {}
    ref = cls(ref_model, [layers.find_layer(ref_model, layer)[1]], reshape_transform=reshape, **kwargs)
    try:
        np.random.seed(0)  # RandomCAM draws its weights from numpy's global generator
        return ref(x, [ClassifierOutputTarget(c) for c in cats], eigen_smooth=eigen_smooth)
    finally:
        cams._release(ref)


@pytest.mark.parametrize("kind", ["cnn", "vit", "swin"])
@pytest.mark.parametrize("method", list(Method), ids=[m.value for m in Method])
def test_every_method_equals_plain_grad_cam(method, kind, monkeypatch):
    model, layer, reshape = _tiny_model(kind)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cats = (1, 3)
    cls = _grad_cam_classes()[method]
    layout = cams.plan(model, x[:1], [layer], None, None).layouts
    assert layout[0].kind == {"cnn": "nchw", "vit": "tokens", "swin": "nhwc"}[kind]
    if cams.unsupported(method, layout):
        # FullGrad and ShapleyCAM: grad-cam itself cannot run them on token / channels-last layers, so there is
        # nothing to compare; visctl skips them (test_unrunnable_methods_are_skipped...). Prove the reference fails.
        with pytest.raises((RuntimeError, ValueError)):
            _plain_grad_cam(cls, model, layer, reshape, x, cats)
        return
    expected = _plain_grad_cam(cls, model, layer, reshape, x, cats, ablation_vit=kind != "cnn"
                               and method is Method.ablationcam)
    np.random.seed(0)  # the same RandomCAM weights as the reference's
    got, logits = cams.CamEngine(model, method, [layer], layout)(x, [cams.ClassTarget(c) for c in cats])
    assert got.shape == expected.shape == (2, 32, 32) and logits.shape == (2, 4)
    if method in EIGEN:
        with _negated_projections(monkeypatch):
            flipped = _plain_grad_cam(cls, model, layer, reshape, x, cats)
        for i in range(2):
            assert min(np.abs(got[i] - expected[i]).max(), np.abs(got[i] - flipped[i]).max()) < 1e-4, i
    else:
        assert np.abs(got - expected).max() < 1e-4
    assert got.max() > 0


@pytest.mark.parametrize("method", [m for m in Method if cams.METHODS[m][1] != "none" and m not in EIGEN
                                    and m is not Method.randomcam], ids=lambda m: m.value)
def test_eigen_smooth_equals_plain_grad_cam_up_to_sign(method, monkeypatch):
    model, layer, reshape = _tiny_model("cnn")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    cls = _grad_cam_classes()[method]
    expected = _plain_grad_cam(cls, model, layer, reshape, x, (0, 2), eigen_smooth=True)
    with _negated_projections(monkeypatch):
        flipped = _plain_grad_cam(cls, model, layer, reshape, x, (0, 2), eigen_smooth=True)
    got, _ = cams.CamEngine(model, method, [layer], [Layout("nchw")])(
        x, [cams.ClassTarget(0), cams.ClassTarget(2)], eigen_smooth=True)
    for i in range(2):
        assert min(np.abs(got[i] - expected[i]).max(), np.abs(got[i] - flipped[i]).max()) < 1e-4, i


def test_orient_follows_the_channel_mean():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(3, 5, 4, 4)).astype(np.float32)
    acts[:, :, 1:3, 1:3] += 4.0  # a bright object in the middle of every channel
    for sign in (1.0, -1.0):
        proj = sign * acts.mean(1)
        out = cams.orient(proj, acts)
        assert (out[:, 1:3, 1:3].mean((1, 2)) > out.mean((1, 2))).all()  # the object is the high end
        assert np.array_equal(np.abs(out), np.abs(proj))


def test_eigen_maps_light_the_object_not_the_background(held_out, monkeypatch):
    """EigenCAM, EigenGradCAM, KPCA-CAM and --eigen-smooth peak on the object, like GradCAM.

    grad-cam returns the first principal component with an arbitrary sign (svd_on_activations.py:
    ``projection = reshaped_activations @ VT[0, :]``), so plain grad-cam's EigenCAM lights the background on
    this model for 41 of these 100 images (59/100 peaks on the object). visctl orients the component to
    correlate positively with the channel mean of what was decomposed; the maps equal grad-cam's up to sign.
    """
    import pytorch_grad_cam as gc

    from visctl import config, transforms

    cfg = config.load_config(str(DEMO_CFG))
    model, _ = checkpoints.load_model(cfg, None, "cpu")
    mean, std, rgb = config.normalization(cfg)
    scenes = list(held_out.values())
    states = [transforms.run_pipeline(s.image, config.test_pipeline(cfg)) for s in scenes]
    x = transforms.to_tensor(states, mean, std, rgb)
    top = cams.predict(model, x).argmax(1).tolist()
    layer = "backbone.layer4"
    for method, smooth, cls in ((Method.eigencam, False, gc.EigenCAM),
                                (Method.eigengradcam, False, gc.EigenGradCAM),
                                (Method.kpcacam, False, gc.KPCA_CAM),
                                (Method.gradcam, True, gc.GradCAM)):
        got, _ = cams.CamEngine(model, method, [layer], [Layout("nchw")])(
            x, [cams.ClassTarget(c) for c in top], eigen_smooth=smooth)
        hits = 0
        for fmap, state, scene in zip(got, states, scenes):
            full = transforms.to_original(fmap, state, scene.image.shape[:2])
            y, xx = np.unravel_index(full.argmax(), full.shape)
            x0, y0, x1, y1 = scene.boxes[0]
            hits += x0 <= xx < x1 and y0 <= y < y1
        assert hits >= 85, f"{method.value} eigen_smooth={smooth}: peak on the object for {hits}/100"
        if method is Method.eigencam:  # the same maps as grad-cam's, up to the sign
            some = slice(0, 10)
            expected = _plain_grad_cam(cls, model, layer, None, x[some], top[some])
            with _negated_projections(monkeypatch):
                flipped = _plain_grad_cam(cls, model, layer, None, x[some], top[some])
            for g, e, f in zip(got[some], expected, flipped):
                assert min(np.abs(g - e).max(), np.abs(g - f).max()) < 1e-4


# ---- targets, streams and methods that cannot run ------------------------------------------------------------

def _one_image_per_class(held_out, tmp_path):
    folder = tmp_path / "one_each"
    folder.mkdir()
    seen = set()
    for path, scene in held_out.items():
        if scene.labels[0] not in seen:
            seen.add(scene.labels[0])
            (folder / path.name).write_bytes(path.read_bytes())
    paths = sorted(folder.iterdir())
    assert len(paths) == 4
    classes = ["circle", "square", "triangle", "cross"]
    labels = {p.name: classes[scene.labels[0]] for q, scene in held_out.items() for p in paths if q.name == p.name}
    return folder, labels


@pytest.mark.parametrize("category", [None, "triangle"])
def test_every_method_explains_the_clean_top_class_and_json_stays_clean(invoke, held_out, tmp_path, monkeypatch,
                                                                         category):
    """Each panel's caption names the asked class, or the clean image's top class (the demo model is right on
    these), whatever the method perturbs; ScoreCAM once explained the top class of a perturbed copy. And no
    library print reaches stdout (FullGrad prints a warning there), so --json stays one JSON document."""
    from visctl import render

    folder, labels = _one_image_per_class(held_out, tmp_path)
    captions: dict[int, list[str]] = {}
    real = render.map_figure

    def keep_captions(img, rows, **kwargs):
        captions[len(captions)] = [cap for _, panels in rows for cap, _ in panels]
        return real(img, rows, **kwargs)
    monkeypatch.setattr(render, "map_figure", keep_captions)
    extra = ["--target-category", category] if category else []
    result = invoke("cam", folder, DEMO_CFG, "--method", "all", "--json", "-o", tmp_path / "out", "--batch-size", "64",
                    "--ratio-channels-to-ablate", "0.25", *extra)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "ok" and doc["params"]["methods"] == [m.value for m in Method]
    # grad-cam's own print is replaced by visctl's note (kept in the manifest), once
    assert "target_layers is ignored in FullGrad" not in result.output
    assert [n for n in doc["notes"] if n.startswith("fullgrad uses no target layer")], doc["notes"]
    assert doc["params"]["target_layers_ignored_by"] == ["fullgrad"]
    assert len(captions) == 4
    for inp, caps in zip(doc["inputs"], captions.values()):
        want = category or labels[inp["path"].rsplit("/", 1)[-1]]
        assert inp["targets"] == [f"class {['circle', 'square', 'triangle', 'cross'].index(want)} {want}"]
        assert [c.split(" | ")[0] for c in caps] == [m.value for m in Method]
        for cap in caps:
            assert cap.split(" | ")[1].split(" p=")[0] == want, cap
            if not category:
                assert float(cap.split("p=")[1]) > 0.5, cap  # the probability of the clean image's top class


def test_rank_targets_resolve_on_the_clean_image():
    from tiny_models import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(3, 3, 32, 32)
    second = cams.predict(model, x).topk(2).indices[:, 1].tolist()
    for method in (Method.scorecam, Method.ablationcam, Method.eigencam):
        targets = [cams.RankTarget(1) for _ in range(3)]
        got, _ = cams.CamEngine(model, method, ["features.5"], [Layout("nchw")])(x, targets)
        assert [t.category for t in targets] == second, method
        want, _ = cams.CamEngine(model, method, ["features.5"], [Layout("nchw")])(
            x, [cams.ClassTarget(c) for c in second])
        assert np.abs(got - want).max() < 1e-5, method


VIT_CFG = """model = dict(type='timm.vit_tiny_patch16_224', num_classes=4, img_size=32, patch_size=8, embed_dim=24,
             depth=2, num_heads=2)
visctl = dict(input_size=32)
"""


@pytest.mark.parametrize("checked_up_front", [True, False])
def test_unrunnable_methods_are_skipped_with_one_warning_and_the_rest_written(invoke, image_file, tmp_path,
                                                                            monkeypatch, checked_up_front):
    """FullGrad and ShapleyCAM cannot run on a ViT: one warning each, the other methods' outputs, a manifest
    listing them, a gallery, exit 1. Without the up-front check the real grad-cam crashes are caught the same way."""
    if not checked_up_front:
        monkeypatch.setattr(cams, "unsupported", lambda method, layouts: None)
    cfg = tmp_path / "vit.py"
    cfg.write_text(VIT_CFG)
    out = tmp_path / "out"
    result = invoke("cam", image_file, cfg, "--method", "gradcam,fullgrad,shapleycam,eigencam", "--json",
                    "--save-raw", "-o", out)
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("fullgrad", "shapleycam"):
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:") and name in ln]
        assert len(lines) == 1, result.stderr
    doc = json.loads(result.stdout)
    m = manifest(out)  # this run's record, and the folder's list of runs (one here)
    assert doc == {k: v for k, v in m.items() if k != "runs"} == m["runs"][-1]
    assert doc["status"] == "partial"
    assert [s["method"] for s in doc["skipped_methods"]] == ["fullgrad", "shapleycam"]
    assert all(s["reason"] for s in doc["skipped_methods"])
    arrays = sorted(o["caption"].split("_c")[0] for o in doc["outputs"] if o["kind"] == "array")
    assert arrays == ["eigencam", "gradcam"]
    assert [o["kind"] for o in doc["outputs"]].count("image") == 1
    page = (out / "index.html").read_text()
    assert "fullgrad" in page and "shapleycam" in page and page.count("<img") == 1


def test_topk_above_the_number_of_classes_is_a_user_error(invoke, image_file):
    result = invoke("cam", image_file, DEMO_CFG, "--topk", "5")
    assert result.exit_code == 2
    assert "error: --topk 5 asks for more classes than the model has (4)" in result.stderr
    assert "hint: use --topk 1 .. 4" in result.stderr and "Traceback" not in result.stderr
    assert invoke("cam", image_file, DEMO_CFG, "--topk", "4", "-o", image_file.parent / "o").exit_code == 0


def test_panel_size_default_cap_and_option(invoke, held_out, tmp_path):
    """Panels are the original's long side up to 384 by default (160 at least), --panel-size N exactly;
    the manifest says which."""
    import cv2

    scene = next(iter(held_out))  # 128 px
    small = tmp_path / "small.png"  # 200 x 300 (h x w): kept at 300
    big = tmp_path / "big.png"  # 480 x 640: capped at 384
    for path, (h, w) in ((small, (200, 300)), (big, (480, 640))):
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(scene)), (w, h)))

    def run(image, *extra):
        out = tmp_path / f"{image.stem}{'_'.join(extra)}"
        result = invoke("cam", image, DEMO_CFG, "-o", out, *extra)
        assert result.exit_code == 0, result.output
        m = manifest(out)
        figure = cv2.imread(str(out / m["outputs"][0]["path"]))
        return figure.shape[1], m["params"]["panel_size"], m["outputs"][0]["panel_size"]

    # one method: the original and one overlay side by side, 6 px apart; wide images, so the width is the side
    assert run(small) == (2 * 300 + 6, 300, 300)
    assert run(big) == (2 * 384 + 6, 384, 384)
    assert run(scene) == (2 * 160 + 6, 160, 160)  # a tiny image is enlarged so its caption stays legible
    assert run(small, "--panel-size", "500") == (2 * 500 + 6, 500, 500)
    assert run(big, "--panel-size", "640") == (2 * 640 + 6, 640, 640)
    # several sizes in one run: every size used
    result = invoke("cam", small, big, DEMO_CFG, "-o", tmp_path / "both")
    assert result.exit_code == 0 and manifest(tmp_path / "both")["params"]["panel_size"] == [300, 384]


def test_maps_run_under_grad_cam_1_4_8_without_the_kernel_projection(monkeypatch):
    """grad-cam 1.4.8 (what OpenMMLab environments pin) has no ``get_2d_projection_kernel`` (KPCA-CAM came in
    1.5): the projection orientation must swap only what exists, and GradCAM/EigenCAM still draw their maps.
    (The slow test in test_doctor.py installs the real 1.4.8; this one removes the function from 1.5.)"""
    import numpy as np
    import torch
    from pytorch_grad_cam.utils import svd_on_activations as svd

    from visctl import cams

    monkeypatch.delattr(svd, "get_2d_projection_kernel")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 16, 16)
    with cams.library_calls():
        from pytorch_grad_cam import EigenCAM, GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        for cls in (GradCAM, EigenCAM):
            maps = cls(model, [model[0]])(x, [ClassifierOutputTarget(0)] * 2)
            assert maps.shape == (2, 16, 16) and np.isfinite(maps).all()
