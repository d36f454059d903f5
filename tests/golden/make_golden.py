"""Make tests/golden/mm_transforms.npz: mmpretrain's and mmcv's own transforms run on generated images.

The test (tests/test_transforms_golden.py) runs visctl's pipelines on the same inputs and compares. CI cannot
install the reference (mmcv's wheels, mmpretrain's dependencies), so it runs here once:

    pip install --no-deps --target /tmp/mmref mmcv-lite==2.2.0 mmpretrain==1.2.0 model-index ordered-set mat4py
    PYTHONPATH=/tmp/mmref python tests/golden/make_golden.py

(mmengine or mmengine-lite, cv2, PIL and numpy come from the environment; on Python >= 3.10 a one-line
``importlib_metadata`` module re-exporting ``importlib.metadata`` may be needed.) The versions used are
written into the file and printed by the test on failure.

Images go through the reference in BGR, as ``LoadImageFromFile`` gives them to mmpretrain; visctl works in
RGB, so the test flips channels (this matters for per-channel ``pad_val``).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("mm_transforms.npz")

# (h, w): odd sizes, a square, one where mmcv truncates 381.87 -> 381 where rounding gives 382
SIZES = [(37, 53), (61, 45), (50, 50), (120, 179)]

CASES: list[dict] = [
    # ImageNet test pipelines: ResizeEdge + CenterCrop, cv2 bilinear (ResNet) and pillow bicubic (Swin, ConvNeXt)
    dict(img=3, pipeline=[dict(type="ResizeEdge", scale=256, edge="short"), dict(type="CenterCrop", crop_size=224)]),
    dict(img=3, pipeline=[dict(type="ResizeEdge", scale=128, edge="short", backend="pillow",
                               interpolation="bicubic"), dict(type="CenterCrop", crop_size=112)]),
    dict(img=3, pipeline=[dict(type="ResizeEdge", scale=128, edge="short")]),
    dict(img=0, pipeline=[dict(type="ResizeEdge", scale=48, edge="short"), dict(type="CenterCrop", crop_size=40)]),
    dict(img=1, pipeline=[dict(type="ResizeEdge", scale=48, edge="short", backend="pillow",
                               interpolation="bicubic"), dict(type="CenterCrop", crop_size=40)]),
    dict(img=0, pipeline=[dict(type="ResizeEdge", scale=30, edge="long", interpolation="area")]),
    dict(img=1, pipeline=[dict(type="ResizeEdge", scale=41, edge="width", interpolation="bicubic")]),
    dict(img=0, pipeline=[dict(type="ResizeEdge", scale=70, edge="height", interpolation="lanczos")]),
    dict(img=2, pipeline=[dict(type="ResizeEdge", scale=33, backend="pillow", interpolation="bilinear")]),
    # Resize: scale tuples (w, h), keep_ratio, scale_factor, backends
    dict(img=0, pipeline=[dict(type="Resize", scale=(40, 30))]),
    dict(img=1, pipeline=[dict(type="Resize", scale=32, interpolation="nearest")]),
    dict(img=0, pipeline=[dict(type="Resize", scale=(64, 36), keep_ratio=True)]),
    dict(img=1, pipeline=[dict(type="Resize", scale=(50, 50), keep_ratio=True, backend="pillow",
                               interpolation="bicubic")]),
    dict(img=3, pipeline=[dict(type="Resize", scale=(80, 48), keep_ratio=True, interpolation="area")]),
    dict(img=0, pipeline=[dict(type="Resize", scale_factor=0.7)]),
    dict(img=1, pipeline=[dict(type="Resize", scale_factor=(1.3, 0.6), keep_ratio=True)]),
    # CenterCrop: (w, h), larger than the image (clipped), auto_pad
    dict(img=0, pipeline=[dict(type="CenterCrop", crop_size=(31, 20))]),
    dict(img=1, pipeline=[dict(type="CenterCrop", crop_size=(60, 30))]),
    dict(img=0, pipeline=[dict(type="CenterCrop", crop_size=(60, 44), auto_pad=True,
                               pad_cfg=dict(type="Pad", pad_val=dict(img=(10, 20, 30))))]),
    dict(img=2, pipeline=[dict(type="EfficientNetCenterCrop", crop_size=40, crop_padding=8)]),
    dict(img=1, pipeline=[dict(type="EfficientNetCenterCrop", crop_size=32, backend="pillow")]),
    # Pad: size (w, h), size_divisor, pad_to_square, modes, per-channel values
    dict(img=0, pipeline=[dict(type="Pad", size=(60, 40), pad_val=dict(img=(1, 2, 3)))]),
    dict(img=1, pipeline=[dict(type="Pad", size_divisor=16, pad_val=7)]),
    dict(img=0, pipeline=[dict(type="Pad", pad_to_square=True, padding_mode="reflect")]),
    dict(img=1, pipeline=[dict(type="Pad", pad_to_square=True, size_divisor=8, padding_mode="edge")]),
    # random transforms: the reference draws from np.random seeded with `seed`; visctl from RandomState(seed)
    dict(img=3, seed=0, pipeline=[dict(type="RandomResizedCrop", scale=64)]),
    dict(img=0, seed=1, pipeline=[dict(type="RandomResizedCrop", scale=(36, 44), crop_ratio_range=(0.3, 0.9),
                                       aspect_ratio_range=(0.5, 2.0), backend="pillow", interpolation="bicubic")]),
    dict(img=1, seed=2, pipeline=[dict(type="RandomResizedCrop", scale=24, crop_ratio_range=(0.95, 1.0),
                                       aspect_ratio_range=(3.0, 4.0), max_attempts=3)]),
    dict(img=0, seed=3, pipeline=[dict(type="RandomResizedCrop", scale=24, max_attempts=0)]),
    dict(img=1, seed=4, pipeline=[dict(type="RandomCrop", crop_size=(30, 20), padding=4, pad_val=(5, 6, 7))]),
    dict(img=0, seed=5, pipeline=[dict(type="RandomCrop", crop_size=48, pad_if_needed=True,
                                       padding_mode="symmetric")]),
    *[dict(img=0, seed=s, pipeline=[dict(type="RandomFlip", prob=[0.3, 0.3, 0.3],
                                         direction=["horizontal", "vertical", "diagonal"])]) for s in range(6, 12)],
    dict(img=1, seed=12, pipeline=[dict(type="RandomFlip", prob=1.0, direction="vertical")]),
    # a whole train-style pipeline
    dict(img=3, seed=13, pipeline=[dict(type="RandomResizedCrop", scale=48, backend="pillow", interpolation="bicubic"),
                                   dict(type="RandomFlip", prob=0.5, direction="horizontal"),
                                   dict(type="Pad", size=(56, 56), pad_val=dict(img=(0, 128, 255)))]),
]


def make_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth RGB pattern with sharp-edged rectangles (interpolation differences show at the edges)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([127 + 120 * np.sin(x / (3 + c) + y / (5 + 2 * c) + c) for c in range(3)], -1)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 4)), int(rng.integers(0, h - 4))
        img[y0:y0 + int(rng.integers(3, h // 2)), x0:x0 + int(rng.integers(3, w // 2))] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    import importlib.metadata as md

    import mmcv
    import mmpretrain  # noqa: F401  (registers mmpretrain's transforms)
    from mmcv.transforms import Compose
    from mmpretrain.registry import TRANSFORMS

    arrays: dict[str, np.ndarray] = {}
    for i, (h, w) in enumerate(SIZES):
        arrays[f"img{i}"] = make_image(h, w, i)
    for n, case in enumerate(CASES):
        steps = copy.deepcopy(case["pipeline"])  # tuples as a Python config has them
        pipe = Compose([TRANSFORMS.build(s) for s in steps])
        if "seed" in case:
            np.random.seed(case["seed"])
        rgb = arrays[f"img{case['img']}"]
        out = pipe({"img": np.ascontiguousarray(rgb[..., ::-1])})["img"]  # the reference sees BGR
        arrays[f"out{n}"] = np.ascontiguousarray(out[..., ::-1])
    versions = {p: md.version(p) for p in ("mmcv-lite", "mmpretrain", "numpy", "pillow")}
    for p in ("mmengine", "mmengine-lite", "opencv-python", "opencv-python-headless"):
        try:
            versions[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    versions["mmcv.__version__"] = mmcv.__version__
    meta = {"cases": CASES, "versions": versions}
    np.savez_compressed(OUT, meta=np.array(json.dumps(meta)), **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB): {len(CASES)} cases, {versions}", file=sys.stderr)


if __name__ == "__main__":
    main()
