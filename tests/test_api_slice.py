"""visctl.slice: the library call gives the CLI's boxes, results.json and files, from any image form."""

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
from visctl import detection
from visctl.images import read_image
from visctl.output.manifest import to_json
from visctl.shapes import make_scene

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
CPU = visctl.RunOptions(device="cpu")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    import cv2

    scene = make_scene(7, 384, n_objects=10, min_side=12, max_side=24)
    path = tmp_path_factory.mktemp("big") / "big.png"
    cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return path, scene


def test_boxes_equal_the_cli_results_and_save_writes_the_cli_files(invoke, big, tmp_path):
    path, scene = big
    cli = tmp_path / "cli"
    run = invoke("slice", path, DET_CFG, "--patch-size", "128", "--debug", "--save-patch", "--max-side", "300",
                 "--device", "cpu", "-o", cli)
    assert run.exit_code == 0, run.output
    res = visctl.slice(path, DET_CFG, patch_size=128, debug=True, save_patch=True, max_side=300,
                              options=CPU)
    assert (cli / "results.json").read_text() == to_json(list(res.results), indent=1)  # frozen: tuples, proxies
    img = res.images[0]
    assert img.size == (384, 384) and len(img.tiles) == len(detection.tiles(384, 384, 128, 0.25))
    assert img.boxes.dtype == np.float32 and img.boxes.shape == (len(res.results), 4)
    for box, rec in zip(img.boxes, res.results):  # original pixels: COCO's x, y, w, h of the same box
        x0, y0, x1, y1 = (float(v) for v in box)
        assert rec["bbox"] == (round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2))
    # sliced boxes find the small objects of the original image
    assert detection.recall([detection.Detections(img.boxes.copy(), img.scores.copy(), img.labels.copy())],
                            [(np.array(scene.boxes, np.float32), np.array(scene.labels))]) >= 0.8
    names = [f.name for f in res.figures()]
    assert names[:2] == ["big_slice.png", "big_slice_debug.png"] and len(names) == 2 + len(img.tiles)
    for fig in res.figures()[:2]:  # drawn at --max-side, pixel for pixel as the CLI
        assert max(fig.image.shape[:2]) == 300
        np.testing.assert_array_equal(read_image(cli / fig.name), fig.image)
    saved = res.save(tmp_path / "lib").parent
    assert [o["path"] for o in manifest(saved)["outputs"]] == [o["path"] for o in manifest(cli)["outputs"]]
    assert manifest(saved)["inputs"] == manifest(cli)["inputs"]
    assert (saved / "results.json").read_text() == (cli / "results.json").read_text()


def test_numpy_pil_path_and_list_and_an_nn_module(big):
    from mmengine.config import Config
    from PIL import Image

    from visctl.checkpoints import load_model

    path, _ = big
    pixels = read_image(path)
    ref = visctl.slice(path, DET_CFG, patch_size=128, options=CPU).images[0]
    for res in (visctl.slice(pixels, DET_CFG, patch_size=128, options=CPU),
                visctl.slice(Image.fromarray(pixels), DET_CFG, patch_size=128, options=CPU)):
        assert res.images[0].input == "image0.png" and res.results[0]["file_name"] == "image0.png"
        np.testing.assert_array_equal(res.images[0].boxes, ref.boxes)
    by_settings = visctl.slice(pixels, DET_CFG, None, visctl.SliceOptions(patch_size=64, score_thr=0.5), patch_size=128,
                               score_thr=0.3, options=CPU)
    np.testing.assert_array_equal(by_settings.images[0].boxes, ref.boxes)
    with pytest.raises(visctl.errors.ArgumentError, match="merge_metric='giou'"):  # the field, before loading
        visctl.slice(pixels, "no-such-config.py", merge_metric="giou")
    both = visctl.slice([str(path), pixels], DET_CFG, patch_size=128, options=CPU)
    assert [i.input for i in both.images] == [str(path), "image0.png"]
    assert {r["image_id"] for r in both.results} == {0, 1}
    module, _ = load_model(Config.fromfile(str(DET_CFG)), None)
    opts = CPU.replace(cfg_options=["visctl.task=detection", "data_preprocessor.mean=[127.5,127.5,127.5]",
                                    "data_preprocessor.std=[64.0,64.0,64.0]", "data_preprocessor.to_rgb=True"])
    by_module = visctl.slice(pixels, module, patch_size=128, options=opts).images[0]
    np.testing.assert_allclose(by_module.boxes, ref.boxes, atol=1e-3)


def test_repr_frozen_and_quiet(big, tmp_path, monkeypatch, capfd):
    import cv2

    path, _ = big
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(tmp_path.rglob("*"))
    res = visctl.slice(read_image(path), DET_CFG, patch_size=128, debug=True, options=CPU)
    assert capfd.readouterr().out == "" and sorted(tmp_path.rglob("*")) == before  # no stdout, no file
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(res._repr_png_(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1],
                                  res.figures()[0].image)
    page = res._repr_html_()
    assert all(html.escape(f.caption) in page for f in res.figures())
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.results = ()  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.images[0].boxes[0, 0] = 0.0
    assert "SliceResult(" in repr(res) and "boxes_before_merge=" in repr(res)


def test_the_example_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "api" / "slice.py"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tiles" in done.stdout
    assert [o["path"] for o in manifest(tmp_path)["outputs"]] == ["image0_slice.png", "image0_slice_debug.png",
                                                                  "results.json"]
