"""Figures bounded (issue 24, items 3, 4 and 16): the options that size a figure (pipeline/browse ``-r``,
featmap ``--resize-shape``/``--topk``/``--arrangement``, ``--panel-size`` with many methods or targets, browse
``--rows``/``--cols``) are checked against the limit of a figure (2^30 pixels, or a larger ``--max-pixels``;
``--max-pixels`` bounds the images read and the model inputs, not the figures made of several panels) before the
figure is allocated (before the model loads where the image headers tell), the error naming them; an allocation that
fails while a figure is drawn says so; a browse page shrinks to the samples it holds, as mmpretrain's
browse_dataset.py lays out only the images it has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_CFG, assert_one_error, manifest

from visctl.shapes import write_scenes


@pytest.fixture(scope="module")
def data_cfg(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("figbudget")
    write_scenes(root / "data" / "train", range(300_000, 300_005), 64, 1)
    cfg = root / "cfg.py"
    cfg.write_text(
        "train_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]\n"
        f"train_dataloader = dict(batch_size=4, dataset=dict(type='CustomDataset', data_root='{root / 'data'}',\n"
        "    data_prefix='train', pipeline=train_pipeline))\n")
    return cfg


@pytest.fixture
def loads(monkeypatch):
    """Count model loads: a figure the options make too large is refused before the model loads."""
    from visctl.library import _common

    calls = []
    real = _common.build_model
    monkeypatch.setattr(_common, "build_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize("command", ["pipeline", "browse"])
def test_rescale_factor_over_the_budget_names_r(invoke, data_cfg, tmp_path, command):
    res = invoke(command, data_cfg, "-m", "original", "-r", "5000", "-n", "1", "-o", tmp_path / "o")
    err, hint = assert_one_error(res, "--rescale-factor 5000", "320000 x 320000", "limit of a figure")
    assert "--rescale-factor" in hint and "out of memory" not in err
    # within the budget the same factor class works
    ok = invoke(command, data_cfg, "-m", "original", "-r", "3", "-n", "1", "-o", tmp_path / "ok")
    assert ok.exit_code == 0, ok.output


def test_rescale_factor_api_raises_argument_error(data_cfg):
    import visctl
    from visctl.errors import ArgumentError

    for max_pixels in (None, 10_000_000):
        with pytest.raises(ArgumentError, match="rescale_factor=") as info:
            visctl.pipeline(str(data_cfg), mode="original", rescale_factor=1e6, number=1,
                            options=visctl.RunOptions(max_pixels=max_pixels))
        assert "rescale_factor=" in info.value.hint


def test_adaptive_edges_over_the_budget(invoke, data_cfg, tmp_path):
    res = invoke("pipeline", data_cfg, "-m", "concat", "--adaptive", "--min-edge-length", "40000",
                 "--max-edge-length", "40000", "-n", "1", "-o", tmp_path / "o")
    assert_one_error(res, "--max-edge-length 40000")


def test_featmap_topk_and_resize_shape_refused_before_drawing(invoke, image_file, tmp_path, monkeypatch):
    from visctl import render

    drawn = []
    real = render.caption
    monkeypatch.setattr(render, "caption", lambda *a, **k: drawn.append(1) or real(*a, **k))
    res = invoke("featmap", image_file, DEMO_CFG, "--channel-reduction", "none", "--topk", "64",
                 "--resize-shape", "8192", "8192", "-o", tmp_path / "o")
    err, hint = assert_one_error(res, "--resize-shape 8192 8192", "--topk 64", "limit of a figure")
    assert not drawn  # no panel was made
    assert "--topk" in hint


def test_featmap_arrangement_columns_refused_before_the_model(invoke, image_file, tmp_path, loads):
    res = invoke("featmap", image_file, DEMO_CFG, "--channel-reduction", "none", "--topk", "4", "--arrangement",
                 "1", "1000", "--panel-size", "2000", "-o", tmp_path / "o")
    assert_one_error(res, "--arrangement 1 1000", "--panel-size 2000")
    assert not loads


@pytest.mark.parametrize("extra", [["-m", "all", "--topk", "2", "--panel-size", "8192"],
                                   ["-c", "0", "-c", "1", "-c", "2", "-m", "gradcam,layercam,xgradcam,eigencam,hirescam,"
                                    "gradcam++", "--panel-size", "8192"]])
def test_cam_panel_size_refused_before_the_model(invoke, image_file, tmp_path, loads, extra):
    res = invoke("cam", image_file, DEMO_CFG, *extra, "-o", tmp_path / "o")
    assert_one_error(res, "--panel-size", "limit of a figure")
    assert not loads


def test_cam_api_panel_size(image_file):
    import visctl
    from visctl.errors import ArgumentError

    with pytest.raises(ArgumentError, match="panel_size="):
        visctl.cam(image_file, str(DEMO_CFG), method="all", topk=2, panel_size=8192)


def test_out_of_memory_while_drawing_names_the_figure():
    from visctl import render
    from visctl.errors import out_of_memory

    class Failing(np.ndarray):
        pass

    def grid_fails():
        import numpy

        real = numpy.full
        numpy.full = lambda *a, **k: (_ for _ in ()).throw(MemoryError())
        try:
            render.grid([np.zeros((4, 4, 3), np.uint8)])
        finally:
            numpy.full = real

    with pytest.raises(MemoryError) as info:
        grid_fails()
    err = out_of_memory(info.value)
    assert err is not None and "figure" in err.message
    assert "--panel-size" in err.hint and "test pipeline" not in err.hint
    # an allocation that is not a figure's: the input side, as before
    plain = out_of_memory(MemoryError())
    assert plain is not None and "--panel-size" in plain.hint and "pipeline" in plain.hint
    assert "test pipeline" in out_of_memory(MemoryError(), "input").hint


def test_browse_page_shrinks_to_its_samples(invoke, data_cfg, tmp_path):
    import cv2

    out = tmp_path / "o"
    res = invoke("browse", data_cfg, "--rows", "1000", "--cols", "1000", "-o", out)
    assert res.exit_code == 0, res.output
    pages = [o["path"] for o in manifest(out)["runs"][-1]["outputs"] if o["path"].endswith(".png")]
    assert len(pages) == 1
    page = cv2.imread(str(out / pages[0]))
    # 5 samples of 64 px (fitted to 160) in one row of 5 cells, no empty column: as mmpretrain lays out its images
    assert page.shape[1] == 5 * 160 + 4 * 6, page.shape
    # 3 columns asked: 2 rows (3 + 2 samples), 3 columns
    out2 = tmp_path / "o2"
    assert invoke("browse", data_cfg, "--rows", "1000", "--cols", "3", "-o", out2).exit_code == 0
    page2 = cv2.imread(str(next(out2.glob("browse_*.png"))))
    assert page2.shape[1] == 3 * 160 + 2 * 6



def test_a_small_max_pixels_bounds_the_images_not_their_figures(invoke, image_file, tmp_path):
    """An 80 x 80 image within --max-pixels 6400 makes a figure of 160 px panels: it is drawn (the budget bounds
    images read and model inputs; a figure of several panels of such an image is larger by nature)."""
    res = invoke("cam", image_file, DEMO_CFG, "-m", "gradcam,layercam", "--max-pixels", "6400", "-o", tmp_path / "o")
    assert res.exit_code == 0, res.output
