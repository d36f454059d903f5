"""Masks and regions as given (issue 24): a mask image lies on its image as both are displayed (EXIF
orientation), alpha counts, an empty or misfitting region is a failed input said as what it is, region
conflicts are refused before the model loads, and recon's mask file is recorded as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_one_error, manifest
from PIL import Image

SEG_CFG = ROOT / "examples" / "demo_segmenter" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"


def _save(arr: np.ndarray, path: Path, orientation: int = 1, mode: str | None = None) -> Path:
    im = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    ex = im.getexif()
    ex[0x0112] = orientation
    kw = {"lossless": True} if path.suffix == ".webp" else {"quality": 100} if path.suffix == ".jpg" else {}
    im.save(path, exif=ex, **kw)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(0)
    out = {"img": d / "img.png", "row": d / "row.png"}
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype("uint8")).save(out["img"])
    Image.fromarray((rng.random((1, 80, 3)) * 255).astype("uint8")).save(out["row"])
    m = np.zeros((60, 80), np.uint8)
    m[5:30, 5:30] = 255
    np.save(d / "zero.npy", np.zeros((60, 80), np.uint8))
    np.save(d / "ones.npy", np.ones((60, 80), np.uint8))
    out["zero"], out["ones"] = d / "zero.npy", d / "ones.npy"
    # colour 0, alpha inside: the region is where alpha is nonzero
    out["alpha"] = _save(np.dstack([m * 0, m * 0, m * 0, m]), d / "alpha.png")
    out["alpha_zero"] = _save(np.dstack([m, m, m, m * 0]), d / "alpha_zero.png")
    # displayed 80 wide and 60 high: stored 60 x 80 turned by EXIF 6 (90 degrees clockwise)
    out["exif_img"] = _save(np.rot90((rng.random((60, 80, 3)) * 255).astype("uint8"), 1).copy(), d / "e.jpg", 6)
    out["exif_mask"] = _save(np.rot90(m, 1).copy(), d / "m.jpg", 6)
    return out


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
@pytest.mark.parametrize("orientation", [3, 6, 7, 8])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_a_mask_is_oriented_as_its_image_is_read(tmp_path, suffix, orientation, mode):
    """read_mask applies the EXIF orientation exactly as read_image does (it ignored it: a mask of a phone photo
    lay turned on it, or its size was refused)."""
    from visctl.images import read_image, read_mask

    if suffix == ".jpg" and mode == "RGBA":
        pytest.skip("no alpha in JPEG")
    m = np.zeros((12, 16), np.uint8)
    m[1:4, 2:9] = 255
    m[8:11, 12:15] = 255
    stored = {"L": m, "RGB": np.dstack([m, m, m]), "RGBA": np.dstack([m, m, m, m])}[mode]
    for path in (_save(stored, tmp_path / f"m{suffix}", orientation), _save(stored, tmp_path / "m.tiff", orientation)):
        # TIFF too: OpenCV's TIFF reader orients even the samples read unchanged, and must not be turned twice
        image = read_image(path)[..., 0] > 127
        mask = read_mask(path) > 127
        assert mask.shape == image.shape and np.array_equal(mask, image), path
        assert mask.shape == ((16, 12) if orientation in (6, 7, 8) else (12, 16))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_mask_with_alpha_is_inside_where_alpha_is_nonzero(tmp_path, mode):
    from visctl.images import read_mask

    m = np.zeros((12, 16), np.uint8)
    m[2:5, 3:9] = 200
    colour = np.full_like(m, 0)
    arr = np.dstack([colour, colour, colour, m]) if mode == "RGBA" else np.dstack([np.full_like(m, 255), m])
    got = read_mask(_save(arr, tmp_path / "a.png", mode=mode if mode == "LA" else None))
    assert np.array_equal(got != 0, m != 0)


def test_recon_mask_file_is_oriented(tmp_path):
    from visctl import masked

    grid = np.zeros((4, 6), np.uint8)
    grid[0, :2] = 1
    stored = np.rot90(grid * 255, -1).copy()  # displayed as `grid` under EXIF 8 (90 degrees counter-clockwise)
    got = masked.mask_from_file(_save(stored, tmp_path / "g.png", 8), (4, 6)).numpy().reshape(4, 6)
    assert np.array_equal(got, grid.astype(bool))


def test_exif_mask_on_exif_image_lies_where_displayed(invoke, files, tmp_path):
    result = invoke("cam", files["exif_img"], SEG_CFG, "-c", "1", "--target-mask", files["exif_mask"],
                    "-o", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    assert not manifest(tmp_path).get("failures")


@pytest.mark.parametrize("mask", ["zero", "alpha_zero"])
def test_an_empty_target_mask_is_a_failed_input_said_as_empty(invoke, files, tmp_path, mask):
    result = invoke("cam", files["img"], SEG_CFG, "-c", "circle", "--target-mask", files[mask], "-o", tmp_path)
    assert result.exit_code == 1, result.output
    assert "is empty" in result.stderr and "no pixel predicted" not in result.stderr, result.stderr
    man = manifest(tmp_path)
    assert [f["path"] for f in man["failures"]] == [str(files["img"])] and "is empty" in man["failures"][0]["error"]


def test_an_alpha_mask_gives_its_region(invoke, files, tmp_path):
    result = invoke("cam", files["img"], SEG_CFG, "-c", "1", "--target-mask", files["alpha"], "-o", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    assert not manifest(tmp_path).get("failures") and manifest(tmp_path)["outputs"]


def test_a_box_outside_the_image_is_a_failed_input(invoke, files, tmp_path):
    result = invoke("cam", files["img"], SEG_CFG, "-c", "1", "--target-box", "200,200,300,300", "-o", tmp_path)
    assert result.exit_code == 1, result.output
    assert "lies outside the 80x60 image" in result.stderr
    assert [f["path"] for f in manifest(tmp_path)["failures"]] == [str(files["img"])]


def test_a_mask_of_another_size_fails_that_image_only(invoke, files, tmp_path):
    result = invoke("cam", files["img"], files["row"], SEG_CFG, "-c", "1", "--target-mask", files["ones"],
                    "-o", tmp_path)
    assert result.exit_code == 1, result.output
    man = manifest(tmp_path)
    assert [f["path"] for f in man["failures"]] == [str(files["row"])]
    assert "the image is 80x1" in man["failures"][0]["error"]
    assert any(str(files["img"]) == o.get("input") for o in man["outputs"])


@pytest.mark.parametrize("args, needle", [
    (["-c", "1", "--target-box", "1,1,20,20", "--target-mask", "ones"], "both give the region"),
    (["--target-box", "1,1,20,20"], "no class for it"),
    (["--target-mask", "ones"], "no class for it"),
])
def test_region_conflicts_are_refused_before_the_model_loads(invoke, files, tmp_path, monkeypatch, args, needle):
    import visctl.commands.cam as command
    import visctl.library.cam as library

    def never(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(command, "open_model", never)
    monkeypatch.setattr(library, "open_model", never)
    args = [str(files["ones"]) if a == "ones" else a for a in args]
    assert_one_error(invoke("cam", files["img"], SEG_CFG, *args, "-o", tmp_path), needle)
    from visctl.errors import ArgumentError

    with pytest.raises(ArgumentError, match=needle):
        kw = dict(target_box="1,1,20,20" if "--target-box" in args else None,
                  target_mask=files["ones"] if "--target-mask" in args else None,
                  target_category=1 if "-c" in args else None)
        library.cam(files["img"], str(SEG_CFG), **kw)


def test_recon_mask_file_masking_nothing_has_no_mse(invoke, files, tmp_path):
    """The demo MAE's 8 x 8 patch grid: a mask of no patch has no masked-patch MSE (it was 0.0000), and the
    recorded mask ratio is the file's (it was the default 0.75 whatever the file)."""
    np.save(tmp_path / "none.npy", np.zeros((8, 8), np.uint8))
    np.save(tmp_path / "all.npy", np.ones((8, 8), np.uint8))
    quarter = np.zeros((8, 8), np.uint8)
    quarter[:4, :4] = 1
    np.save(tmp_path / "quarter.npy", quarter)
    result = invoke("recon", files["img"], MAE_CFG, "--mask-file", tmp_path / "none.npy", "-o", tmp_path / "z", "-q")
    assert result.exit_code == 0, result.output
    man = manifest(tmp_path / "z")
    assert man["params"]["mask_ratio"] == 0.0
    entry = man["inputs"][0]
    assert entry["masked_patch_mse"] is None and entry["mean_fill_mse"] is None and entry["masked_share"] == 0.0
    captions = [o.get("caption", "") for o in man["outputs"]]
    assert any("no patch masked" in c for c in captions) and not any("0.0000" in c for c in captions)
    for name, share in (("all", 1.0), ("quarter", 0.25)):
        result = invoke("recon", files["img"], MAE_CFG, "--mask-file", tmp_path / f"{name}.npy", "-o", tmp_path / name,
                        "-q")
        assert result.exit_code == 0, result.output
        man = manifest(tmp_path / name)
        assert man["params"]["mask_ratio"] == share and man["inputs"][0]["masked_share"] == share
        assert man["inputs"][0]["masked_patch_mse"] is not None
