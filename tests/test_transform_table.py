"""The transform table: every name it maps runs on a generated image and records its step."""

from __future__ import annotations

import numpy as np
import pytest

from visctl import transforms
from visctl.errors import ConfigError
from visctl.shapes import make_scene

H, W = 60, 80  # the generated image, (H, W)

# name -> (parameters, what the step must do to the (60, 80) image)
EXAMPLES: dict[str, tuple[dict, object]] = {
    "Resize": (dict(scale=(40, 30)), (30, 40)),
    "ResizeEdge": (dict(scale=30, edge="short"), (30, 40)),
    "CenterCrop": (dict(crop_size=(50, 20)), (20, 50)),
    "EfficientNetCenterCrop": (dict(crop_size=24), (24, 24)),
    "Pad": (dict(size=(96, 64)), (64, 96)),
    "RandomFlip": (dict(prob=1.0, direction="horizontal"), "hflip"),
    "RandomHorizontalFlip": (dict(p=1.0), "hflip"),
    "RandomVerticalFlip": (dict(p=1.0), "vflip"),
    "RandomResizedCrop": (dict(scale=32), (32, 32)),
    "RandomCrop": (dict(crop_size=(20, 30)), (20, 30)),
    "SimMIMMaskGenerator": (dict(input_size=64, mask_patch_size=16, model_patch_size=8, mask_ratio=0.5), "mask"),
    "BEiTMaskGenerator": (dict(input_size=8, num_masking_patches=20), "mask"),
    "Normalize": (dict(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]), "normalize"),
    "OpenMMLabPipeline": (dict(pipeline=lambda state: None), "unchanged"),  # the package's pipeline (mm env tests)
    **{name: ({}, "unchanged") for name in transforms.FORMAT_STEPS},
}


def test_every_table_entry_has_an_example():
    assert set(EXAMPLES) == set(transforms.TRANSFORMS)


@pytest.mark.parametrize("name", sorted(transforms.TRANSFORMS))
def test_table_entry_runs_and_records_its_step(name):
    img = make_scene(3, size=(H, W)).image
    params, expect = EXAMPLES[name]
    state = transforms.ImageState(img=img.copy())
    transforms.apply_step(state, dict(type=name, **params), np.random.default_rng(0))
    assert state.steps == [name]
    if isinstance(expect, tuple):
        assert state.img.shape == (*expect, 3)
    elif expect == "hflip":
        np.testing.assert_array_equal(state.img, img[:, ::-1])
        assert state.scale == (-1.0, 1.0)
    elif expect == "vflip":
        np.testing.assert_array_equal(state.img, img[::-1])
        assert state.scale == (1.0, -1.0)
    elif expect == "mask":
        assert state.mask is not None and state.mask.dtype == bool and 0 < state.mask.sum() < state.mask.size
        np.testing.assert_array_equal(state.img, img)
    elif expect == "normalize":
        assert state.normalize == ((127.5,) * 3, (63.75,) * 3)  # torchvision's 0-1 values in mmcv's 0-255
    else:
        np.testing.assert_array_equal(state.img, img)
        assert state.scale == (1.0, 1.0) and state.shift == (0.0, 0.0)


@pytest.mark.parametrize("name", ["Resize", "CenterCrop", "RandomCrop", "RandomResizedCrop"])
def test_torchvision_size_argument_runs_torchvisions_transform(name):
    state = transforms.ImageState(img=make_scene(3, size=(H, W)).image)
    transforms.apply_step(state, dict(type=f"torchvision.transforms.v2.{name}", size=(24, 36)), np.random.default_rng(0))
    assert state.steps == [name] and state.img.shape == (24, 36, 3)  # torchvision's size is (h, w)


def test_a_name_outside_the_table_runs_torchvision():
    state = transforms.ImageState(img=make_scene(3, size=(H, W)).image)
    transforms.apply_step(state, dict(type="Grayscale", num_output_channels=3))
    assert "Grayscale" not in transforms.TRANSFORMS and state.steps == ["Grayscale"]
    assert (state.img[..., 0] == state.img[..., 1]).all()


@pytest.mark.parametrize("name", ["Resise", "Transform", "functional"])  # v2 holds these names, but not as transforms
def test_unknown_name_is_one_clear_config_error(name):
    with pytest.raises(ConfigError, match=f"unknown transform '{name}'") as err:
        transforms.run_pipeline(make_scene(3, size=(H, W)).image, [dict(type=name)])
    assert "torchvision.transforms.v2" in (err.value.hint or "")
