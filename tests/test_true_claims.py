"""What visctl says about a model is true: random weights only when they are, an embedding is not called a
class, a flat map's reason is that layer's, segmentation captions name the dataset's classes and count a
region on the photo."""

from __future__ import annotations

import json
import textwrap

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, manifest
from torch import nn

from visctl.choices import Reduction

FACTORY = '''
import torch
from torch import nn


def net(path=None, keep_head=True):
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    if path:  # the factory loads its own weights (all of them, or the backbone only)
        state = torch.load(path)
        m.load_state_dict({k: v for k, v in state.items() if keep_head or not k.startswith("4.")}, strict=False)
    return m


class Flat(nn.Module):
    """Maps whose channel mean or whole output is flat for a reason that is not a norm layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.dead = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.valid = nn.Conv2d(3, 4, 3)  # no padding: a constant image gives a constant output
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, 3)
        with torch.no_grad():
            w = torch.randn(1, 3, 3, 3)
            self.conv.weight.copy_(torch.cat([w, -w]))  # two channels that cancel in their mean
            self.dead[0].weight.zero_()
            self.dead[0].bias.fill_(-1.0)  # ReLU(-1): zero everywhere

    def forward(self, x):
        self.dead(x)
        self.valid(x)
        return self.head(self.pool(self.conv(x)).flatten(1))
'''


@pytest.fixture
def factory(tmp_path):
    (tmp_path / "claims_nets.py").write_text(FACTORY)
    import importlib.util

    spec = importlib.util.spec_from_file_location("claims_nets_ref", tmp_path / "claims_nets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(123)
    weights = tmp_path / "w.pth"
    torch.save(mod.net().state_dict(), weights)
    return tmp_path, weights


def _config(folder, name, text):
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


# ---- random weights ----------------------------------------------------------------------------------------

def test_a_builder_that_loads_its_weights_is_not_called_random(invoke, factory, image_file, tmp_path):
    folder, weights = factory
    cfg = _config(folder, "loads", f"model = dict(type='claims_nets:net', path={str(weights)!r})\n")
    result = invoke("featmap", image_file, cfg, "-o", tmp_path / "a", "--json")
    assert result.exit_code == 0, result.output
    assert "random" not in result.stderr.lower().replace("random seed", "")
    assert not any("random" in w for w in _warnings(result.stderr))
    notes = json.loads(result.stdout)["notes"]
    assert any("weights its builder loaded" in n and "none of its" in n for n in notes)
    # true: the model visctl ran has exactly the file's weights
    from visctl import checkpoints, config

    model, _ = checkpoints.load_model(config.load_config(str(cfg)), None)
    saved = torch.load(weights)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_a_builder_that_loads_part_names_the_random_tensors(invoke, factory, image_file, tmp_path):
    folder, weights = factory
    cfg = _config(folder, "part", f"model = dict(type='claims_nets:net', path={str(weights)!r}, keep_head=False)\n")
    result = invoke("featmap", image_file, cfg, "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    (line,) = [w for w in _warnings(result.stderr) if "random" in w]
    assert "2 of its 4 weight tensors are random" in line and "4.weight" in line and "4.bias" in line
    assert "0.weight" not in line


def test_a_builder_that_loads_nothing_is_random_and_said_so(invoke, factory, image_file, tmp_path):
    folder, _ = factory
    cfg = _config(folder, "fresh", "model = dict(type='claims_nets:net')\n")
    result = invoke("featmap", image_file, cfg, "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert any("the model has random weights" in w for w in _warnings(result.stderr))
    from visctl import checkpoints, config

    torch.manual_seed(0)
    a, _ = checkpoints.load_model(config.load_config(str(cfg)), None)
    torch.manual_seed(1)
    b, _ = checkpoints.load_model(config.load_config(str(cfg)), None)
    assert not torch.equal(a[0].weight, b[0].weight)  # true: the weights are what the seed draws


def test_torchvision_weights_asked_for_and_cached_are_not_called_random(invoke, image_file, tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(7)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cfg = _config(tmp_path, "tv", "model = dict(type='resnet18', weights='IMAGENET1K_V1')\nvisctl = dict(input_size=64)\n")
    result = invoke("cam", image_file, cfg, "-o", tmp_path / "a", "--json")
    assert result.exit_code == 0, result.output
    assert not any("random" in w for w in _warnings(result.stderr))
    assert any("weights its builder loaded" in n for n in json.loads(result.stdout)["notes"])


def test_the_seed_comparison_leaves_the_run_random_sequence_alone(factory):
    from visctl import config, provenance

    folder, weights = factory
    cfg = config.load_config(str(_config(folder, "part2", f"model = dict(type='claims_nets:net', path={str(weights)!r}, "
                                         "keep_head=False)\n")))
    from visctl import building

    model = building.build_model(cfg.get("model"), None, [folder])
    torch.manual_seed(5)
    before = torch.get_rng_state()
    np.random.seed(5)
    np_before = np.random.get_state()[1].copy()
    changed, compared = provenance.seed_dependent(cfg, model)
    assert changed == ["4.weight", "4.bias"] and compared == 4
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(np.random.get_state()[1], np_before)


# ---- an output that is not class scores ----------------------------------------------------------------------

def test_a_headless_timm_model_is_an_embedding_not_a_class(invoke, image_file, tmp_path):
    out = tmp_path / "o"
    result = invoke("cam", image_file, "timm.vit_tiny_patch16_224", "-o", out, "--topk", "2",
                    "--cfg-options", "model.img_size=32", "model.num_classes=0")
    assert result.exit_code == 0, result.output
    said = [w for w in _warnings(result.stderr) if "not classes" in w]
    assert len(said) == 1 and "num_classes=0" in said[0] and "192 values" in said[0]  # vit_tiny: 192 features
    m = manifest(out)
    targets = m["inputs"][0]["targets"]
    assert len(targets) == 2 and all(t.startswith("embedding feature ") for t in targets)
    captions = [o.get("caption", "") for o in m["outputs"]]
    assert captions and not any("class" in c or "p=" in c for c in captions)
    page = (out / "index.html").read_text()
    assert "p=0" not in page and "class " not in page


def test_a_classifier_replaced_by_identity_is_an_embedding(image_file):
    import torchvision

    import visctl

    model = torchvision.models.resnet18(num_classes=10)
    model.fc = nn.Identity()
    with pytest.warns(UserWarning, match="nn.Identity at 'fc'.*512 values"):
        result = visctl.cam(image_file, model)
    item = result.items[0]
    assert item.probabilities is None
    (caption,) = item.captions.values()
    assert caption.startswith("gradcam | embedding feature ") and "p=" not in caption
    # true: the unit explained is the largest of the 512 features
    assert int(item.targets[0].split()[-1]) < 512


def test_score_on_an_embedding_is_refused(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, "timm.vit_tiny_patch16_224", "-o", tmp_path, "--score",
                    "--cfg-options", "model.img_size=32", "model.num_classes=0")
    assert result.exit_code == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "--score" in error and "num_classes=0" in error and "Traceback" not in result.output


@pytest.mark.parametrize("tail", [
    [nn.Linear(4, 3), nn.Identity()],  # timm's ClassifierHead: fc, then an identity flatten
    [nn.Identity(), nn.Linear(4, 3)],
])
def test_class_scores_stay_class_scores(image_file, tail):
    import torch

    import visctl

    torch.manual_seed(0)  # a random 4-channel conv can give a flat map (a warning, an error under pytest)
    for module in tail:
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), *tail)
    result = visctl.cam(image_file, model, target_layers="1")
    (caption,) = result.items[0].captions.values()
    assert " p=" in caption and result.items[0].probabilities is not None


def test_class_names_that_do_not_fit_the_outputs_are_not_used(invoke, image_file, tmp_path):
    cfg = _config(tmp_path, "names", "model = dict(type='resnet18', num_classes=5)\nclasses = ['a', 'b', 'c']\n"
                  "visctl = dict(input_size=64)\n")
    result = invoke("cam", image_file, cfg, "-o", tmp_path / "o", "--topk", "5")
    assert result.exit_code == 0, result.output
    assert any("name 3 classes, and the model gives 5 outputs" in w for w in _warnings(result.stderr))
    targets = manifest(tmp_path / "o")["inputs"][0]["targets"]
    assert sorted(targets) == [f"output unit {i}" for i in range(5)]


# ---- flat feature maps: the reason of that layer -------------------------------------------------------------

@pytest.mark.parametrize("layer, reduction, reason, hint", [
    ("conv", "squeeze_mean", "their mean does not", "select_max"),
    ("dead", "squeeze_mean", "zero everywhere", "another layer"),
    ("pool", "squeeze_mean", "one spatial position (1x1)", "earlier layer"),
    ("dead", "select_max", "zero everywhere", "another layer"),
])
def test_a_flat_map_gives_its_own_layer_reason(invoke, factory, image_file, tmp_path, layer, reduction, reason, hint):
    folder, _ = factory
    cfg = _config(folder, "flat", "model = dict(type='claims_nets:Flat')\nvisctl = dict(input_size=32)\n")
    result = invoke("featmap", image_file, cfg, "-o", tmp_path / "o", "--json", "--target-layers", layer,
                    "--channel-reduction", reduction)
    assert result.exit_code == 0, result.output
    (flat,) = json.loads(result.stdout)["flat_maps"]
    assert reason in flat and hint in flat
    assert "norm" not in flat.replace("--use-norm", "")  # none of these layers is a norm
    (line,) = [w for w in _warnings(result.stderr) if "numerically constant" in w]
    assert reason in line and "norm layer" not in line


def test_a_constant_image_is_the_reason_when_it_is(invoke, factory, tmp_path):
    folder, _ = factory
    cfg = _config(folder, "flat", "model = dict(type='claims_nets:Flat')\nvisctl = dict(input_size=32)\n")
    img = tmp_path / "grey.png"
    cv2.imwrite(str(img), np.full((32, 32, 3), 120, np.uint8))
    result = invoke("featmap", img, cfg, "-o", tmp_path / "o", "--json", "--target-layers", "valid")
    assert result.exit_code == 0, result.output
    (flat,) = json.loads(result.stdout)["flat_maps"]
    assert "every channel of the layer's output is the same at every position" in flat


def test_a_norm_over_the_channels_is_named_only_when_it_is_one():
    from visctl import featmaps

    x = torch.randn(1, 64, 8, 8)
    ln = nn.GroupNorm(1, 64, affine=False)
    reason, _ = featmaps.why_flat(ln(x)[0], Reduction.squeeze_mean, nn.Sequential(nn.Conv2d(64, 64, 1), ln))
    assert "norm over the channels (GroupNorm)" in reason
    bn = nn.BatchNorm2d(64).eval()
    reason, _ = featmaps.why_flat(ln(x)[0], Reduction.squeeze_mean, bn)  # a BN does not centre channels
    assert "norm" not in reason


def test_vit_norm1_flat_mean_names_the_layernorm(invoke, image_file, tmp_path):
    result = invoke("featmap", image_file, "timm.vit_tiny_patch16_224", "-o", tmp_path, "--json",
                    "--target-layers", "blocks.1.norm1", "--cfg-options", "model.img_size=32", "model.depth=2",
                    "model.num_classes=3")
    assert result.exit_code == 0, result.output
    (flat,) = json.loads(result.stdout)["flat_maps"]
    assert "norm over the channels (LayerNorm)" in flat


# ---- segmentation captions -------------------------------------------------------------------------------------

SEG = ROOT / "examples" / "demo_segmenter"
SEG_CLASSES = ["background", "circle", "square", "triangle", "cross"]


def test_unnamed_segmentation_classes_are_not_doubled(invoke, image_file, tmp_path):
    cfg = _config(tmp_path, "fcn", "model = dict(type='lraspp_mobilenet_v3_large', num_classes=11)\n"
                  "visctl = dict(task='segmentation', input_size=64)\n")
    result = invoke("cam", image_file, cfg, "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "o")
    targets = m["inputs"][0]["targets"]
    assert targets
    for t in targets:
        words = t.split(":")[0].split()
        assert words[0] == "class" and len(words) == 2, t  # "class 6", never "class 6 6"
    for o in m["outputs"]:
        for t in targets:
            n = t.split()[1]
            assert f"class {n} {n}" not in o.get("caption", "")


def test_segmentation_names_from_the_checkpoint_meta_and_the_dataset_metainfo(invoke, tmp_path):
    from visctl.shapes import make_scene

    scene = make_scene(100_003, size=96, n_objects=2)
    img = tmp_path / "scene.png"
    cv2.imwrite(str(img), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    base = ("model = dict(type='visctl.demo_models:shapes_segmenter', num_classes=5)\n"
            "data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)\n"
            "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Pad', size_divisor=4), dict(type='PackInputs')]\n"
            "visctl = dict(task='segmentation', target_layers=['backbone.layer4'])\n")
    state = torch.load(SEG / "segmenter.pth")
    state = state.get("state_dict", state)
    ckpt = tmp_path / "with_meta.pth"
    torch.save({"state_dict": state, "meta": {"dataset_meta": {"classes": SEG_CLASSES}}}, ckpt)
    cfg = _config(tmp_path, "seg_meta", base)
    result = invoke("cam", img, cfg, ckpt, "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    targets = manifest(tmp_path / "a")["inputs"][0]["targets"]
    truth = {f"class {c + 1} {SEG_CLASSES[c + 1]}" for c in scene.labels}
    assert set(targets) == truth
    cfg = _config(tmp_path, "seg_metainfo", base + "train_dataloader = dict(dataset=dict(type='X', metainfo=dict("
                  f"classes={SEG_CLASSES!r})))\n")
    result = invoke("cam", img, cfg, SEG / "segmenter.pth", "-o", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert set(manifest(tmp_path / "b")["inputs"][0]["targets"]) == truth


def test_segmentation_region_sizes_are_counted_on_the_photo(invoke, tmp_path):
    from visctl.shapes import make_scene

    # a 192 px photo of one large shape, resized to the 96 px the demo segmenter was trained at
    scene = make_scene(100_011, size=192, n_objects=1, min_side=44, max_side=56, clutter=False)
    img = tmp_path / "big.png"
    cv2.imwrite(str(img), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    cfg = _config(tmp_path, "resized", f"""
        model = dict(type='visctl.demo_models:shapes_segmenter', num_classes=5)
        classes = {SEG_CLASSES!r}
        load_from = {str(SEG / 'segmenter.pth')!r}
        data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
        test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96)),
                         dict(type='PackInputs')]
        visctl = dict(task='segmentation', target_layers=['backbone.layer4'])
        """)
    import re

    import visctl

    res = visctl.cam(img, str(cfg), target_category=SEG_CLASSES[scene.labels[0] + 1])
    (caption,) = res.items[0].captions.values()
    counted = int(re.search(r"\((\d+) px\)", caption).group(1))
    truth = int((scene.mask() == scene.labels[0] + 1).sum())  # the shape's pixels on the 192 px photo
    assert abs(counted - truth) < 0.25 * truth, (counted, truth)  # at the input's 96 px it would be ~truth / 4
