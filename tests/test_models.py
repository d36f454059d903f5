"""Model resolution, checkpoints and layer paths."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from visctl import building, checkpoints, config, layers
from visctl.errors import LayerError, ModelError


def test_torchvision_names_bare_and_prefixed():
    assert isinstance(building.build_model(dict(type="resnet18", num_classes=3)), nn.Module)
    m = building.build_model(dict(type="torchvision.mobilenet_v3_small", num_classes=5))
    assert m.classifier[-1].out_features == 5


def test_torchvision_detector_builds_without_downloading(monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("download attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    m = building.build_model(dict(type="fasterrcnn_mobilenet_v3_large_fpn", num_classes=3))
    assert isinstance(m, nn.Module)


def test_timm_and_import_path():
    m = building.build_model(dict(type="timm.resnet10t", num_classes=7))
    assert m.get_classifier().out_features == 7
    m = building.build_model(dict(type="visctl.demo_models:shapes_classifier", num_classes=4))
    assert m.head.fc.out_features == 4
    m = building.build_model(dict(type="torch.nn:Conv2d", in_channels=3, out_channels=4, kernel_size=3))
    assert isinstance(m, nn.Conv2d)


def test_unknown_models_say_what_to_do():
    with pytest.raises(ModelError, match="unknown model type") as e:
        building.build_model(dict(type="resnet19"))
    assert "resnet18" in e.value.hint
    with pytest.raises(ModelError, match="timm has no model"):
        building.build_model(dict(type="timm.resnet_nope"))
    with pytest.raises(ModelError, match="cannot import"):
        building.build_model(dict(type="no_such_pkg.mod:Net"))
    with pytest.raises(ModelError, match="not installed"):
        building.build_model(dict(type="ImageClassifier"), default_scope="mmpretrain_missing")


def test_registry_model_when_default_scope_is_installed(tmp_path, monkeypatch):
    """A package laid out as the OpenMMLab ones are: a child registry with a scope in ``<pkg>/registry.py`` whose
    models register only when ``<pkg>.models`` (the registry's ``locations``) is imported, which mmengine's
    registry does on the first look-up in that scope. The root registry alone sees none of them."""
    pkg = tmp_path / "visctl_fake_scope"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "registry.py").write_text(
        "from mmengine.registry import MODELS as ROOT, Registry\n"
        "MODELS = Registry('model', parent=ROOT, scope='visctl_fake_scope', locations=['visctl_fake_scope.models'])\n")
    (pkg / "models" / "__init__.py").write_text(
        "from torch import nn\nfrom visctl_fake_scope.registry import MODELS\n"
        "@MODELS.register_module()\nclass VisctlTinyNet(nn.Module):\n"
        "    def __init__(self, width=2):\n        super().__init__()\n        self.conv = nn.Conv2d(3, width, 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n.startswith("visctl_fake_scope")]:
        monkeypatch.delitem(sys.modules, name)
    m = building.build_model(dict(type="VisctlTinyNet", width=3), default_scope="visctl_fake_scope")
    assert m.conv.out_channels == 3
    assert "visctl_fake_scope.models" in sys.modules  # imported by the registry's look-up, not by the test
    with pytest.raises(ModelError, match="has no model 'VisctlHugeNet'"):
        building.build_model(dict(type="VisctlHugeNet"), default_scope="visctl_fake_scope")


def test_checkpoint_wrappers_and_revise_keys(tmp_path):
    src = building.build_model(dict(type="visctl.demo_models:shapes_classifier"))
    raw = tmp_path / "raw.pth"
    torch.save(src.state_dict(), raw)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "meta": {}}, wrapped)
    prefixed = tmp_path / "prefixed.pth"
    torch.save({"model": {f"encoder.{k}": v for k, v in src.state_dict().items()}}, prefixed)
    for path, revise in ((raw, None), (wrapped, None), (prefixed, [(r"^encoder\.", "")])):
        dst = building.build_model(dict(type="visctl.demo_models:shapes_classifier"))
        summary = checkpoints.load_checkpoint(dst, str(path), revise)
        assert summary["loaded"] == summary["total"]
        assert torch.equal(dst.head.fc.weight, src.head.fc.weight)
    dst = building.build_model(dict(type="visctl.demo_models:shapes_classifier"))
    with pytest.raises(ModelError, match="fits only 0") as e:
        checkpoints.load_checkpoint(dst, str(prefixed))
    assert "checkpoint_revise_keys = [('^encoder\\\\.', '')]" in e.value.hint  # the rename every key needs
    bare = tmp_path / "bare.pth"  # a backbone saved alone: the model's keys have a prefix the checkpoint's lack
    torch.save({k.removeprefix("backbone."): v for k, v in src.state_dict().items() if k.startswith("backbone.")},
               bare)
    with pytest.raises(ModelError) as e:
        checkpoints.load_checkpoint(dst, str(bare))
    assert "checkpoint_revise_keys = [('^', 'backbone.')]" in e.value.hint
    other_size = tmp_path / "other.pth"  # the same names, other shapes: no rename helps
    torch.save({k: torch.zeros([d + 1 for d in v.shape]) if v.ndim else v for k, v in src.state_dict().items()},
               other_size)
    with pytest.raises(ModelError) as e:
        checkpoints.load_checkpoint(dst, str(other_size))
    assert "other shapes" in e.value.hint and "checkpoint_revise_keys" not in e.value.hint


def test_checkpoint_summary_names_missing_keys(tmp_path):
    src = building.build_model(dict(type="visctl.demo_models:shapes_classifier"))
    state = src.state_dict()
    state.pop("head.fc.bias")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    summary = checkpoints.load_checkpoint(building.build_model(dict(type="visctl.demo_models:shapes_classifier")), str(path))
    line = checkpoints.checkpoint_note(summary)
    assert "1 missing (head.fc.bias)" in line and "1 unexpected (extra.weight)" in line


@pytest.mark.parametrize("path, canonical", [
    ("layer4", "layer4"), ("layer4.1", "layer4.1"), ("layer4[-1]", "layer4.1"), ("layer4.-1.conv2", "layer4.1.conv2"),
    ("layer4[1].bn2", "layer4.1.bn2"), ("layer1[0]", "layer1.0"),
])
def test_layer_paths(path, canonical):
    m = building.build_model(dict(type="resnet18"))
    name, module = layers.find_layer(m, path)
    assert name == canonical
    assert module is dict(m.named_modules())[canonical]


def test_wrong_layer_names_the_closest():
    m = building.build_model(dict(type="resnet18"))
    with pytest.raises(LayerError) as e:
        layers.find_layer(m, "layer4.1.bn3")
    assert "layer4.1.bn2" in e.value.hint or "layer4.1.bn1" in e.value.hint
    with pytest.raises(LayerError, match="out of range"):
        layers.find_layer(m, "layer4[5]")


def test_preview_lists_shapes():
    m = building.build_model(dict(type="resnet18"))
    lines = layers.preview_lines(m, torch.zeros(1, 3, 64, 64))
    assert any(ln.strip().startswith("layer4  Sequential  -> 1x512x2x2") for ln in lines)


def test_cfg_options_and_bare_model_names(tmp_path):
    cfg_file = tmp_path / "c.py"
    cfg_file.write_text("model = dict(type='resnet18', num_classes=3)\n")
    cfg = config.load_config(str(cfg_file), ["model.num_classes=5", "classes=[a,b]"])
    assert cfg.model.num_classes == 5 and list(cfg.classes) == ["a", "b"]
    assert config.load_config("timm.resnet18").model.type == "timm.resnet18"


def test_base_inheritance_and_normalization(tmp_path):
    (tmp_path / "base.py").write_text(
        "data_preprocessor = dict(mean=[1., 2., 3.], std=[4., 5., 6.])\nmodel = dict(type='resnet18')\n")
    (tmp_path / "child.py").write_text("_base_ = ['./base.py']\ndata_preprocessor = dict(to_rgb=True)\n")
    cfg = config.load_config(str(tmp_path / "child.py"))
    assert config.normalization(cfg) == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), True)
    (tmp_path / "bgr.py").write_text("data_preprocessor = dict(mean=[1., 2., 3.], std=[4., 5., 6.])\n")
    assert config.normalization(config.load_config(str(tmp_path / "bgr.py")))[2] is False


def test_split_inputs():
    assert config.split_inputs(["a.jpg", "b/", "cfg.py", "w.pth"]) == (["a.jpg", "b/"], "cfg.py", "w.pth")
    assert config.split_inputs(["a.jpg", "torchvision.resnet18"]) == (["a.jpg"], "torchvision.resnet18", None)


def _fetching_model(url: str = "http://weights.example.invalid/w.pth"):
    """A constructor that downloads its weights, as MILAN fetches its CLIP tokenizer or a config's weights=."""
    import urllib.request

    urllib.request.urlopen(url, timeout=5)
    return nn.Linear(2, 2)


def test_no_build_can_reach_the_network():
    """A model whose constructor downloads fails with the host it tried, and the sockets work again after."""
    import socket

    real = socket.getaddrinfo
    with pytest.raises(ModelError, match="tried to download from weights.example.invalid") as e:
        building.build_model(dict(type="test_models:_fetching_model"))
    assert "checkpoint" in e.value.hint
    with pytest.raises(ModelError, match="tried to download from download.pytorch.org"):
        building.build_model(dict(type="resnet18", weights="IMAGENET1K_V1"))  # a config's own weights=
    assert socket.getaddrinfo is real
    # torchvision's segmentation builders fetch an ImageNet backbone unless weights_backbone=None is passed
    m = building.build_model(dict(type="lraspp_mobilenet_v3_large", num_classes=3))
    assert m.classifier.low_classifier.out_channels == 3
