"""What visctl says of an mmpretrain model is true: a classifier without its head (``head=None``) gives its
features, and ``cam`` explains the feature mmpretrain's own forward makes the largest, named as a feature of an
embedding, never as a class with a probability (though the checkpoint's meta names 1000 classes)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from mmstack import mm_config, need, package_configs, runner_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::ImportWarning", "ignore::UserWarning:mm")

OPTIONS = ("model.head=None",)


def test_a_headless_mmpretrain_classifier_is_an_embedding(invoke, tmp_path):
    need("mmpretrain")
    import cv2
    import torch

    config = package_configs("mmpretrain") / "resnet" / "resnet18_8xb32_in1k.py"
    ckpt = runner_checkpoint(config, tmp_path, OPTIONS)
    img = tmp_path / "photo.png"
    rng = np.random.default_rng(3)
    cv2.imwrite(str(img), rng.integers(0, 255, (200, 260, 3), dtype=np.uint8))
    out = tmp_path / "o"
    result = invoke("cam", img, config, ckpt, "-o", out, "--cfg-options", *OPTIONS)
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if line.startswith("warning:") and "not classes" in line]
    assert len(said) == 1 and "with_head=False" in said[0] and "512 values" in said[0]
    doc = json.loads((out / "manifest.json").read_text())
    (target,) = doc["inputs"][0]["targets"]
    assert not any("p=" in o.get("caption", "") for o in doc["outputs"])

    # the reference: mmpretrain's own model on its own test pipeline and data preprocessor, as vis_cam.py runs it
    from mmcv.transforms import Compose
    from mmengine.dataset import default_collate
    from mmpretrain.apis import get_model
    from mmpretrain.registry import TRANSFORMS

    cfg = mm_config(config, OPTIONS)
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # mmengine's torch.load: the file is the test's own
        model = get_model(cfg, str(ckpt), device="cpu").eval()
    assert model.with_head is False
    pipeline = Compose([TRANSFORMS.build(t) for t in cfg.test_dataloader.dataset.pipeline])
    data = model.data_preprocessor(default_collate([pipeline({"img_path": str(img)})]), False)
    with torch.no_grad():
        feats = model(data["inputs"], mode="tensor")
    feats = feats[-1] if isinstance(feats, (tuple, list)) else feats
    assert tuple(feats.shape) == (1, 512)
    assert target == f"embedding feature {int(feats[0].argmax())}"
