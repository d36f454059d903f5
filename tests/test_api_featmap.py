"""visctl.featmap: the library call gives the CLI's maps and files, from any image form and model form."""

from __future__ import annotations

import dataclasses
import html
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import DEMO_CFG, ROOT, manifest

import visctl
from visctl.errors import InputWarning
from visctl.images import read_image

CPU = visctl.RunOptions(device="cpu")


def _outputs(folder):
    return [o["path"] for o in manifest(folder)["outputs"]]


def test_maps_equal_the_cli_npy_and_save_writes_the_cli_files(invoke, held_out, tmp_path):
    paths = list(held_out)[:2]
    cli = tmp_path / "cli"
    run = invoke("featmap", *paths, DEMO_CFG, "--target-layers", "backbone.layer3,backbone.layer4",
                 "--channel-reduction", "none", "--topk", "3", "--normalize", "per-layer", "--save-raw",
                 "--device", "cpu", "-o", cli)
    assert run.exit_code == 0, run.output
    result = visctl.featmap(paths, DEMO_CFG, target_layers=["backbone.layer3", "backbone.layer4"],
                            channel_reduction="none", topk=3, normalize="per-layer", save_raw=True, options=CPU)
    written = {o["path"]: o for o in manifest(cli)["outputs"]}
    arrays = [m for img in result.images for layer in img.layers for m in layer.maps]
    assert len(arrays) == 2 * 2 * 3 == sum(o["kind"] == "array" for o in written.values())
    for m in arrays:
        assert m.array.dtype == np.float32
        np.testing.assert_array_equal(np.load(cli / m.raw_name), m.array)
    for img in result.images:  # the figures are the CLI's pictures, pixel for pixel
        for layer in img.layers:
            np.testing.assert_array_equal(read_image(cli / layer.figure.name), layer.figure.image)
            assert written[layer.figure.name]["scales"] == [m.scale for m in layer.maps]
    saved = result.save(tmp_path / "lib")
    assert _outputs(saved.parent) == _outputs(cli)
    assert manifest(saved.parent)["params"]["panel_size"] == manifest(cli)["params"]["panel_size"]
    assert [i["path"] for i in manifest(saved.parent)["inputs"]] == [str(p) for p in paths]


def test_numpy_pil_path_and_list_give_the_same_maps(image_file):
    from PIL import Image

    pixels = read_image(image_file)
    kw = dict(target_layers=["backbone.layer4"], options=CPU)
    by_path = visctl.featmap(image_file, DEMO_CFG, **kw)
    by_array = visctl.featmap(pixels, DEMO_CFG, **kw)
    by_pil = visctl.featmap(Image.fromarray(pixels), DEMO_CFG, **kw)
    both = visctl.featmap([str(image_file), pixels], DEMO_CFG, **kw)
    ref = by_path.images[0]["backbone.layer4"].map()
    assert ref.shape == pixels.shape[:2]
    for res in (by_array, by_pil):
        assert res.images[0].input == "image0.png"
        np.testing.assert_array_equal(res.images[0]["backbone.layer4"].map(), ref)
    assert [i.input for i in both.images] == [str(image_file), "image0.png"]
    # a batch of two: the same maps up to float32 rounding of a batched convolution
    np.testing.assert_allclose(both.images[1]["backbone.layer4"].map(), ref, atol=1e-5)


def test_an_nn_module_and_a_compared_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    res = visctl.featmap(img, net, target_layers=["1"], options=CPU)
    m = res.images[0]["1"].map()
    assert m.shape == (50, 70) and m.dtype == np.float32 and np.isfinite(m).all()
    assert res.params["config"] == "<nn.Module>"
    # the same module as model B: B == A and |A-B| is zero; another module differs
    with pytest.warns(InputWarning, match="1 map.s. are numerically constant"):  # |A-B| is drawn without colour
        same = visctl.featmap(img, net, target_layers=["1"], compare=net, options=CPU)
    layer = same.images[0]["1"]
    assert [x.kind for x in layer.maps] == ["A", "B", "|A-B|"]
    np.testing.assert_array_equal(layer.map("A"), layer.map("B"))
    assert np.abs(layer.map("|A-B|")).max() == 0
    other = nn.Sequential(*[nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()])
    diff = visctl.featmap(img, net, target_layers=["1"], compare=other, signed=True, options=CPU)
    a, b, d = (diff.images[0]["1"].map(k) for k in ("A", "B", "A-B"))
    assert np.abs(d).max() > 0
    # the maps are the channel mean of each model's feature, so A-B of the maps is the map of A-B
    np.testing.assert_allclose(d, a - b, atol=1e-5)


def test_repr_frozen_and_quiet(image_file, tmp_path, monkeypatch, capfd):
    import cv2

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = sorted(p for p in tmp_path.rglob("*"))
    res = visctl.featmap(image_file, DEMO_CFG, target_layers=["backbone.layer3", "backbone.layer4"], options=CPU)
    out, _ = capfd.readouterr()
    assert out == "" and sorted(p for p in tmp_path.rglob("*")) == before  # no stdout, no file
    png = np.frombuffer(res._repr_png_(), np.uint8)
    first = res.figures()[0]
    np.testing.assert_array_equal(cv2.imdecode(png, cv2.IMREAD_COLOR)[..., ::-1], first.image)
    page = res._repr_html_()
    assert len(res.figures()) == 2 and all(html.escape(f.caption) in page for f in res.figures())
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.images = ()  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.images[0].layers[0].maps[0].array[0, 0] = 1.0  # the maps are read-only too
    assert "FeatmapResult(" in repr(res) and "backbone.layer4" in repr(res)


def test_the_example_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "api" / "featmap.py"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "backbone.layer4" in done.stdout
    assert _outputs(tmp_path) == ["image0_featmap_backbone_layer4_select_max.png"]


def test_format_webp_names_and_encodes_the_figures_as_the_library_draws_them(invoke, tmp_path):
    """featmap --format webp: the figures are WebP files of the library's pictures, named .webp everywhere."""
    import cv2

    from visctl.output.writer import encode_image

    img = tmp_path / "img.png"
    cv2.imwrite(str(img), (np.random.default_rng(3).random((96, 120, 3)) * 255).astype(np.uint8))
    out = tmp_path / "out"
    run = invoke("featmap", img, DEMO_CFG, "--format", "webp", "--device", "cpu", "-o", out)
    assert run.exit_code == 0, run.output
    res = visctl.featmap(img, DEMO_CFG, image_format="webp", options=visctl.RunOptions(device="cpu"))
    m = manifest(out)
    figs = [layer.figure for item in res.images for layer in item.layers]
    assert m["params"]["format"] == "webp"
    assert [o["path"] for o in m["outputs"] if o["kind"] == "image"] == [f.name for f in figs]
    for fig in figs:
        data = (out / fig.name).read_bytes()
        assert fig.name.endswith(".webp") and data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        assert data == encode_image(fig.image, ".webp")  # the library's picture, encoded as WebP
