"""``visctl.open``: a model built once and explained many times gives, call by call, what the one-shot functions give."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_CFG, ROOT

import visctl
from visctl.errors import ArgumentError, VisctlError

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
CPU = visctl.RunOptions(device="cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    from visctl.shapes import write_scenes

    folder = tmp_path_factory.mktemp("open")
    write_scenes(folder, range(100_000, 100_003), size=72)
    return sorted(p for p in folder.rglob("*.png"))


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Every model build (visctl.checkpoints.load_model), by config."""
    from visctl import checkpoints

    found: list[str] = []
    real = checkpoints.load_model

    def spy(cfg, *args, **kwargs):
        found.append(str(getattr(cfg, "filename", cfg)))
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "load_model", spy)
    return found


def _same_figures(a: visctl.Result, b: visctl.Result) -> None:
    fa, fb = a.figures(), b.figures()
    assert [f.name for f in fa] == [f.name for f in fb]
    for x, y in zip(fa, fb):
        assert x.image.tobytes() == y.image.tobytes(), x.name


def test_cam_one_image_at_a_time_builds_once_and_equals_the_one_shot(images, builds, tmp_path):
    m = visctl.open(DEMO_CFG, options=CPU)
    assert len(builds) == 1 and m.checkpoint and m.checkpoint.endswith("classifier.pth")
    opened = [m.cam(path, method="gradcam,layercam", topk=2) for path in images]
    assert len(builds) == 1  # three calls, no build
    for path, res in zip(images, opened):
        one_shot = visctl.cam(path, DEMO_CFG, method="gradcam,layercam", topk=2, options=CPU)
        assert len(res) == len(one_shot) == 1 and res[0].path == one_shot[0].path == str(path)
        assert list(res[0].maps) == list(one_shot[0].maps)
        for key, fmap in res[0].maps.items():
            assert fmap.tobytes() == one_shot[0].maps[key].tobytes()  # byte for byte
        assert res[0].probabilities.tobytes() == one_shot[0].probabilities.tobytes()
        assert res.params == one_shot.params and res.notes == one_shot.notes  # the load's summary included
        _same_figures(res, one_shot)
    assert len(builds) == 1 + len(images)  # the one-shot calls each build
    # and what they save is the same, file for file
    a, b = opened[-1].save(tmp_path / "a").parent, one_shot.save(tmp_path / "b").parent
    names = sorted(p.name for p in a.iterdir() if p.suffix == ".png")
    assert names and names == sorted(p.name for p in b.iterdir() if p.suffix == ".png")
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_featmap_after_cam_on_the_same_model_equals_the_one_shot(images, builds):
    m = visctl.open(DEMO_CFG, options=CPU)
    m.cam(images[0])  # leaves nothing on the model (its channels_last layout is undone)
    for path in images[:2]:
        res = m.featmap(path, target_layers=["backbone.layer2", "backbone.layer4"])
        ref = visctl.featmap(path, DEMO_CFG, target_layers=["backbone.layer2", "backbone.layer4"], options=CPU)
        for ours, theirs in zip(res[0].layers, ref[0].layers):
            for x, y in zip(ours.maps, theirs.maps):
                assert x.array.tobytes() == y.array.tobytes()
        _same_figures(res, ref)
        assert res.notes == ref.notes
    assert len(builds) == 1 + 2


def test_boxam_and_slice_on_an_opened_detector(images, builds):
    m = visctl.open(DET_CFG, options=CPU)
    assert m.detector
    for path in images[:2]:
        res, ref = m.boxam(path, per_box=True), visctl.boxam(path, DET_CFG, per_box=True, options=CPU)
        assert res[0].boxes.tobytes() == ref[0].boxes.tobytes() and len(res[0].maps) == len(ref[0].maps)
        for x, y in zip(res[0].maps, ref[0].maps):
            assert x.tobytes() == y.tobytes()
        _same_figures(res, ref)
    res, ref = m.slice(images[0], patch_size=32), visctl.slice(images[0], DET_CFG, patch_size=32, options=CPU)
    assert res.results == ref.results
    _same_figures(res, ref)
    assert len(builds) == 1 + 3


def test_recon_on_an_opened_masked_autoencoder(images, builds):
    m = visctl.open(MAE_CFG, options=CPU)
    for path in images[:2]:
        res, ref = m.recon(path, seed=0), visctl.recon(path, MAE_CFG, seed=0, options=CPU)
        assert res[0].mask.tobytes() == ref[0].mask.tobytes()
        assert res[0].reconstruction.tobytes() == ref[0].reconstruction.tobytes()
        assert res[0].mse == ref[0].mse
        _same_figures(res, ref)
    assert len(builds) == 1 + 2


def test_tsne_on_an_opened_model(held_out, builds):
    root = next(iter(held_out)).parents[1]
    opts = CPU.replace(cfg_options=[f"test_dataloader.dataset.data_root={root}"])
    m = visctl.open(str(DEMO_CFG), options=opts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = m.tsne(method="pca", max_num_samples_per_class=3)
        ref = visctl.tsne(str(DEMO_CFG), method="pca", max_num_samples_per_class=3, options=opts)
    assert res[0].features.tobytes() == ref[0].features.tobytes() and res[0].figure.caption == ref[0].figure.caption
    assert res.params == ref.params


def test_a_method_the_model_does_not_fit_is_a_visctl_error(images):
    classifier = visctl.open(DEMO_CFG, options=CPU)
    with pytest.raises(VisctlError, match="dict\\(boxes, scores, labels\\)"):
        classifier.boxam(images[0])
    with pytest.raises(VisctlError, match="not a masked-image model"):
        classifier.recon(images[0])
    with pytest.raises(VisctlError, match="logits"):
        visctl.open(DET_CFG, options=CPU).cam(images[0])
    assert classifier.cam(images[0]).ok  # and the model still works


def test_an_opened_model_takes_a_calls_options_but_not_another_device_config_or_checkpoint(images, builds):
    m = visctl.open(DEMO_CFG, options=CPU)
    assert visctl.cam(images[0], m, options=CPU)[0].maps and len(builds) == 1
    with pytest.raises(ArgumentError, match="opened with"):
        visctl.cam(images[0], m, options=CPU.replace(cfg_options=["visctl.target_layers=['backbone.layer3']"]))
    with pytest.raises(ArgumentError, match="checkpoint"):
        visctl.cam(images[0], m, "other.pth", options=CPU)
    # a method takes a call's own options as the one-shot function does: the same device and cfg_options
    seeded = m.cam(images[0], options=CPU.replace(seed=3))
    assert seeded.params == visctl.cam(images[0], m, options=CPU.replace(seed=3)).params and len(builds) == 1
    with pytest.raises(ArgumentError, match="opened with"):
        m.cam(images[0], options=CPU.replace(cfg_options=["visctl.target_layers=['backbone.layer3']"]))
    with pytest.raises(ArgumentError, match="opened with its checkpoint"):
        m.cam(images[0], checkpoint="other.pth")
    assert visctl.open(m) is m and "OpenedModel(" in repr(m)


def test_an_nn_module_opens_too(images):
    import torch

    from visctl.demo_models import shapes_classifier

    torch.manual_seed(0)
    module = shapes_classifier()
    m = visctl.open(module, ROOT / "examples" / "demo_classifier" / "classifier.pth", options=CPU)
    a = m.cam(images[0], target_layers="backbone.layer4")
    b = visctl.cam(images[0], module, ROOT / "examples" / "demo_classifier" / "classifier.pth",
                   target_layers="backbone.layer4", options=CPU)
    for key, fmap in a[0].maps.items():
        np.testing.assert_array_equal(fmap, b[0].maps[key])
