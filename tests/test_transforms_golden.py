"""visctl's OpenMMLab transforms against mmpretrain 1.2.0 / mmcv(-lite) 2.2.0 themselves.

tests/golden/mm_transforms.npz was made by tests/golden/make_golden.py running the reference transforms
(mmcv-lite 2.2.0, mmpretrain 1.2.0, mmengine-lite 0.10.7, opencv-python-headless 5.0.0.93, pillow 13.0.0;
the file records them) on generated images; random cases seeded ``np.random.seed(seed)`` there, a
``RandomState(seed)`` here, so the draws are the same. The reference sees BGR, visctl RGB.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from visctl import transforms

GOLDEN = np.load(Path(__file__).parent / "golden" / "mm_transforms.npz")
META = json.loads(str(GOLDEN["meta"]))


def _label(n: int) -> str:
    case = META["cases"][n]
    return f"{n}-" + "+".join(s["type"] for s in case["pipeline"])


@pytest.mark.parametrize("n", range(len(META["cases"])), ids=_label)
def test_pipeline_equals_mmpretrain_on_the_same_image(n):
    case = META["cases"][n]
    img = GOLDEN[f"img{case['img']}"]
    want = GOLDEN[f"out{n}"]
    rng = np.random.RandomState(case["seed"]) if "seed" in case else None
    state = transforms.run_pipeline(img, case["pipeline"], rng)
    assert state.img.shape == want.shape, (case["pipeline"], META["versions"])
    diff = np.abs(state.img.astype(int) - want.astype(int)).max()
    assert diff <= 1, (case["pipeline"], diff, META["versions"])


def test_resize_edge_truncates_the_other_edge_as_mmpretrain_does():
    # 128 * 179 / 120 = 190.93: mmpretrain's int() gives 190 where rounding would give 191
    img = GOLDEN["img3"]
    assert img.shape[:2] == (120, 179)
    state = transforms.run_pipeline(img, [dict(type="ResizeEdge", scale=128)])
    assert state.img.shape[:2] == (128, 190)


def test_pillow_bicubic_differs_from_cv2_bilinear_so_the_backend_is_honoured():
    img = GOLDEN["img3"]
    cv = transforms.run_pipeline(img, [dict(type="ResizeEdge", scale=128)]).img
    pil = transforms.run_pipeline(img, [dict(type="ResizeEdge", scale=128, backend="pillow",
                                             interpolation="bicubic")]).img
    assert np.abs(cv.astype(int) - pil.astype(int)).max() > 10


# cases without resampling (the point test in test_transforms.py covers resizes) or mirrored padding (which
# copies real pixels, so nothing tells them apart)
GEOMETRY = [i for i, c in enumerate(META["cases"])
            if not any(s["type"] in ("Resize", "ResizeEdge", "RandomResizedCrop", "EfficientNetCenterCrop")
                       or s.get("padding_mode", "constant") != "constant" for s in c["pipeline"])]


@pytest.mark.parametrize("n", GEOMETRY, ids=_label)
def test_golden_geometry_maps_each_output_pixel_back_to_its_source(n):
    """The affine an mm pipeline records sends every output pixel onto the source pixel it came from."""
    case = META["cases"][n]
    h, w = GOLDEN[f"img{case['img']}"].shape[:2]
    pipe = case["pipeline"]
    # an image whose pixels name their coordinates
    yy, xx = np.mgrid[0:h, 0:w]
    coded = np.stack([xx, yy, np.full_like(xx, 255)], -1).astype(np.uint8)
    rng = np.random.RandomState(case["seed"]) if "seed" in case else None
    state = transforms.run_pipeline(coded, pipe, rng)
    (sx, sy), (tx, ty) = state.scale, state.shift
    oy, ox = np.mgrid[0:state.img.shape[0], 0:state.img.shape[1]]
    src_x = np.floor(((ox + 0.5) - tx) / sx).astype(int)
    src_y = np.floor(((oy + 0.5) - ty) / sy).astype(int)
    real = state.img[..., 2] == 255  # padding has another value in channel 2
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    assert (real <= inside).all()
    assert (state.img[..., 0][real] == src_x[real]).all() and (state.img[..., 1][real] == src_y[real]).all()
