"""``cam`` and ``featmap`` on mmpretrain's own configs, against mmpretrain's own tool.

The reference is ``tools/visualization/vis_cam.py`` as mmpretrain's wheel ships it, imported from its file and
run along its own path: ``mmpretrain.apis.get_model`` on a Runner-style checkpoint, the test pipeline built
through mmpretrain's ``TRANSFORMS``, the model's ``data_preprocessor``, its ``init_cam`` (grad-cam 1.4.8's class
with vis_cam's ``reshape_transform`` for ViT-like models) and its ``get_default_target_layers``.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mmstack import load_mmpretrain, need, package_configs, runner_checkpoint

from visctl.errors import InputWarning

# the OpenMMLab packages' own warnings at import and load (mmcv's moved-class notice, mmengine's loaders)
pytestmark = pytest.mark.filterwarnings("ignore::ImportWarning", "ignore::UserWarning:mm")

# (config under mmpretrain/.mim/configs, ViT-like for vis_cam, visctl's default layer, vis_cam's default layer,
# method): visctl's default is the last feature map after its activation, vis_cam's the last norm layer (before
# the activation in a CNN); on ViT/DeiT both are the last block's first norm. LayerCAM gives a flat map on a
# random-weight ViT (in vis_cam too), so those rows use Grad-CAM.
FAMILIES = [
    ("resnet/resnet18_8xb32_in1k.py", False, "backbone.layer4", "backbone.layer4.1.bn2", "layercam"),
    ("mobilenet_v2/mobilenet-v2_8xb32_in1k.py", False, "backbone.conv2", "backbone.conv2.bn", "layercam"),
    ("mobilenet_v3/mobilenet-v3-small_8xb128_in1k.py", False, "backbone.layer12", "backbone.layer12.bn", "layercam"),
    ("efficientnet/efficientnet-b0_8xb32_in1k.py", False, "backbone.layers.6", "backbone.layers.6.bn", "layercam"),
    ("convnext/convnext-tiny_32xb128_in1k.py", False, "backbone.stages.3", "backbone.norm3", "layercam"),
    ("swin_transformer/swin-tiny_16xb64_in1k.py", True, "backbone.stages.3.blocks.1.norm1", "backbone.norm3",
     "layercam"),
    ("deit/deit-tiny_4xb256_in1k.py", True, "backbone.layers.11.ln1", "backbone.layers.11.ln1", "gradcam"),
    ("vision_transformer/vit-base-p16_64xb64_in1k-384px.py", True, "backbone.layers.11.ln1",
     "backbone.layers.11.ln1", "gradcam"),
]
IDS = [f[0].split("/")[0] for f in FAMILIES]


@pytest.fixture(scope="module")
def vis_cam():
    """mmpretrain's tools/visualization/vis_cam.py, imported from the wheel's copy."""
    need("mmpretrain")
    need("pytorch_grad_cam")
    path = Path(importlib.util.find_spec("mmpretrain").origin).parent / ".mim/tools/visualization/vis_cam.py"
    spec = importlib.util.spec_from_file_location("mmpretrain_vis_cam", path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources' deprecation
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoints(mm_tmp):
    configs = package_configs("mmpretrain")
    return lambda config: runner_checkpoint(configs / config, mm_tmp)


_LOADED: dict = {}


def mmpretrain_model(config: Path, checkpoint: Path, image: Path):
    """vis_cam.py's main() up to the CAM: ``get_model`` on the checkpoint, the test pipeline through mmpretrain's
    TRANSFORMS, the model's data_preprocessor; (model, input tensor), once per config and image."""
    from mmcv.transforms import Compose
    from mmengine.config import Config
    from mmengine.dataset import default_collate
    from mmpretrain.registry import TRANSFORMS

    key = (str(config), str(checkpoint), str(image))
    if key not in _LOADED:
        cfg = Config.fromfile(str(config))
        model = load_mmpretrain(cfg, checkpoint)
        transforms = Compose([TRANSFORMS.build(t) for t in cfg.test_dataloader.dataset.pipeline])
        data = model.data_preprocessor(default_collate([transforms({"img_path": str(image)})]), False)
        _LOADED.clear()  # one model at a time (ViT-base is 350 MB)
        _LOADED[key] = model, data["inputs"]
    return _LOADED[key]


def reference(vis_cam, config: Path, checkpoint: Path, image: Path, method: str, layer: str | None, vit_like: bool,
              categories: list[int] | None):
    """vis_cam.py's maps: (grayscale maps at the input size, one per category -- the input repeated, one
    ClassifierOutputTarget each, as grad-cam takes a batch -- the input tensor, the model, the name of the layer
    it used: ``layer``, or vis_cam's ``get_default_target_layers``)."""
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, inputs = mmpretrain_model(config, checkpoint, image)
    args = SimpleNamespace(vit_like=vit_like, num_extra_tokens=None)
    layers = [vis_cam.get_layer(layer, model)] if layer else vis_cam.get_default_target_layers(model, args)
    names = {id(m): n for n, m in model.named_modules()}
    cam = vis_cam.init_cam(method, model, layers, False, functools.partial(vis_cam.reshape_transform, model=model,
                                                                           args=args))
    targets = [ClassifierOutputTarget(c) for c in categories] if categories else None
    with torch.enable_grad():
        gray = cam(inputs.repeat(len(categories) if categories else 1, 1, 1, 1), targets)
    cam.activations_and_grads.release()
    return gray, inputs, model, names[id(layers[0])]


def visctl_input(config: Path, image: Path):
    """The tensor visctl gives the model: the config's test pipeline as visctl runs it, its normalisation."""
    from mmengine.config import Config

    from visctl import config as vconfig
    from visctl import images, transforms

    cfg = Config.fromfile(str(config))
    state = transforms.run_pipeline(images.read_image(image), vconfig.test_pipeline(cfg))
    return transforms.to_tensor([state], *vconfig.normalization(cfg))


def on_original(fmap: np.ndarray, config: Path, image: Path) -> np.ndarray:
    """A map at the model input's size carried back onto the original as visctl carries its own (the test
    pipeline's geometry; visctl's own tests check that carrying)."""
    from mmengine.config import Config

    from visctl import config as vconfig
    from visctl import images, transforms

    img = images.read_image(image)
    state = transforms.run_pipeline(img, vconfig.test_pipeline(Config.fromfile(str(config))))
    return transforms.to_original(np.asarray(fmap, np.float32), state, img.shape[:2])


@pytest.mark.parametrize(("config", "vit_like", "layer", "vis_cam_layer", "method"), FAMILIES, ids=IDS)
def test_cam_maps_equal_vis_cams_on_mmpretrain_configs(vis_cam, checkpoints, photo, config, vit_like, layer,
                                                       vis_cam_layer, method):
    import visctl

    path = package_configs("mmpretrain") / config
    ckpt = checkpoints(config)
    topk = 3 if vit_like else 1  # a random-weight ViT's map of one class can be flat: compare three classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # "N map(s) are constant": checked below
        result = visctl.cam(photo, str(path), str(ckpt), method=method, topk=topk)
    assert result.target_layers == (layer,)  # visctl's default (README: after the activation)
    maps = result[0].maps
    assert len(maps) == topk
    categories = [c for _, c in maps]
    refs, inputs, model, _ = reference(vis_cam, path, ckpt, photo, method, layer, vit_like, categories)
    # the classes visctl chose are the model's top classes, as vis_cam's default target
    import torch

    with torch.no_grad():
        assert categories == model(inputs)[0].topk(topk).indices.tolist()
    # the input tensor is mmpretrain's data_preprocessor output
    ours = visctl_input(path, photo)
    assert tuple(ours.shape) == tuple(inputs.shape)
    np.testing.assert_allclose(ours.numpy(), inputs.numpy(), atol=1e-5)
    for ref, vmap in zip(refs, maps.values()):
        inside = ~np.isnan(vmap)
        assert inside.mean() > 0.5
        np.testing.assert_allclose(vmap[inside], on_original(ref, path, photo)[inside], atol=2e-5)
    assert any(float(np.nanstd(m)) > 1e-3 for m in maps.values())  # real maps, not only blank ones
    # vis_cam's own default layer
    default, = vis_cam.get_default_target_layers(model, SimpleNamespace(vit_like=vit_like, num_extra_tokens=None))
    assert {id(m): n for n, m in model.named_modules()}[id(default)] == vis_cam_layer


def test_vis_cams_default_layer_gives_vis_cams_map(vis_cam, checkpoints, photo, invoke, tmp_path):
    """The seed's line with vis_cam's default layer named (a norm before the activation): the raw map equals
    vis_cam's default run."""
    config = "convnext/convnext-tiny_32xb128_in1k.py"
    path = package_configs("mmpretrain") / config
    ckpt = checkpoints(config)
    run = invoke("cam", photo, path, ckpt, "--method", "layercam", "--target-layers", "backbone.norm3",
                 "--save-raw", "-o", tmp_path)
    assert run.exit_code == 0, run.output
    raw, = tmp_path.glob("*.npy")
    category = int(re.search(r"_c(\d+)_", raw.name).group(1))
    refs, _, _, chosen = reference(vis_cam, path, ckpt, photo, "layercam", None, False, [category])
    assert chosen == "backbone.norm3"
    ref = refs[0]
    vmap = np.load(raw)
    inside = ~np.isnan(vmap)
    np.testing.assert_allclose(vmap[inside], on_original(ref, path, photo)[inside], atol=2e-5)


@pytest.mark.parametrize("config", ["resnet/resnet18_8xb32_in1k.py", "swin_transformer/swin-tiny_16xb64_in1k.py"],
                         ids=["resnet", "swin"])
def test_seed_line_and_featmap_run_on_mmpretrain_configs(vis_cam, checkpoints, photo, invoke, tmp_path, config):
    """``visctl cam photo.jpg CONFIG CKPT --method layercam`` (the seed's line) and ``featmap``: the feature map
    is the channel mean of the layer's output on mmpretrain's own input (mmengine's ``squeeze_mean``)."""
    import torch

    import visctl

    path = package_configs("mmpretrain") / config
    ckpt = checkpoints(config)
    run = invoke("cam", photo, path, ckpt, "--method", "layercam", "-o", tmp_path / "cam")
    assert run.exit_code == 0, run.output
    assert "has no model" not in run.output and list((tmp_path / "cam").glob("photo_cam_layercam_*.png"))
    run = invoke("featmap", photo, path, ckpt, "-o", tmp_path / "featmap")
    assert run.exit_code == 0, run.output
    result = visctl.featmap(photo, str(path), str(ckpt))
    layer, = result.layers
    model, inputs = mmpretrain_model(path, ckpt, photo)
    module = dict(model.named_modules())[layer]
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(inputs)
    handle.remove()
    out = seen[0]
    if out.ndim == 3:  # swin's tokens (N, L, C) on its 7x7 grid
        side = int(out.shape[1] ** 0.5)
        out = out.reshape(out.shape[0], side, side, -1).permute(0, 3, 1, 2)
    mean = out[0].mean(0).numpy()
    vmap = result.images[0].layers[0].map()
    inside = ~np.isnan(vmap)
    np.testing.assert_allclose(vmap[inside], on_original(mean, path, photo)[inside], rtol=1e-4, atol=1e-4)


def test_the_default_layer_note_says_what_the_layer_is(invoke, photo, mm_tmp):
    """MViT's last map of the image is its last MLP's activation, inside a block: the note said "the last block's
    output" of it."""
    configs = package_configs("mmpretrain")
    config = configs / "mvit/mvitv2-tiny_8xb256_in1k.py"
    result = invoke("featmap", photo, config, runner_checkpoint(config, mm_tmp), "-o", mm_tmp / "mvit")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stderr.splitlines() if x.startswith("default layer"))
    assert "mlp.act" in line and "block's output" not in line and "after an activation" in line, line
