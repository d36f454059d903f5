"""Class names: the config's, the model's own, torchvision's and timm's local class lists; one label format."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

from visctl import building, classes


def _cfg(**kw) -> Config:
    return Config(kw)


def test_torchvision_model_with_1000_classes_is_named_from_its_weights_enum(invoke, image_file, tmp_path):
    from torchvision.models import ResNet18_Weights

    reference = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # local, ships with torchvision
    assert reference[0] == "tench"
    result = invoke("cam", image_file, "torchvision.resnet18", "-c", "0", "-c", "goldfish", "--json", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["inputs"][0]["targets"] == ["class 0 tench", f"class 1 {reference[1]}"]
    assert doc["outputs"][0]["caption"].endswith("class 0 tench, class 1 goldfish")
    assert any("ResNet18_Weights.IMAGENET1K_V1" in n for n in doc["notes"])  # where the names came from


def test_timm_model_with_imagenet_classes_is_named_from_timms_info(invoke, image_file, tmp_path, monkeypatch):
    from timm.data import ImageNetInfo

    from visctl import render

    reference = ImageNetInfo("imagenet-1k").index_to_description(0)  # "tench, Tinca tinca"
    captions = []
    real = render.map_figure

    def keep(img, rows, **kwargs):
        captions.extend(cap for _, panels in rows for cap, _ in panels)
        return real(img, rows, **kwargs)
    monkeypatch.setattr(render, "map_figure", keep)
    result = invoke("cam", image_file, "timm.resnet10t", "-c", "0", "--json", "-o", tmp_path,
                    "--cfg-options", "visctl.input_size=64")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["inputs"][0]["targets"] == [f"class 0 {reference.split(',')[0]}"] == ["class 0 tench"]
    assert captions and captions[0].startswith("gradcam | tench p=")
    # timm's 21k class list, for a model with that many outputs
    model = building.build_model(dict(type="timm.resnet10t", num_classes=21843))
    found = classes.class_names(_cfg(model=dict(type="timm.resnet10t")), model)
    assert len(found.names) == 21843 and "imagenet-21k-goog" in found.source
    assert found.names[:5] == [d.split(",")[0] for d in ImageNetInfo("imagenet-21k-goog").label_descriptions()[:5]]


def test_config_classes_win_and_a_class_count_that_fits_no_list_gives_none():
    model = building.build_model(dict(type="resnet18"))
    own = [f"thing{i}" for i in range(1000)]
    assert classes.class_names(_cfg(model=dict(type="resnet18"), classes=own), model, 1000).names == own
    small = building.build_model(dict(type="resnet18", num_classes=5))
    found = classes.class_names(_cfg(model=dict(type="resnet18", num_classes=5)), small, 5)
    assert found.names is None  # ImageNet's names do not belong to a 5-class head
    assert classes.caption(found.names, 3) == "class 3" and classes.label(found.names, 3) == "3"
    timm_small = building.build_model(dict(type="timm.resnet10t", num_classes=5))
    assert classes.class_names(_cfg(model=dict(type="timm.resnet10t")), timm_small).names is None


class _Net(torch.nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("attr, value, source", [
    ("classes", ["cat", "dog"], "classes"),
    ("CLASSES", ("cat", "dog"), "CLASSES"),
    ("dataset_meta", {"classes": ["cat", "dog"]}, "dataset_meta['classes']"),
    ("config", SimpleNamespace(id2label={1: "dog", 0: "cat"}), "config.id2label"),  # transformers
])
def test_names_the_model_carries(attr, value, source):
    net = _Net()
    setattr(net, attr, value)
    found = classes.class_names(_cfg(model=dict(type="x:y")), net, 2)
    assert found.names == ["cat", "dog"] and found.source.endswith(source)
    assert classes.caption(found.names, 1) == "class 1 dog"
    # the config still wins
    assert classes.class_names(_cfg(classes=["a", "b"]), net, 2).names == ["a", "b"]


def test_transformers_placeholder_labels_are_no_names():
    net = _Net()
    net.config = SimpleNamespace(id2label={0: "LABEL_0", 1: "LABEL_1"})
    assert classes.class_names(_cfg(model=dict(type="x:y")), net, 2).names is None


def test_torchvision_detector_is_named_from_coco_categories():
    from torchvision.models.detection import FasterRCNN_MobileNet_V3_Large_FPN_Weights

    spec = dict(type="fasterrcnn_mobilenet_v3_large_fpn")
    model = building.build_model(dict(spec))
    found = classes.class_names(_cfg(model=spec), model)
    assert found.names == FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1.meta["categories"]
    assert found.names[1] == "person"
    few = building.build_model(dict(spec, num_classes=3))
    assert classes.class_names(_cfg(model=dict(spec, num_classes=3)), few).names is None


def test_class_names_with_commas_are_found_whole_or_by_a_synonym():
    """mmpretrain's ImageNet names have commas in them ('goldfish, Carassius auratus'): the whole name, or one
    of its synonyms where only one class has it, names the class; several names still split at commas."""
    import pytest

    from visctl.cams import resolve_categories
    from visctl.errors import VisctlError

    names = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark, white shark, man-eater",
             "tiger shark, Galeocerdo cuvieri", "shark"]
    assert resolve_categories(["goldfish, Carassius auratus"], names, 5) == [1]
    assert resolve_categories(["Goldfish,Carassius auratus"], names, 5) == [1]
    assert resolve_categories(["goldfish"], names, 5) == [1]
    assert resolve_categories(["tench, Tinca tinca,goldfish, 3"], names, 5) == [0, 1, 3]
    assert resolve_categories(["man-eater", "shark"], names, 5) == [2, 4]  # a whole name wins over a synonym
    with pytest.raises(VisctlError, match="not a class"):
        resolve_categories(["carp"], names, 5)
    twins = ["sea lion, seal", "harbor seal, seal"]
    with pytest.raises(VisctlError, match="a name of several classes") as e:
        resolve_categories(["seal"], twins, 2)
    assert "index" in e.value.hint
