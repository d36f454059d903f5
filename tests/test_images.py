"""Reading images of every common kind, and finding them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from visctl import images
from visctl.errors import InputError
from visctl.output.writer import input_stems


def test_formats_modes_and_depths(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    bgr = rgb[..., ::-1]
    for suffix in (".jpg", ".png", ".bmp", ".tiff", ".webp"):
        cv2.imwrite(str(tmp_path / f"a{suffix}"), bgr)
        img = images.read_image(tmp_path / f"a{suffix}")
        assert img.shape == (20, 30, 3) and img.dtype == np.uint8
        assert img[..., 0].mean() > 150 and img[..., 2].mean() < 50, suffix
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 9), 77, np.uint8))
    assert images.read_image(tmp_path / "gray.png").shape == (8, 9, 3)
    rgba = np.dstack([bgr, np.full((20, 30), 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert images.read_image(tmp_path / "rgba.png").shape == (20, 30, 3)
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((5, 5), 65535, np.uint16))
    deep = images.read_image(tmp_path / "deep.png")
    assert deep.dtype == np.uint8 and deep.max() == 255


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    arr = np.zeros((10, 40, 3), np.uint8)  # wide
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert images.read_image(tmp_path / "rot.jpg").shape[:2] == (40, 10)


def test_unreadable_and_missing(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot decode"):
        images.read_image(tmp_path / "bad.jpg")
    with pytest.raises(InputError, match="not found"):
        images.gather_images([str(tmp_path / "none.jpg")])


def test_gather_dirs_globs_dedup(tmp_path):
    for rel in ("a/x.png", "a/b/y.JPG", "c/z.png", "a/notes.txt"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    found = images.gather_images([str(tmp_path / "a"), str(tmp_path / "a" / "x.png"), str(tmp_path / "c" / "*.png")])
    assert [p.name for p in found] == ["y.JPG", "x.png", "z.png"]
    with pytest.raises(InputError, match="matches no file"):
        images.gather_images([str(tmp_path / "*.gif")])


def test_output_stems_are_collision_free(tmp_path):
    paths = [tmp_path / "a" / "cat.jpg", tmp_path / "b" / "cat.jpg", tmp_path / "b" / "cat.png"]
    stems = input_stems(paths)
    assert len(set(stems.values())) == 3
    assert stems[paths[0]] == "a__cat"
