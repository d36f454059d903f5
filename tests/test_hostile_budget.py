"""The pixel and memory budget (issue 24, items 7 and 8): ``--max-pixels`` bounds every image visctl reads (inputs,
``--target-mask`` and ``--mask-file`` images and arrays) and every image a pipeline makes of them; a model input
the free memory cannot hold is refused in words, the same rule for every model command; an allocation that fails
anyway is a user error; float TIFFs read as the picture they hold."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from conftest import DEMO_CFG, ROOT, manifest

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
SEG_CFG = ROOT / "examples" / "demo_segmenter" / "config.py"


def _png_header(width: int, height: int) -> bytes:
    """A 66-byte PNG whose header claims ``width x height`` (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy file that is only a header claiming ``shape`` of uint8 (a bomb: loading it would allocate it)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, dict(descr="|u1", fortran_order=False, shape=shape))
    return buf.getvalue()


def _picture(h: int = 40, w: int = 50):
    import numpy as np

    # values 40..199: a stretch to the full 0-255 range would give another picture
    return np.random.default_rng(0).integers(40, 200, (h, w, 3)).astype(np.uint8)


# -- float images ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_tiffs_read_as_the_same_picture_as_uint8(tmp_path, channels, scale):
    """A float32 TIFF in 0-1 or 0-255, three channels (OpenCV's) or one (PIL's mode F), reads as the uint8
    image it holds: 0-1 times 255, 0-255 as it is, never stretched over its own range."""
    import cv2
    import numpy as np
    from PIL import Image

    from visctl.images import read_image

    rgb = _picture()
    if channels == 1:
        rgb = rgb[..., [0, 0, 0]]
    floats = rgb.astype(np.float32) * np.float32(scale / 255.0)
    tif = tmp_path / "float.tif"
    if channels == 3:
        cv2.imwrite(str(tif), np.ascontiguousarray(floats[..., ::-1]))
    else:
        Image.fromarray(floats[..., 0], mode="F").save(tif)
    png = tmp_path / "same.png"
    cv2.imwrite(str(png), rgb[..., ::-1])
    got = read_image(tif)
    assert got.dtype == np.uint8 and got.shape == (40, 50, 3)
    assert np.array_equal(got, read_image(png))


def test_a_one_channel_float_tiff_runs_through_a_command(invoke, tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(_picture(64, 64)[..., 0].astype(np.float32) / 255.0, mode="F").save(tmp_path / "gray.tif")
    result = invoke("cam", tmp_path / "gray.tif", DEMO_CFG, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert not manifest(tmp_path / "out")["failures"]


# -- masks obey the pixel budget -------------------------------------------------------------------------------

MASK_LINES = {
    "cam --target-mask": lambda img, mask: ["cam", img, SEG_CFG, "--target-mask", mask, "--target-category", "1"],
    "recon --mask-file": lambda img, mask: ["recon", img, MAE_CFG, "--mask-file", mask],
}


@pytest.mark.parametrize("kind", ["png", "npy"])
@pytest.mark.parametrize("line", sorted(MASK_LINES))
def test_a_bomb_mask_is_refused_by_the_budget(invoke, image_file, tmp_path, line, kind):
    mask = tmp_path / f"bomb.{kind}"
    mask.write_bytes(_png_header(100_000, 100_000) if kind == "png" else _npy_header((100_000, 100_000)))
    result = invoke(*MASK_LINES[line](image_file, mask), "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "100000 x 100000" in result.stderr and "--max-pixels" in result.stderr
    assert result.stderr.count("error:") == 1 and "hint:" in result.stderr


def test_masks_obey_the_run_budget_not_a_default(tmp_path):
    """The run's --max-pixels (not a fixed default) bounds a mask, as it bounds the inputs."""
    import cv2
    import numpy as np

    from visctl import images

    cv2.imwrite(str(tmp_path / "m.png"), np.full((100, 100), 255, np.uint8))
    np.save(tmp_path / "m.npy", np.ones((100, 100), np.uint8))
    for name in ("m.png", "m.npy"):
        assert images.read_mask(tmp_path / name, 10_000).shape == (100, 100)
        with pytest.raises(images.ImageTooLarge, match="100 x 100"):
            images.read_mask(tmp_path / name, 9_999)


# -- what a pipeline makes obeys the budget ---------------------------------------------------------------------

HUGE_STEPS = {  # a config option that makes every model input 20000 x 20000, and the key the hint must name
    "cam": (DEMO_CFG, "test_dataloader.dataset.pipeline.1.scale=(20000, 20000)", "test_dataloader.dataset.pipeline.1"),
    "featmap": (DEMO_CFG, "test_dataloader.dataset.pipeline.1.scale=(20000, 20000)",
                "test_dataloader.dataset.pipeline.1"),
    "recon": (MAE_CFG, "test_pipeline.1.scale=(20000, 20000)", "test_pipeline.1"),
    "boxam": (DET_CFG, "test_pipeline.1.size_divisor=20000", "test_pipeline.1"),
    "slice": (DET_CFG, "test_pipeline.1.size_divisor=20000", "test_pipeline.1"),
}


@pytest.mark.parametrize("command", sorted(HUGE_STEPS))
def test_a_pipeline_step_over_the_budget_is_refused_before_it_allocates(invoke, image_file, tmp_path, command,
                                                                        monkeypatch):
    import cv2

    cfg, option, key = HUGE_STEPS[command]
    made = []
    real_resize, real_pad = cv2.resize, cv2.copyMakeBorder
    monkeypatch.setattr(cv2, "resize", lambda img, size, *a, **k: made.append(size) or real_resize(img, size, *a, **k))
    monkeypatch.setattr(cv2, "copyMakeBorder", lambda img, t, b, left, r, *a, **k: made.append(
        (img.shape[1] + left + r, img.shape[0] + t + b)) or real_pad(img, t, b, left, r, *a, **k))
    # slice's own default budget is 2^30 pixels (it reads huge images to tile them): the default budget here
    extra = ["--patch-size", "64", "--max-pixels", "89478485"] if command == "slice" else []
    result = invoke(command, image_file, cfg, *extra, "--cfg-options", option, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "20000 x 20000" in result.stderr and "--max-pixels" in result.stderr
    assert key in result.stderr.split("hint:")[1]  # the hint names the config key to change
    assert all(w * h <= 89_478_485 for w, h in made), made  # nothing that large was ever allocated


def test_a_raised_budget_lets_the_same_step_run(tmp_path):
    import numpy as np

    from visctl import transforms

    img = np.zeros((10, 10, 3), np.uint8)
    step = [dict(type="Resize", scale=(300, 200))]
    with pytest.raises(transforms.PipelineTooLarge, match="300 x 200"):
        transforms.run_pipeline(img, step, max_pixels=59_999)
    assert transforms.run_pipeline(img, step, max_pixels=60_000).img.shape == (200, 300, 3)
    # a torchvision step, whose size is known only once it has run, obeys it too
    with pytest.raises(transforms.PipelineTooLarge, match="300 x 300"):
        transforms.run_pipeline(img, [dict(type="Resize", size=300)], max_pixels=60_000)


# -- a model input the memory cannot hold -------------------------------------------------------------------------

MEMORY_LINES = {  # command, config, whether its model input grows with the image (no resize in its pipeline)
    "boxam": (DET_CFG, True),
    "featmap": (DET_CFG, True),
    "cam": (DEMO_CFG, False),  # resized to 64 x 64: the same large photo costs it nothing
}


@pytest.mark.parametrize("command", sorted(MEMORY_LINES))
def test_a_model_input_too_large_for_memory_is_skipped_in_words(invoke, image_file, tmp_path, monkeypatch, command):
    """The same rule for every command: a model input whose forward needs more than the free memory is
    skipped and listed (exit 1), the rest finish; a command whose pipeline shrinks the image runs it."""
    import cv2

    from visctl import memory

    cfg, grows = MEMORY_LINES[command]
    folder = tmp_path / "imgs"
    folder.mkdir()
    small = cv2.imread(str(image_file))
    cv2.imwrite(str(folder / "small.png"), small)
    cv2.imwrite(str(folder / "large.png"), cv2.resize(small, (1200, 1200)))
    monkeypatch.setattr(memory, "CHECK_FROM_PIXELS", 0)  # check every input (a 9000 x 9000 one in real life)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 20e6)  # 20 MB free
    result = invoke(command, folder, cfg, "-o", tmp_path / "out")
    assert "Traceback" not in result.output
    m = manifest(tmp_path / "out")
    failed = {Path(f["path"]).name: f["error"] for f in m["failures"]}
    if grows:
        assert result.exit_code == 1, result.output
        assert set(failed) == {"large.png"}, failed
        assert "1200 x 1200" in failed["large.png"] and "GiB is free" in failed["large.png"]
        assert "test pipeline" in failed["large.png"]
    else:
        assert result.exit_code == 0, result.output
        assert not failed
    assert m["outputs"]


def test_the_footprint_scales_with_the_input_or_stays_fixed():
    """A fully convolutional model's activations grow with the pixels; a model that resizes inside does not."""
    import torch
    from torch import nn

    from visctl import memory
    from visctl.demo_models import shapes_detector

    grows = memory.footprint(shapes_detector().eval(), torch.zeros(1, 3, 64, 64), (9000, 9000))
    assert grows is not None and grows.kept_per_pixel > 100 and abs(grows.kept_fixed) < 1e3

    class Shrinks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(nn.functional.interpolate(x, size=(64, 64)))

    fixed = memory.footprint(Shrinks().eval(), torch.zeros(1, 3, 64, 64), (9000, 9000))
    assert fixed is not None and fixed.kept_per_pixel == 0 and fixed.kept_fixed == 8 * 64 * 64 * 4


@pytest.mark.parametrize("command", ["boxam", "featmap", "cam"])
def test_an_allocation_that_fails_anyway_is_a_user_error(invoke, image_file, tmp_path, monkeypatch, command):
    import torch

    def refuse(self, x):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 25600000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(torch.nn.Conv2d, "forward", refuse)
    result = invoke(command, image_file, DEMO_CFG if command == "cam" else DET_CFG, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert "error: out of memory" in result.stderr and "23.8 GiB" in result.stderr and "hint:" in result.stderr
