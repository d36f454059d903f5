"""``visctl.cam``: the library call returns what ``visctl cam`` writes, accepts what a notebook holds, writes nothing."""

from __future__ import annotations

import dataclasses
import html
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_CFG, ROOT, manifest

import visctl


@pytest.fixture(scope="module")
def two_images(tmp_path_factory) -> Path:
    from visctl.shapes import write_scenes

    folder = tmp_path_factory.mktemp("api_cam")
    write_scenes(folder, range(100_000, 100_002), size=72)
    return folder


def _arrays_by_input(out: Path) -> dict[tuple[str, str], np.ndarray]:
    m = manifest(out)
    return {(o["input"], o["caption"]): np.load(out / o["path"]) for o in m["outputs"] if o["kind"] == "array"}


def _output_names(out: Path) -> list[str]:
    return [o["path"] for o in manifest(out)["outputs"]]


def test_maps_equal_the_clis_save_raw_and_save_writes_the_clis_files(invoke, two_images, tmp_path):
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    run = invoke("cam", two_images, DEMO_CFG, "--method", "gradcam,layercam", "--topk", "2", "--save-raw",
                 "-o", cli_out)
    assert run.exit_code == 0, run.output
    result = visctl.cam(two_images, DEMO_CFG, method="gradcam,layercam", topk=2, save_raw=True)
    assert len(result) == 2 and result.ok and result.methods == ("gradcam", "layercam")
    cli_arrays = _arrays_by_input(cli_out)
    assert len(cli_arrays) == 2 * 2 * 2  # images x methods x classes
    for item in result.items:
        assert len(item.maps) == 4
        for (method, cls), fmap in item.maps.items():
            assert fmap.dtype == np.float32 and fmap.shape == item.size == (72, 72)  # the original's size
            np.testing.assert_array_equal(fmap, cli_arrays[(item.path, f"{method}_c{cls}")])
        assert item.probabilities is not None and item.probabilities.shape == (4,)
        assert abs(float(item.probabilities.sum()) - 1) < 1e-5
        assert int(item.probabilities.argmax()) == next(iter(item.maps))[1]  # the first row is the top-1 class
    manifest_path = result.save(api_out)
    assert manifest_path == api_out / "manifest.json"
    assert sorted(_output_names(api_out)) == sorted(_output_names(cli_out))
    for name in _output_names(cli_out):  # the same pictures and arrays, byte for byte
        assert (api_out / name).read_bytes() == (cli_out / name).read_bytes(), name
    cli_m, api_m = manifest(cli_out), manifest(api_out)
    assert [(i["path"], i["size"], i["targets"]) for i in api_m["inputs"]] == \
        [(i["path"], i["size"], i["targets"]) for i in cli_m["inputs"]]
    for key in ("methods", "target_layers", "topk", "panel_size", "config"):
        assert api_m["params"][key] == cli_m["params"][key], key
    assert (api_out / "index.html").is_file() and api_m["status"] == "ok"


def test_score_ranks_the_methods_first_in_both_galleries(invoke, two_images, tmp_path):
    image = sorted(two_images.rglob("*.png"))[0]
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    run = invoke("cam", image, DEMO_CFG, "--method", "gradcam,layercam", "--score", "-o", cli_out)
    assert run.exit_code == 0, run.output
    result = visctl.cam(image, DEMO_CFG, method="gradcam,layercam", score=True)
    assert [r["method"] for r in result.ranking] == [r["method"] for r in manifest(cli_out)["faithfulness_ranking"]]
    assert set(result[0].scores) == {k for k in manifest(cli_out)["inputs"][0]["scores"]}
    assert result.figures()[0].name == "cam_ranking.png"
    result.save(api_out)
    assert _output_names(api_out) == _output_names(cli_out)
    assert _output_names(api_out)[0] == "cam_ranking.png"


def test_numpy_pil_path_and_list_give_the_same_maps(two_images):
    from PIL import Image

    from visctl.images import read_image

    path = sorted(two_images.rglob("*.png"))[0]
    rgb = read_image(path)
    by_path = visctl.cam(path, DEMO_CFG)
    by_str = visctl.cam(str(path), DEMO_CFG)
    by_array = visctl.cam(rgb, DEMO_CFG)
    by_pil = visctl.cam(Image.fromarray(rgb), DEMO_CFG)
    listed = visctl.cam([rgb, Image.fromarray(rgb[::-1].copy()), path], DEMO_CFG)
    assert by_array[0].path == "image0.png" and by_path[0].path == str(path)
    assert [i.name for i in listed.items] == ["image0.png", "image1.png", path.name]
    key = next(iter(by_path[0].maps))
    for other in (by_str[0], by_array[0], by_pil[0]):  # one image alone: the same forward, the same numbers
        np.testing.assert_array_equal(other.maps[key], by_path[0].maps[key])
    for other in (listed[0], listed[2]):  # in a batch of 3: float sums in another order
        np.testing.assert_allclose(other.maps[key], by_path[0].maps[key], atol=1e-5)
    assert by_array[0].figure is not None and by_array[0].figure.name == "image0_cam_gradcam_backbone_layer4.png"


def test_a_config_dict_and_an_nn_module_work(two_images):
    import torch
    import torchvision
    from mmengine.config import Config

    from visctl.demo_models import shapes_classifier

    path = sorted(two_images.rglob("*.png"))[0]
    by_file = visctl.cam(path, DEMO_CFG)
    by_dict = visctl.cam(path, Config.fromfile(str(DEMO_CFG)).to_dict())
    key = next(iter(by_file[0].maps))
    np.testing.assert_array_equal(by_dict[0].maps[key], by_file[0].maps[key])

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=3)
    found = visctl.cam(path, resnet, method="gradcam", topk=2)
    assert found.target_layers == ("layer4",)
    assert [k[1] for k in found[0].maps] == list(np.argsort(-found[0].probabilities)[:2])
    assert all(m.shape == (72, 72) and m.dtype == np.float32 for m in found[0].maps.values())
    assert found.params["config"] == "<nn.Module>"

    demo = shapes_classifier()  # the demo classifier as a module, its weights from the checkpoint
    module_result = visctl.cam(path, demo, ROOT / "examples" / "demo_classifier" / "classifier.pth",
                               target_layers="backbone.layer4", target_category="3")
    assert list(module_result[0].maps) == [("gradcam", 3)]
    assert module_result[0].maps[("gradcam", 3)].shape == (72, 72)
    assert any("classifier.pth" in n for n in module_result.notes)


def test_a_segmentation_model_gives_a_map_per_class_present(invoke, tmp_path):
    from visctl.shapes import write_scenes

    cfg = ROOT / "examples" / "demo_segmenter" / "config.py"
    if not cfg.is_file():
        pytest.skip("no demo segmenter")
    image = write_scenes(tmp_path / "img", range(100_000, 100_001), size=96)[0][0]
    cli_out = tmp_path / "cli"
    run = invoke("cam", image, cfg, "--save-raw", "-o", cli_out)
    assert run.exit_code == 0, run.output
    result = visctl.cam(image, cfg, save_raw=True)
    assert result.task == "segmentation" and result[0].maps
    arrays = _arrays_by_input(cli_out)
    for (method, cls), fmap in result[0].maps.items():
        np.testing.assert_array_equal(fmap, arrays[(str(image), f"{method}_c{cls}")])
    result.save(tmp_path / "api")
    assert sorted(_output_names(tmp_path / "api")) == sorted(_output_names(cli_out))


def test_result_is_frozen_and_displays(two_images):
    path = sorted(two_images.rglob("*.png"))[0]
    result = visctl.cam(path, DEMO_CFG, method="gradcam,layercam")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.items = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result[0].path = "x"  # type: ignore[misc]
    text = repr(result)
    assert text.startswith("CamResult(") and "gradcam" in text and str(path) in text and len(text) < 1000
    import cv2

    png = result._repr_png_()
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decoded, result.figures()[0].image)
    page = result._repr_html_()
    for fig in result.figures():
        assert html.escape(fig.caption) in page


def test_a_library_call_prints_nothing_and_writes_nothing(two_images, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    path = sorted(two_images.rglob("*.png"))[0]
    before = sorted(Path(two_images).rglob("*"))
    result = visctl.cam(path, DEMO_CFG, method="gradcam,layercam", topk=2, score=True, save_raw=True)
    out, _err = capfd.readouterr()
    assert out == ""
    assert list(tmp_path.iterdir()) == [] and sorted(Path(two_images).rglob("*")) == before
    assert result[0].maps


def test_a_bad_method_is_refused_before_loading(tmp_path):
    from visctl.errors import VisctlError

    with pytest.raises(VisctlError) as err:
        visctl.cam(np.zeros((8, 8, 3), np.uint8), tmp_path / "missing.py", method="nosuchcam")
    assert "nosuchcam" in str(err.value.message)


def test_the_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["cam.py", str(tmp_path)])
    runpy.run_path(str(ROOT / "examples" / "api" / "cam.py"), run_name="__main__")
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert [o["path"] for o in m["outputs"]] == ["image0_cam_gradcam+layercam_backbone_layer4.png"]
    assert "gradcam class" in capsys.readouterr().out
