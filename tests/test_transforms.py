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


@pytest.mark.parametrize("steps", [
    [dict(type="RandomResizedCrop", size=56), dict(type="ColorJitter", brightness=0.4, contrast=0.4, saturation=0.4)],
    [dict(type="RandomResizedCrop", size=(40, 64), scale=(0.2, 1.0), interpolation=3),
     dict(type="ColorJitter", brightness=0.3, hue=0.1)],
    [dict(type="RandomResizedCrop", size=48, antialias=False, interpolation=0), dict(type="RandomGrayscale", p=0.5)],
])
def test_torchvision_steps_built_once_draw_as_torchvisions_own_transforms(steps):
    """Each step's v2 transform is built once and reused (its crop resized from a packed copy of the crop): every
    sample still gets, for several seeds, the pixels of a new torchvision transform called on the CHW tensor under
    the seed drawn from the sample's generator, as each sample got when a transform was built per sample."""
    import torch
    from torchvision.transforms import v2

    img = np.random.default_rng(3).integers(0, 256, (90, 117, 3), dtype=np.uint8)
    for seed in range(6):
        ours = transforms.run_pipeline(img, steps, np.random.default_rng(seed)).img
        draws = np.random.default_rng(seed)
        x = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        for step in steps:
            kwargs = {k: v for k, v in step.items() if k != "type"}
            torch.manual_seed(int(draws.integers(0, 2**31)))
            x = getattr(v2, step["type"])(**kwargs)(x)
        np.testing.assert_array_equal(ours, x.permute(1, 2, 0).numpy(), err_msg=f"seed {seed}")
    for step in steps:  # one object per step config, whichever dict it came from
        cls, kwargs = getattr(v2, step["type"]), {k: v for k, v in step.items() if k != "type"}
        assert transforms._torchvision_transform(cls, step["type"], kwargs) is \
            transforms._torchvision_transform(cls, step["type"], dict(kwargs))


def test_built_transforms_tell_arguments_apart():
    from torchvision.transforms import v2

    built = [transforms._torchvision_transform(v2.RandomGrayscale, "RandomGrayscale", dict(p=p)) for p in (1, 1.0, 0.5)]
    assert len({id(b) for b in built}) == 3 and [b.p for b in built] == [1, 1.0, 0.5]
    resize = [transforms._torchvision_transform(v2.Resize, "Resize", dict(size=s)) for s in ([8, 9], (8, 9), [9, 8])]
    assert len({id(r) for r in resize}) == 3
    # an argument that cannot be a key is built each time, and still works
    cached = len(transforms._BUILT)
    args = dict(mean=np.array([0.5, 0.5, 0.5]), std=[0.2, 0.2, 0.2])  # hashing an ndarray raises TypeError
    odd = transforms._torchvision_transform(v2.Normalize, "Normalize", args)
    assert odd is not transforms._torchvision_transform(v2.Normalize, "Normalize", dict(args))
    assert len(transforms._BUILT) == cached and list(odd.mean) == [0.5, 0.5, 0.5]  # not cached, and it works
    with pytest.raises(ConfigError, match="cannot build transform Resize"):
        transforms._torchvision_transform(v2.Resize, "Resize", dict(size=8, nope=1))


def test_flips_are_numpys_for_every_memory_layout():
    base = np.random.default_rng(0).integers(0, 256, (37, 53, 4), dtype=np.uint8)
    cases = [base, base[..., :3], base[..., :1], base[..., 0], base[3:20, 5:40, :3], base[..., ::-1], base[:, ::-1],
             base[::2, ::3], base.astype(np.float32), base.transpose(1, 0, 2).copy().transpose(1, 0, 2), base[..., :2],
             np.zeros((0, 5, 3), np.uint8)]
    for i, img in enumerate(cases):
        for axis in (0, 1):
            out = transforms._flipped(img, axis)
            ref = np.flip(img, axis)
            assert out.shape == ref.shape and out.dtype == ref.dtype, (i, axis)
            np.testing.assert_array_equal(out, ref, err_msg=f"case {i} axis {axis}")
            assert out.flags.writeable and not np.shares_memory(out, img)
    state = transforms.run_pipeline(base[..., :3], [dict(type="RandomFlip", prob=1.0, direction="diagonal")])
    np.testing.assert_array_equal(state.img, base[::-1, ::-1, :3])


def test_a_resize_visctl_lacks_runs_through_the_default_scopes_registry_with_its_geometry(tmp_path, monkeypatch):
    """A package laid out as the OpenMMLab ones (``<pkg>/registry.py`` with a TRANSFORMS child registry that
    imports ``<pkg>.transforms`` on look-up): a config step visctl does not implement, qualified with the config's
    default_scope as model commands do, runs as the package's transform; for a resize (mmseg's ResizeToMultiple)
    the map geometry comes from the ``img_shape`` it records (a stretch of the whole image, then padding at the
    bottom/right); a transform of unknown geometry that changes the size leaves the geometry unknown."""
    pytest.importorskip("mmengine.registry")
    import sys

    import numpy as np

    from visctl import transforms
    from visctl.errors import ConfigError

    pkg = tmp_path / "visctl_fake_tf_scope"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "registry.py").write_text(
        "from mmengine.registry import TRANSFORMS as ROOT, Registry\n"
        "TRANSFORMS = Registry('transform', parent=ROOT, scope='visctl_fake_tf_scope',\n"
        "                      locations=['visctl_fake_tf_scope.transforms'])\n")
    (pkg / "transforms.py").write_text(
        "import cv2, numpy as np\nfrom visctl_fake_tf_scope.registry import TRANSFORMS\n"
        "@TRANSFORMS.register_module()\nclass ResizeToMultiple:\n"
        "    def __init__(self, size, pad):\n        self.size, self.pad = size, pad\n"
        "    def __call__(self, results):\n"
        "        img = cv2.resize(results['img'], self.size)\n"
        "        results['img_shape'] = img.shape[:2]\n"
        "        results['img'] = np.pad(img, ((0, self.pad), (0, self.pad), (0, 0)))\n"
        "        return results\n"
        "@TRANSFORMS.register_module()\nclass Zoom(ResizeToMultiple):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n.startswith("visctl_fake_tf_scope")]:
        monkeypatch.delitem(sys.modules, name)
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = (255, 0, 0)  # red on the left: channels come back in RGB order
    step = dict(type="ResizeToMultiple", size=(30, 20), pad=4)
    with pytest.raises(ConfigError, match="unknown transform 'ResizeToMultiple'"):
        transforms.run_pipeline(img, [step])  # no scope: not looked up in any package
    steps = transforms.qualify([step], "visctl_fake_tf_scope")
    assert steps == [dict(step, type="visctl_fake_tf_scope.ResizeToMultiple")]
    state = transforms.run_pipeline(img, steps)
    assert state.img.shape == (24, 34, 3) and state.steps == ["ResizeToMultiple"]
    assert tuple(state.img[5, 5]) == (255, 0, 0) and tuple(state.img[22, 32]) == (0, 0, 0)
    assert state.scale == (0.5, 0.5) and state.shift == (0, 0) and state.geometry_known
    zoom = transforms.run_pipeline(img, transforms.qualify([dict(step, type="Zoom")], "visctl_fake_tf_scope"))
    assert zoom.img.shape == (24, 34, 3) and not zoom.geometry_known
