"""CAMs of segmentation models: the demo segmenter's maps lie on their class, torchvision's dict outputs work."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, manifest

SEG_CFG = ROOT / "examples" / "demo_segmenter" / "config.py"
CLASSES = ["background", "circle", "square", "triangle", "cross"]


@pytest.fixture(scope="module")
def seg_scenes(tmp_path_factory) -> dict[Path, object]:
    from visctl.shapes import make_scene

    folder = tmp_path_factory.mktemp("seg")
    out = {}
    for seed in range(100_000, 100_030):
        scene = make_scene(seed, size=96, n_objects=1 + seed % 3)
        path = folder / f"{seed}.png"
        cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        out[path] = scene
    return out


def test_each_class_map_peaks_inside_that_class(invoke, seg_scenes, tmp_path):
    folder = next(iter(seg_scenes)).parent
    result = invoke("cam", folder, SEG_CFG, "--method", "layercam", "--save-raw", "-o", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    man = manifest(tmp_path)
    assert man["params"]["task"] == "segmentation"
    assert man["params"]["target_layers"] == ["backbone.layer4"]
    hits = total = 0
    for path, scene in seg_scenes.items():
        truth = scene.mask()
        for c in sorted(set(scene.labels)):
            raw = tmp_path / f"{path.stem}_segcam_layercam_c{c + 1}.npy"
            if not raw.exists():  # the model did not predict that class here
                continue
            fmap = np.load(raw)
            assert fmap.shape == truth.shape
            y, x = np.unravel_index(np.nanargmax(fmap), fmap.shape)
            total += 1
            hits += truth[y, x] == c + 1
    n_objects = sum(len(set(s.labels)) for s in seg_scenes.values())
    assert total >= 0.9 * n_objects  # the demo segmenter finds (nearly) every class present
    assert hits >= 0.85 * total, f"{hits}/{total} maps peak inside their class"
    # the captions name the classes the model predicts, with the region's size
    first = man["inputs"][0]
    assert all(t.split()[2] in CLASSES for t in first["targets"])


def test_a_given_box_is_the_region(invoke, seg_scenes, tmp_path):
    path, scene = next((p, s) for p, s in seg_scenes.items() if len(s.labels) == 1)
    x0, y0, x1, y1 = scene.boxes[0]
    name = CLASSES[scene.labels[0] + 1]
    result = invoke("cam", path, SEG_CFG, "--target-category", name, "--target-box", f"{x0},{y0},{x1},{y1}",
                    "--save-raw", "-o", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    fmap = np.load(next(tmp_path.glob("*_segcam_gradcam_c*.npy")))
    y, x = np.unravel_index(np.nanargmax(fmap), fmap.shape)
    assert x0 <= x < x1 and y0 <= y < y1
    bad = invoke("cam", path, SEG_CFG, "--target-box", "1,2,3", "-o", tmp_path / "bad")
    assert bad.exit_code == 2 and "hint:" in bad.stderr


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "fcn_resnet50"])
def test_torchvision_segmentation_models_with_dict_outputs(invoke, seg_scenes, tmp_path, name):
    path = next(iter(seg_scenes))
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"model = dict(type='{name}', num_classes=5, weights_backbone=None"
                   + (", aux_loss=False" if name == "fcn_resnet50" else "") + ")\n"
                   "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64))]\n")
    result = invoke("cam", path, cfg, "-o", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    man = manifest(tmp_path / "out")
    assert man["params"]["task"] == "segmentation"
    assert not man["params"]["target_layers"][0].startswith("classifier")
    assert man["params"]["background"] == 0  # torchvision's VOC-style models: class 0 is the background


def test_featmap_works_on_a_segmenter_unchanged(invoke, seg_scenes, tmp_path):
    result = invoke("featmap", next(iter(seg_scenes)), SEG_CFG, "-o", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    assert manifest(tmp_path)["outputs"]


def test_a_target_class_nobody_predicts_is_said_on_the_terminal(invoke, seg_scenes, tmp_path):
    """--target-category of classes the model predicts nowhere in the image: no map, and a warning saying so and
    what it did predict (the run ended with exit 0, no picture and not a word)."""
    path, scene = next((p, s) for p, s in seg_scenes.items() if len(set(s.labels)) == 1)
    absent = [CLASSES[c + 1] for c in range(4) if c not in scene.labels][:2]
    result = invoke("cam", path, SEG_CFG, "--target-category", ",".join(absent), "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert "no pixel predicted as" in result.stderr and all(name in result.stderr for name in absent)
    assert "and no picture (predicted: " + CLASSES[scene.labels[0] + 1] in result.stderr
    assert not list(tmp_path.glob("*_segcam_*.png"))


def test_a_class_regions_size_is_counted_on_the_photo(invoke, seg_scenes, tmp_path):
    """The caption's "(N px)" counts the class on the photo, not at the model's input: a 96 px scene resized to
    64 px by the pipeline still counts about its own pixels (it said a 1024x768 input's 786432 px of a 480x360
    photo)."""
    path, scene = next((p, s) for p, s in seg_scenes.items() if len(set(s.labels)) == 1)
    cfg = tmp_path / "small.py"
    cfg.write_text(f"_base_ = '{SEG_CFG}'\n"
                   "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64)), "
                   "dict(type='PackInputs')]\n")
    import visctl

    item = visctl.cam(path, cfg, method="gradcam", options=visctl.RunOptions(device="cpu", threads=1)).items[0]
    c = scene.labels[0] + 1
    counted = [int(t.split("(")[1].split(" px)")[0]) for t in item.captions.values()]
    truth = int((scene.mask() == c).sum())  # the shape's pixels on the 96 px photo
    assert counted and all(0.8 * truth <= n <= 1.2 * truth for n in counted), (counted, truth)
