"""OpenMMLab users' configs and command lines: the dataloader's pipeline, DictAction lists, tsne's layer."""

from __future__ import annotations

import pytest
from conftest import manifest

from visctl import config
from visctl.errors import ConfigError

_PIPE = ("[dict(type='LoadImageFromFile'), dict(type='ResizeEdge', scale=64), dict(type='CenterCrop', crop_size=64), "
         "dict(type='PackInputs')]")


def _cfg(tmp_path, body: str = ""):
    path = tmp_path / "cfg.py"
    path.write_text("model = dict(type='torchvision.resnet18', num_classes=3)\n"
                    f"test_pipeline = {_PIPE}\n"
                    "test_dataloader = dict(batch_size=2, dataset=dict(type='CustomDataset', data_root='x', "
                    "pipeline=test_pipeline))\n" + body)
    return path


def test_the_dataloaders_pipeline_wins_over_test_pipeline(tmp_path):
    cfg = config.load_config(str(_cfg(tmp_path)), ["test_dataloader.dataset.pipeline.1.scale=40"])
    assert cfg.test_pipeline[1]["scale"] == 64  # the override reaches only the dataloader's copy ...
    assert config.test_pipeline(cfg)[1]["scale"] == 40  # ... and that is the one used, as vis_cam.py does


def test_cfg_options_on_the_dataloader_pipeline_reach_the_model_input(invoke, image_file, tmp_path):
    cfg = _cfg(tmp_path)
    plain = invoke("cam", image_file, cfg, "--preview-model")
    assert plain.exit_code == 0, plain.output
    assert "conv1  Conv2d  -> 1x64x32x32" in plain.stdout  # 64 px input
    result = invoke("cam", image_file, cfg, "--preview-model", "--cfg-options",
                    "test_dataloader.dataset.pipeline.1.scale=40", "test_dataloader.dataset.pipeline.2.crop_size=40")
    assert result.exit_code == 0, result.output
    assert "conv1  Conv2d  -> 1x64x20x20" in result.stdout  # both pairs took effect: 40 px input


@pytest.mark.parametrize("command", ["lr", "tsne", "pipeline", "browse"])
def test_cfg_options_take_several_pairs_in_every_command(invoke, tmp_path, monkeypatch, command):
    seen = []

    def fake_load(spec, options=None, **_):
        seen.append(list(options or []))
        raise ConfigError("stop here")  # what was parsed is all this test needs

    monkeypatch.setattr(config, "load_config", fake_load)
    cfg = _cfg(tmp_path)
    result = invoke(command, cfg, "--cfg-options", "a.x=1", "b.y=[1,2]", "c=none")
    assert result.exit_code == 2, result.output
    assert "stop here" in result.stderr
    assert seen and seen[0][-3:] == ["a.x=1", "b.y=[1,2]", "c=none"], seen


def _folder_dataset(tmp_path, size: int):
    from visctl.shapes import write_scenes

    write_scenes(tmp_path / "data", range(200_000, 200_012), size=size)  # <class>/<seed>.png
    return tmp_path / "data"


@pytest.mark.parametrize(("model", "size", "layer"), [
    ("tiny_models:NeckNet", 32, "neck"),  # an mmpretrain-style model: the neck's output
    ("torchvision.resnet18", 32, "layer4"),  # no neck: the last stage, though layer4 is 1x1 at 32 px
    ("torchvision.resnet18", 96, "layer4"),
])
def test_tsne_default_layer_is_the_neck_else_the_last_stage(invoke, tmp_path, model, size, layer):
    root = _folder_dataset(tmp_path, size)
    cfg = tmp_path / "t.py"
    cfg.write_text(f"model = dict(type='{model}', num_classes=4)\n"
                   f"test_dataloader = dict(dataset=dict(type='ImageFolder', root='{root}', pipeline=[]))\n")
    result = invoke("tsne", cfg, "--method", "pca", "--max-num-samples-per-class", "4", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert manifest(tmp_path / "out")["params"]["layers"] == [layer]


@pytest.mark.skipif(not hasattr(__import__("os"), "fchmod"), reason="POSIX file modes")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_output_files_get_the_users_umask(invoke, image_file, tmp_path, mask):
    import os
    import stat

    old = os.umask(mask)
    try:
        result = invoke("cam", image_file, "torchvision.resnet18", "--cfg-options", "model.num_classes=3",
                        "-o", tmp_path / "out")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"manifest.json", "index.html"} and len(files) >= 3
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, (p, oct(p.stat().st_mode))


def test_the_openmmlab_stage_modules_have_names_of_their_own():
    """pytest imports tests/ and tests/openmmlab/ modules by basename (no packages): a second test_lr.py or
    conftest.py there breaks collecting the whole suite ("import file mismatch", or tests/conftest.py's names
    gone)."""
    from pathlib import Path

    here = Path(__file__).parent
    stage = {p.name for p in (here / "openmmlab").glob("*.py")}
    assert stage, "tests/openmmlab is empty"
    assert "conftest.py" not in stage
    assert not stage & {p.name for p in here.glob("*.py")}
