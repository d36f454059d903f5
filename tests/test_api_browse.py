"""`visctl.browse`: the samples after the pipeline with their class names, the pages `visctl browse` writes."""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, manifest

import visctl
from visctl import datasets
from visctl.errors import ArgumentError, ConfigError
from visctl.images import DEFAULT_MAX_PIXELS
from visctl.shapes import CLASSES, write_scenes


@pytest.fixture
def folder_cfg(tmp_path) -> Path:
    write_scenes(tmp_path / "data" / "train", range(0, 7))
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        f"classes = {list(CLASSES)!r}\n"
        "train_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=48),\n"
        "    dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]\n"
        f"train_dataloader = dict(batch_size=4, dataset=dict(type='CustomDataset', data_root='{tmp_path / 'data'}',\n"
        "    data_prefix='train', pipeline=train_pipeline))\n")
    return cfg


def _png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


def test_pages_and_files_equal_the_cli(invoke, folder_cfg, tmp_path):
    out = tmp_path / "cli"
    cli = invoke("browse", folder_cfg, "--number", "-1", "--rows", "2", "--cols", "2", "--seed", "3", "-o", out)
    assert cli.exit_code == 0, cli.output
    result = visctl.browse(folder_cfg, number=-1, rows=2, cols=2, seed=3,
                           options=visctl.RunOptions(max_pixels=DEFAULT_MAX_PIXELS))
    theirs = manifest(out)
    assert [f.name for f in result.figures()] == [o["path"] for o in theirs["outputs"]] == \
           ["browse_train_000.png", "browse_train_001.png"]
    for fig in result.figures():
        np.testing.assert_array_equal(fig.image, _png(out / fig.name))
    saved = tmp_path / "api"
    result.save(saved)
    ours = manifest(saved)
    assert ours["outputs"] == theirs["outputs"] and ours["inputs"] == theirs["inputs"]
    assert ours["params"] == theirs["params"]
    assert sorted(p.name for p in saved.iterdir()) == sorted(p.name for p in out.iterdir())


def test_cli_pages_are_drawn_in_the_writers_thread_with_the_librarys_bytes(invoke, folder_cfg, tmp_path,
                                                                          monkeypatch):
    """The CLI's pages are composed (cells, captions, grid) and encoded in the writer's thread, not the one that
    runs the pipeline, and their files are the PNGs of the library's Figures, byte for byte."""
    import threading

    from visctl import render
    from visctl.output.writer import encode_image

    where: dict[str, list[str]] = {"fit": [], "caption": [], "grid": []}

    def spy(name: str):
        real, calls = getattr(render, name), where[name]

        def call(*a, **k):
            calls.append(threading.current_thread().name)
            return real(*a, **k)
        return call
    for name in where:
        monkeypatch.setattr(render, name, spy(name))
    out = tmp_path / "cli"
    cli = invoke("browse", folder_cfg, "--number", "-1", "--rows", "2", "--cols", "2", "--seed", "3", "-o", out)
    assert cli.exit_code == 0, cli.output
    assert len(where["caption"]) == 7 and len(where["fit"]) == 7 and len(where["grid"]) == 7 + 2
    threads = {t for calls in where.values() for t in calls}
    assert threads and all(t.startswith("visctl-write") for t in threads), threads
    monkeypatch.undo()
    result = visctl.browse(folder_cfg, number=-1, rows=2, cols=2, seed=3,
                           options=visctl.RunOptions(max_pixels=DEFAULT_MAX_PIXELS))
    assert all(p.figure is not None and p.drawing is None for p in result.pages)  # the library's are drawn
    assert [o["path"] for o in manifest(out)["outputs"]] == [f.name for f in result.figures()]
    for fig in result.figures():
        assert (out / fig.name).read_bytes() == encode_image(fig.image, ".png"), fig.name
        assert not fig.image.flags.writeable


def test_a_page_to_draw_writes_as_a_drawn_one(folder_cfg, tmp_path):
    """A page of the run's items (the CLI's, drawn in the writer) shows and saves like the library's drawn page."""
    from visctl.library import browse as lib
    from visctl.session import Session

    run = lib.plan(Session(), folder_cfg, visctl.BrowseOptions(number=5, rows=2, cols=2, seed=3))
    drawn = list(run.collect().pages)
    to_draw = list(run.items())
    assert [p.figure is None and p.drawing is not None for p in to_draw] == [True, True]
    for a, b in zip(drawn, to_draw):
        (fa,), (fb,) = a.figures(), b.figures()
        assert (fa.name, fa.caption) == (fb.name, fb.caption)
        np.testing.assert_array_equal(fa.image, fb.image)
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    lib.BrowseResult(params=run.params, pages=tuple(drawn)).save(a_dir)
    lib.BrowseResult(params=run.params, pages=tuple(to_draw)).save(b_dir)
    assert manifest(a_dir)["outputs"] == manifest(b_dir)["outputs"]
    assert manifest(a_dir)["inputs"] == manifest(b_dir)["inputs"] and len(manifest(b_dir)["inputs"]) == 5
    for name in ("browse_train_000.png", "browse_train_001.png"):
        assert (a_dir / name).read_bytes() == (b_dir / name).read_bytes()


def test_samples_are_the_pipelines_views_with_class_names(folder_cfg):
    result = visctl.browse(folder_cfg, number=5, rows=2, cols=2, seed=3)
    assert [len(p.samples) for p in result.pages] == [4, 1]
    ds_cfg, steps = datasets.dataset_config(__import__("mmengine").Config.fromfile(str(folder_cfg)), "train")
    reference = datasets.PipelineSamples(datasets.build_dataset(ds_cfg), steps, seed=3, skip_types=("PackInputs",))
    for i, sample in enumerate(result.samples):
        np.testing.assert_array_equal(sample.views[0], reference[i]["views"][0])
        assert sample.views[0].shape == (48, 48, 3)
        # the class folder the file lies in is the class name the sample carries
        assert sample.class_name == Path(sample.name).parent.name == CLASSES[sample.label]
        assert sample.caption == f"#{i} {sample.label}: {sample.class_name}" and sample.page == i // 4


def test_a_per_sample_mode_returns_what_pipeline_returns(folder_cfg):
    """mode= other than grid (mmpretrain's browse_dataset.py --mode): the pipeline's run and result, of the same
    options; rows= and cols= lay out grid pages only, and rescale_factor= scales mode=original's only."""
    from visctl.errors import InputError
    from visctl.library.pipeline import PipelineResult

    for mode, extra in (("concat", {}), ("original", dict(rescale_factor=2.0))):
        ours = visctl.browse(folder_cfg, mode=mode, number=3, seed=3, **extra)
        theirs = visctl.pipeline(folder_cfg, mode=mode, number=3, seed=3, **extra)
        assert isinstance(ours, PipelineResult) and ours.params == theirs.params and ours.mode == mode
        assert [f.name for f in ours.figures()] == [f.name for f in theirs.figures()] and len(ours.figures()) == 3
        for a, b in zip(ours.figures(), theirs.figures()):
            np.testing.assert_array_equal(a.image, b.image)
    assert visctl.browse(folder_cfg, visctl.BrowseOptions(mode="transformed", number=1)).mode == "transformed"
    with pytest.raises(InputError, match=r"rows= and cols= .* mode=concat"):
        visctl.browse(folder_cfg, mode="concat", rows=2)
    with pytest.raises(InputError, match=r"rescale_factor=2 .* mode=original"):
        visctl.browse(folder_cfg, rescale_factor=2)
    with pytest.raises(ArgumentError, match="rescale_factor=0 is out of range"):
        visctl.browse(folder_cfg, mode="original", rescale_factor=0)


def test_dict_config_and_errors(tmp_path):
    write_scenes(tmp_path / "t", range(3))
    result = visctl.browse(dict(train_dataloader=dict(dataset=dict(type="ImageFolder", root=str(tmp_path / "t")))))
    assert len(result.samples) == 3 and result.params["config"] == "<config>"
    with pytest.raises(ArgumentError, match="phase="):
        visctl.browse({}, phase="nope")
    with pytest.raises(ConfigError, match="no val_dataloader"):
        visctl.browse({}, phase="val")


def test_jupyter_frozen_and_silent(folder_cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = visctl.browse(folder_cfg, number=3)
    assert capsys.readouterr().out == ""
    assert sorted(tmp_path.rglob("*")) == before
    png = cv2.imdecode(np.frombuffer(result._repr_png_(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(png, result.figures()[0].image)
    assert "train samples 0-2" in result._repr_html_()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.pages = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.samples[0].label = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.samples[0].views[0][0, 0, 0] = 1
    assert "BrowseResult(" in repr(result) and "BrowseSample(" in repr(result)


def test_example_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "api" / "browse.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "pages: ['browse_train_000.png', 'browse_train_001.png']" in out and "(64, 64, 3)" in out
