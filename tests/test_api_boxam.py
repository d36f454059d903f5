"""visctl.boxam: the library call gives the CLI's boxes, maps and files, from any image form and model form."""

from __future__ import annotations

import dataclasses
import html
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, manifest

import visctl
from visctl.images import read_image
from visctl.shapes import make_scene

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
CPU = visctl.RunOptions(device="cpu")


def _write(folder, seeds):
    import cv2

    folder.mkdir(exist_ok=True)
    paths = []
    for s in seeds:
        scene = make_scene(s, 128, n_objects=1 + s % 5, min_side=10, max_side=36)
        paths.append(folder / f"{s}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return paths


def test_boxes_and_maps_equal_the_cli_and_save_writes_the_cli_files(invoke, tmp_path):
    paths = _write(tmp_path / "imgs", range(200_000, 200_003))
    cli = tmp_path / "cli"
    run = invoke("boxam", *paths, DET_CFG, "--per-box", "--save-raw", "--score-thr", "0.4", "--device", "cpu",
                 "-o", cli)
    assert run.exit_code == 0, run.output
    res = visctl.boxam(paths, DET_CFG, per_box=True, score_thr=0.4, save_raw=True, options=CPU)
    m = manifest(cli)
    arrays = {o["path"]: o for o in m["outputs"] if o["kind"] == "array"}
    assert sum(len(i.maps) for i in res.images) == len(arrays) > 3
    for img, entry in zip(res.images, m["inputs"]):
        assert img.boxes.dtype == np.float32 and img.boxes.shape == (len(img.scores), 4)
        assert img.box_list() == entry["boxes"]  # boxes, labels, scores as the CLI lists them
        assert (img.scores >= 0.4).all() and (np.diff(img.scores) <= 0).all()  # filtered, best first
        for name, fmap, box in zip(img.raw_names, img.maps, img.boxes):
            assert fmap.dtype == np.float32 and fmap.shape == (128, 128)
            np.testing.assert_array_equal(np.load(cli / name), fmap)
            assert arrays[name]["box"] == box.tolist()
        np.testing.assert_array_equal(read_image(cli / img.figure.name), img.figure.image)
    saved = res.save(tmp_path / "lib").parent
    assert [o["path"] for o in manifest(saved)["outputs"]] == [o["path"] for o in m["outputs"]]
    assert manifest(saved)["inputs"] == m["inputs"]
    assert manifest(saved)["params"]["panel_size"] == m["params"]["panel_size"]


def test_numpy_pil_path_and_list_and_an_nn_module(tmp_path):
    from mmengine.config import Config
    from PIL import Image

    from visctl.checkpoints import load_model

    path = _write(tmp_path, [200_002])[0]
    pixels = read_image(path)
    by_path = visctl.boxam(path, DET_CFG, options=CPU)
    assert len(by_path.images[0].boxes) >= 1
    for res in (visctl.boxam(pixels, DET_CFG, options=CPU), visctl.boxam(Image.fromarray(pixels), DET_CFG,
                                                                          options=CPU)):
        assert res.images[0].input == "image0.png"
        np.testing.assert_array_equal(res.images[0].boxes, by_path.images[0].boxes)
        np.testing.assert_array_equal(res.images[0].maps[0], by_path.images[0].maps[0])
    both = visctl.boxam([pixels, str(path)], DET_CFG, options=CPU)
    assert [i.input for i in both.images] == ["image0.png", str(path)]
    # the detector as an nn.Module, told the config's normalisation and task: the same boxes and map
    module, _ = load_model(Config.fromfile(str(DET_CFG)), None)
    opts = CPU.replace(cfg_options=["visctl.task=detection", "data_preprocessor.mean=[127.5,127.5,127.5]",
                                    "data_preprocessor.std=[64.0,64.0,64.0]", "data_preprocessor.to_rgb=True",
                                    "classes=[circle,square,triangle,cross]", "visctl.target_layers=[neck]"])
    by_module = visctl.boxam(pixels, module, options=opts)
    assert by_module.params["config"] == "<nn.Module>"
    np.testing.assert_allclose(by_module.images[0].boxes, by_path.images[0].boxes, atol=1e-3)
    np.testing.assert_allclose(by_module.images[0].maps[0], by_path.images[0].maps[0], atol=1e-4)


def test_repr_frozen_and_quiet(tmp_path, monkeypatch, capfd):
    import cv2

    path = _write(tmp_path / "imgs", [200_001])[0]
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(tmp_path.rglob("*"))
    res = visctl.boxam(path, DET_CFG, options=CPU)
    assert capfd.readouterr().out == "" and sorted(tmp_path.rglob("*")) == before  # no stdout, no file
    first = res.figures()[0]
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(res._repr_png_(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1],
                                  first.image)
    assert html.escape(first.caption) in res._repr_html_()
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.images = ()  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.images[0].boxes[0, 0] = 0.0
    assert "BoxamResult(" in repr(res) and "scores=" in repr(res)


def test_the_example_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "api" / "boxam.py"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "box 0" in done.stdout
    assert any(o["path"].endswith(".png") for o in manifest(tmp_path)["outputs"])


def test_cli_draws_in_the_writers_threads_and_format_jpg_names_and_encodes_the_figures(invoke, tmp_path, monkeypatch):
    """The CLI's figures are drawn off the model's thread (boxam._draw in a visctl-write thread); --format jpg
    writes JPEGs of the same pictures, named .jpg in the files, the manifest and the gallery."""
    import threading

    from visctl.library import boxam as lib
    from visctl.output.writer import encode_image

    paths = _write(tmp_path / "imgs", range(200_004, 200_007))
    drawn_in: list[str] = []
    real = lib._draw
    monkeypatch.setattr(lib, "_draw", lambda *a: drawn_in.append(threading.current_thread().name) or real(*a))
    out = tmp_path / "jpg"
    run = invoke("boxam", *paths, DET_CFG, "--format", "jpg", "--device", "cpu", "--threads", "1", "-o", out)
    assert run.exit_code == 0, run.output
    assert len(drawn_in) == 3 and all(n.startswith("visctl-write") for n in drawn_in), drawn_in
    res = visctl.boxam(paths, DET_CFG, image_format="jpg", options=visctl.RunOptions(device="cpu", threads=1))
    m = manifest(out)
    assert m["params"]["format"] == "jpg"
    images = [o["path"] for o in m["outputs"] if o["kind"] == "image"]
    assert images == [img.figure.name for img in res.images] and all(p.endswith(".jpg") for p in images)
    for img in res.images:
        data = (out / img.figure.name).read_bytes()
        assert data[:3] == b"\xff\xd8\xff"  # a JPEG, of the library's picture (OpenCV's encoder is deterministic)
        assert data == encode_image(img.figure.image, ".jpg")
        assert html.escape(img.figure.name) in (out / "index.html").read_text()
    assert not list(out.glob("*.png"))


def test_topk_minus_one_keeps_every_box_and_zero_is_refused(invoke, tmp_path):
    """mmyolo's ``--topk -1`` (every box over the threshold); 0 or below -1 is one error line."""
    import torch

    from visctl.library.boxam import keep_boxes

    found = [dict(scores=torch.tensor([0.1, 0.9, 0.5]), boxes=torch.zeros(3, 4), labels=torch.zeros(3, dtype=torch.long))]
    assert keep_boxes(found, 0.0, -1)[0]["scores"].tolist() == pytest.approx([0.9, 0.5, 0.1])
    assert keep_boxes(found, 0.2, 1)[0]["scores"].tolist() == pytest.approx([0.9])
    img = tmp_path / "a.png"
    _write_one(img)
    bad = invoke("boxam", img, DET_CFG, "--topk", "0", "-o", tmp_path / "out")
    assert bad.exit_code == 2 and "error: --topk 0" in bad.output and "-1 for all" in bad.output


def _write_one(path):
    import cv2

    cv2.imwrite(str(path), make_scene(7, 96).image[..., ::-1])


def test_no_box_is_said_and_gets_no_map_and_a_nan_map_fails_the_input(invoke, tmp_path, monkeypatch):
    """An image where nothing scores over --score-thr gets its picture with no map and a warning (an all-zero
    map was drawn without a word); a map that is not finite is a failed input (exit 1, in the manifest), not a
    grey picture."""
    import cv2

    from visctl.errors import InputWarning

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((96, 96, 3), 127, np.uint8))
    with pytest.warns(InputWarning, match="no box scores >= 0.99"):
        res = visctl.boxam(blank, DET_CFG, score_thr=0.99, options=visctl.RunOptions(device="cpu", threads=1))
    assert len(res.images[0].boxes) == 0 and res.images[0].maps == ()

    from visctl import cams

    real = cams.CamEngine.__call__

    def nan_maps(self, *args, **kwargs):
        maps, rest = real(self, *args, **kwargs)
        return [np.full_like(m, np.nan) for m in maps], rest

    monkeypatch.setattr(cams.CamEngine, "__call__", nan_maps)
    scene = tmp_path / "scene.png"
    cv2.imwrite(str(scene), make_scene(7, 128, n_objects=3, min_side=14, max_side=36).image[..., ::-1])
    result = invoke("boxam", scene, DET_CFG, "--score-thr", "0.1", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    failed = manifest(tmp_path / "out")["failures"]
    assert len(failed) == 1 and "not finite" in failed[0]["error"]
    assert not list((tmp_path / "out").glob("*_boxam_*.png"))
