"""Pipelines and carrying maps back to the original image."""

from __future__ import annotations

import numpy as np
import pytest

from visctl import transforms
from visctl.errors import ConfigError

PIPES = {
    "resize": [dict(type="Resize", scale=(64, 48))],
    "resize_edge_crop": [dict(type="LoadImageFromFile"), dict(type="ResizeEdge", scale=72, edge="short"),
                         dict(type="CenterCrop", crop_size=64), dict(type="PackInputs")],
    "tv_resize_crop": [dict(type="Resize", size=80), dict(type="CenterCrop", size=[64, 64])],
    "keep_ratio_pad": [dict(type="Resize", scale=(64, 64), keep_ratio=True), dict(type="Pad", size=(64, 64))],
    "flip": [dict(type="Resize", scale=(64, 64)), dict(type="RandomFlip", prob=1.0)],
}


@pytest.mark.parametrize("name", list(PIPES))
def test_a_point_maps_back_to_where_it_came_from(name):
    h, w = 90, 150
    img = np.zeros((h, w, 3), np.uint8)
    px, py = 70, 40  # a bright pixel near the centre survives every crop above
    img[py - 2:py + 3, px - 2:px + 3] = 255
    state = transforms.run_pipeline(img, PIPES[name])
    out = state.img[..., 0].astype(np.float32) / 255
    back = transforms.to_original(out, state, (h, w))
    y, x = np.unravel_index(np.nanargmax(back), back.shape)
    assert abs(x - px) <= 2 and abs(y - py) <= 2, (name, x, y)


def test_cropped_away_regions_are_no_data():
    img = np.full((100, 200, 3), 255, np.uint8)
    state = transforms.run_pipeline(img, [dict(type="CenterCrop", crop_size=(100, 100))])
    back = transforms.to_original(np.ones((10, 10), np.float32), state, (100, 200))
    # NaN, not 0: 0 is a value, and the hottest one when every value is negative
    assert np.isnan(back[:, :40]).all() and np.isnan(back[:, 160:]).all() and back[:, 60:140].min() == 1


def test_step_names_are_recorded_and_torchvision_names_work():
    img = np.zeros((50, 60, 3), np.uint8)
    state = transforms.run_pipeline(img, [dict(type="Resize", size=[32, 32]), dict(type="ColorJitter", brightness=0.1),
                                          dict(type="Resize", size=[16, 16])])
    assert state.steps == ["Resize", "ColorJitter", "Resize"]
    assert state.img.shape == (16, 16, 3)


def test_unknown_transform_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown transform 'Resise'"):
        transforms.run_pipeline(np.zeros((8, 8, 3), np.uint8), [dict(type="Resise", size=4)])


def test_to_tensor_normalises_and_orders_channels():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0] = 255
    state = transforms.run_pipeline(img, [])
    rgb = transforms.to_tensor([state], (0, 0, 0), (255, 255, 255), rgb=True)
    bgr = transforms.to_tensor([state], (0, 0, 0), (255, 255, 255), rgb=False)
    assert rgb[0, 0].mean() == 1 and bgr[0, 2].mean() == 1 and bgr[0, 0].mean() == 0


def test_mmselfsup_random_resized_crop_is_mmpretrains_with_torchvision_names():
    """mmselfsup 1.x's RandomResizedCrop(size, scale=area range, ratio, backend) (its simsiam/mocov2 configs)
    crops exactly as mmpretrain's RandomResizedCrop(scale=size, crop_ratio_range, aspect_ratio_range) with the
    same draws; the torchvision form (no backend) stays torchvision's."""
    img = np.random.default_rng(1).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    a, b = transforms.ImageState(img.copy()), transforms.ImageState(img.copy())
    transforms.apply_step(a, dict(type="RandomResizedCrop", size=32, scale=(0.2, 1.0), ratio=(0.5, 2.0),
                                  backend="pillow"), np.random.default_rng(7))
    transforms.apply_step(b, dict(type="RandomResizedCrop", scale=32, crop_ratio_range=(0.2, 1.0),
                                  aspect_ratio_range=(0.5, 2.0), backend="pillow"), np.random.default_rng(7))
    assert a.img.shape == (32, 32, 3)
    np.testing.assert_array_equal(a.img, b.img)
    c = transforms.ImageState(img.copy())
    transforms.apply_step(c, dict(type="RandomResizedCrop", size=32, scale=(0.2, 1.0)), np.random.default_rng(7))
    assert c.img.shape == (32, 32, 3)
