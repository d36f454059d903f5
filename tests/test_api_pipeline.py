"""`visctl.pipeline`: every step's image, the figures `visctl pipeline` writes, and its folder from save()."""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, manifest
from PIL import Image

import visctl
from visctl.images import DEFAULT_MAX_PIXELS, read_image
from visctl.shapes import write_scenes


@pytest.fixture
def folder_cfg(tmp_path) -> Path:
    """Class folders under an mmpretrain-style config, random transforms included (as tests/test_data.py)."""
    write_scenes(tmp_path / "data" / "train", range(0, 6))
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "classes = ['circle', 'square', 'triangle', 'cross']\n"
        "train_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=48),\n"
        "    dict(type='RandomFlip', prob=0.5), dict(type='ColorJitter', brightness=0.3), dict(type='PackInputs')]\n"
        f"train_dataloader = dict(batch_size=4, dataset=dict(type='CustomDataset', data_root='{tmp_path / 'data'}',\n"
        "    data_prefix='train', pipeline=train_pipeline))\n")
    return cfg


def _png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


@pytest.mark.parametrize("mode", ["pipeline", "concat"])
def test_figures_and_files_equal_the_cli(invoke, folder_cfg, tmp_path, mode):
    out = tmp_path / "cli"
    cli = invoke("pipeline", folder_cfg, "--number", "3", "--mode", mode, "--seed", "5", "-o", out)
    assert cli.exit_code == 0, cli.output
    # the CLI's pixel budget (--max-pixels' default) is recorded in its params; a library call has none unless given
    result = visctl.pipeline(folder_cfg, number=3, mode=mode, seed=5,
                                   options=visctl.RunOptions(max_pixels=DEFAULT_MAX_PIXELS))
    theirs = manifest(out)
    assert [f.name for f in result.figures()] == [o["path"] for o in theirs["outputs"]]
    assert [f.caption for f in result.figures()] == [o["caption"] for o in theirs["outputs"]]
    for fig in result.figures():
        np.testing.assert_array_equal(fig.image, _png(out / fig.name))
    saved = tmp_path / "api"
    result.save(saved)
    ours = manifest(saved)
    assert ours["outputs"] == theirs["outputs"] and ours["inputs"] == theirs["inputs"]
    assert ours["params"] == theirs["params"]
    assert sorted(p.name for p in saved.iterdir()) == sorted(p.name for p in out.iterdir())


def test_every_step_is_an_array_named_after_its_step(folder_cfg):
    result = visctl.pipeline(folder_cfg, number=2)
    sample = result.samples[0]
    assert sample.steps[0][0] == "original" and sample.steps[0][1].startswith("RandomResizedCrop")
    assert [s.split("(")[0] for s in sample.steps[0][1:]] == ["RandomResizedCrop", "RandomFlip", "ColorJitter"]
    np.testing.assert_array_equal(sample.images[0][0], read_image(sample.name))  # the file as read
    np.testing.assert_array_equal(sample.original, read_image(sample.name))
    np.testing.assert_array_equal(sample.images[0][-1], sample.views[0])  # the last step is the final view
    assert sample.views[0].shape == (48, 48, 3) and sample.views[0].dtype == np.uint8
    assert sample.class_name == Path(sample.name).parent.name and sample.label is not None


def test_images_as_arrays_pil_paths_and_lists(folder_cfg, tmp_path):
    data = visctl.pipeline(folder_cfg, number=1, mode="transformed")
    first = Path(data.samples[0].name)
    pixels = read_image(first)
    # the random transforms draw from (seed, position): the same image in the same position, the same views
    for given in (first, str(first), pixels, Image.fromarray(pixels), [pixels]):
        result = visctl.pipeline(folder_cfg, given, mode="transformed")
        (sample,) = result.samples
        np.testing.assert_array_equal(sample.views[0], data.samples[0].views[0])
        assert sample.label is None
    several = visctl.pipeline(folder_cfg, [pixels, Image.fromarray(pixels[::-1]), first])
    assert [s.name for s in several.samples] == ["image0.png", "image1.png", str(first)]
    assert [f.name for f in several.figures()] == ["image0_concat.png", "image1_concat.png",
                                                   f"{first.stem}_concat.png"]


def test_jupyter_frozen_and_silent(folder_cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = visctl.pipeline(folder_cfg, number=2)
    assert capsys.readouterr().out == ""
    assert sorted(tmp_path.rglob("*")) == before
    png = cv2.imdecode(np.frombuffer(result._repr_png_(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(png, result.figures()[0].image)
    page = result._repr_html_()
    assert all(f.caption in page for f in result.figures())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.mode = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.samples[0].views[0][0, 0, 0] = 1
    assert "PipelineResult(" in repr(result) and "PipelineView(" in repr(result)


def test_html_captions_are_escaped(tmp_path):
    from visctl.shapes import make_scene

    folder = tmp_path / "a<b>&c"
    folder.mkdir()
    path = folder / "x<y>.png"
    cv2.imwrite(str(path), make_scene(1).image[..., ::-1])
    result = visctl.pipeline(dict(train_pipeline=[dict(type="Resize", scale=32)]), path)
    assert "x&lt;y&gt;.png: no label" in result._repr_html_() and "x<y>" not in result._repr_html_()


def test_no_pipeline_is_a_clear_error(tmp_path):
    from visctl.errors import ConfigError

    with pytest.raises(ConfigError, match="no val pipeline"):
        visctl.pipeline({}, np.zeros((8, 8, 3), np.uint8), phase="val")


def test_example_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "api" / "pipeline.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "CenterCrop(crop_size=128)" in out and "(128, 128, 3)" in out and "image0_pipeline.png" in out
