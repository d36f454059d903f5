"""``visctl.recon``: the library call behind ``visctl recon`` gives what the CLI writes, and writes nothing."""

from __future__ import annotations

import dataclasses
import html
import runpy
import sys

import cv2
import numpy as np
import pytest
from conftest import ROOT, manifest
from PIL import Image

import visctl
from visctl.shapes import make_scene, write_scenes

MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
MAE_PTH = ROOT / "examples" / "demo_mae" / "mae.pth"


@pytest.fixture
def scenes(tmp_path):
    return [p for p, _ in write_scenes(tmp_path / "in", range(100_000, 100_003), size=64)]


def test_same_arrays_and_files_as_the_cli(invoke, scenes, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stray write would land here
    before = sorted(tmp_path.rglob("*"))
    res = visctl.recon(tmp_path / "in", str(MAE_CFG), seed=0, save_raw=True)
    assert capsys.readouterr().out == ""
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    assert res.kind == "mae" and len(res.images) == 3 and res.ok
    cli = invoke("recon", tmp_path / "in", MAE_CFG, "--seed", "0", "--save-raw", "-o", tmp_path / "cli")
    assert cli.exit_code == 0, cli.output
    m = manifest(tmp_path / "cli")
    for im, entry in zip(res.images, m["inputs"]):
        raw = np.load(tmp_path / "cli" / im.raw_name)
        np.testing.assert_array_equal(raw, im.reconstruction)  # --save-raw == the result's reconstruction
        assert entry == im.input_entry()
        assert im.mask.shape == (8, 8) and im.mask.sum() == 48  # 75 % of the 8 x 8 patches, exactly
        assert im.mse < im.mean_fill_mse  # the trained demo MAE beats filling with the mean colour
        png = cv2.imread(str(tmp_path / "cli" / im.figure.name))[..., ::-1]
        np.testing.assert_array_equal(png, im.figure.image)  # the CLI's figure == the result's
    saved = res.save(tmp_path / "lib")
    s = manifest(tmp_path / "lib")
    assert saved == tmp_path / "lib" / "manifest.json"
    assert [o["path"] for o in s["outputs"]] == [o["path"] for o in m["outputs"]]
    assert s["inputs"] == m["inputs"]
    drop = ("checkpoint", "config", "inputs", "max_pixels")  # the CLI's absolute/relative spellings differ
    assert {k: v for k, v in s["params"].items() if k not in drop} == \
        {k: v for k, v in m["params"].items() if k not in drop}
    for o in m["outputs"]:
        assert (tmp_path / "lib" / o["path"]).read_bytes() == (tmp_path / "cli" / o["path"]).read_bytes()


def test_inputs_numpy_pil_path_list_and_module(tmp_path):
    from visctl import building
    from visctl.session import RunOptions

    img = make_scene(100_010, size=64).image
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img[..., ::-1])
    by_array = visctl.recon(img, str(MAE_CFG))
    by_pil = visctl.recon(Image.fromarray(img), str(MAE_CFG))
    by_path = visctl.recon(path, str(MAE_CFG))
    by_list = visctl.recon([img, path], str(MAE_CFG))
    assert by_array.images[0].path == "image0.png" and by_array.images[0].figure.name == "image0_recon_mae.png"
    assert by_path.images[0].figure.name == "a_recon_mae.png"
    for other in (by_pil, by_path):
        np.testing.assert_array_equal(other.images[0].reconstruction, by_array.images[0].reconstruction)
    assert len(by_list.images) == 2
    np.testing.assert_array_equal(by_list.images[0].mask, by_array.images[0].mask)
    # the nn.Module itself, with the config's input size and normalisation as options
    module = building.build_model(dict(type="visctl.mim_models:mae_vit", img_size=64, patch_size=8, embed_dim=128,
                                     depth=4, num_heads=4, decoder_embed_dim=96, decoder_depth=2,
                                     decoder_num_heads=4, mask_ratio=0.75))
    opts = RunOptions(cfg_options=("visctl.input_size=64", "data_preprocessor.mean=[127.5,127.5,127.5]",
                                   "data_preprocessor.std=[64.0,64.0,64.0]", "data_preprocessor.to_rgb=True"))
    by_module = visctl.recon(img, module, str(MAE_PTH), options=opts)
    np.testing.assert_allclose(by_module.images[0].reconstruction, by_array.images[0].reconstruction, atol=1e-5)
    assert by_module.images[0].mse == pytest.approx(by_array.images[0].mse, abs=1e-6)


def test_masks_follow_seed_and_ratio():
    img = make_scene(100_011, size=64).image
    a = visctl.recon([img, img], str(MAE_CFG), seed=3, mask_ratio=0.5)
    b = visctl.recon([img, img], str(MAE_CFG), seed=3, mask_ratio=0.5)
    assert [im.mask.sum() for im in a.images] == [32, 32]
    np.testing.assert_array_equal(a.images[0].mask, b.images[0].mask)
    assert not np.array_equal(a.images[0].mask, a.images[1].mask)  # image k of a run gets its own mask
    # the options object, or it with fields replaced: the same masks
    c = visctl.recon([img, img], str(MAE_CFG), settings=visctl.ReconOptions(seed=3, mask_ratio=0.9), mask_ratio=0.5)
    np.testing.assert_array_equal(c.images[1].mask, a.images[1].mask)
    # the masked input is grey exactly on the masked patches
    im = a.images[0]
    grey = np.kron(im.mask, np.ones((8, 8), bool))
    assert np.allclose(im.masked[grey], 0.5)
    np.testing.assert_array_equal(im.masked[~grey], im.original[~grey])


@pytest.mark.filterwarnings("ignore:no checkpoint given")
def test_maskfeat_and_a_bad_model(tmp_path):
    import warnings

    from visctl.errors import InputWarning, VisctlError

    cfg = dict(model=dict(type="visctl.mim_models:maskfeat_vit", img_size=64, patch_size=16, embed_dim=64, depth=2,
                          num_heads=4), test_pipeline=[dict(type="Resize", scale=(64, 64))])
    img = make_scene(100_012, size=64).image
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", InputWarning)
        res = visctl.recon(img, cfg, mask_ratio=0.5, target_generator=True)
    assert not [w for w in seen if "does not apply" in str(w.message)]  # target_generator is MaskFeat's
    im = res.images[0]
    assert res.kind == "maskfeat" and im.target is not None and im.mean_fill_mse is None
    assert im.reconstruction.shape == im.target.shape and im.mask.sum() == 8
    assert res.figures()[0].image.shape[1] < visctl.recon(img, cfg, mask_ratio=0.5).figures()[0].image.shape[1]
    with pytest.warns(InputWarning, match="does not apply to MAE"):
        mae = visctl.recon(img, str(MAE_CFG), target_generator=True)
    assert any("does not apply to MAE" in n for n in mae.notes)
    with pytest.raises(VisctlError, match="not a masked-image model"):
        visctl.recon(img, str(ROOT / "examples" / "demo_classifier" / "config.py"))
    with pytest.raises(VisctlError, match="mask_file= and mask_ratio= both choose"):  # the fields, before loading
        visctl.recon(img, "no-such-config.py", mask_file=tmp_path / "m.npy", mask_ratio=0.5)


def test_repr_frozen_and_jupyter():
    img = make_scene(100_013, size=64).image
    res = visctl.recon([img, img], str(MAE_CFG))
    assert repr(res).startswith("ReconResult(kind='mae', images=2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.images = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.images[0].mse = 0.0  # type: ignore[misc]
    png = cv2.imdecode(np.frombuffer(res._repr_png_(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(png, res.figures()[0].image)
    page = res._repr_html_()
    for fig in res.figures():
        assert html.escape(fig.caption) in page


def test_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["recon.py", str(tmp_path / "out")])
    runpy.run_path(str(ROOT / "examples" / "api" / "recon.py"), run_name="__main__")
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert "masked-patch MSE" in capsys.readouterr().out
