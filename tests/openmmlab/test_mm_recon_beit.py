"""``recon`` on mmpretrain's token-target pretraining configs (BEiT v1: DALL-E tokens, BEiT v2: VQ-KD tokens),
against mmpretrain's own ``BEiT.loss()``.

There is no pixel decoder for these targets, so visctl draws per masked patch whether the top-1 predicted token is
the target generator's token and the target token's cross-entropy. The reference builds the model's two inputs
with mmpretrain's own transforms (``RandomResizedCropAndInterpolationWithTwoPic`` with the config's
second_size / second_interpolation, cropping the whole picture the model sees; the config's
``BEiTMaskGenerator`` right after ``np.random.seed``) and ``TwoNormDataPreprocessor``, and runs ``model.loss``:
its cross-entropy over the masked patches must be visctl's mean (1e-5), and the argmax comparison done here
visctl's accuracy.

Small variants keep the target generators as the configs build them (DALL-E at 112 px, a ViT-base VQ-KD):
the BEiT backbone is a DeiT-tiny (v2: its neck too, through a config inheriting the shipped one).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from mmstack import mm_config, package_configs, runner_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::ImportWarning", "ignore::UserWarning", "ignore::FutureWarning")

BEIT = "beit/beit_beit-base-p16_8xb256-amp-coslr-300e_in1k.py"
BEITV2 = "beitv2/beitv2_beit-base-p16_8xb256-amp-coslr-300e_in1k.py"
CAE = "cae/cae_beit-base-p16_8xb256-amp-coslr-300e_in1k.py"
CAE_TINY = ("model.backbone.arch=deit-tiny", "model.neck.embed_dims=192", "model.neck.num_heads=3")
TINY = ("model.backbone.arch=deit-tiny", "model.head.embed_dims=192")
# a trained VQ-KD's codebook is initialised; the shipped config's is k-means-initialised on the first batch
V2_CODEBOOK = ("model.target_generator.quantize_kmeans_init=False",)


@pytest.fixture(scope="session")
def beit_v1(mm_tmp) -> tuple[Path, Path, tuple[str, ...]]:
    config = package_configs("mmpretrain") / BEIT
    return config, runner_checkpoint(config, mm_tmp, TINY), TINY


def v2_config(folder: Path) -> Path:
    """The shipped BEiT v2 config with a DeiT-tiny backbone and neck (a dict arch: no --cfg-options for it)."""
    path = folder / "beitv2_tiny.py"
    path.write_text(f"_base_ = [{str(package_configs('mmpretrain') / BEITV2)!r}]\n"
                    "model = dict(neck=dict(backbone_arch=dict(_delete_=True, embed_dims=192, depth=12, num_layers=12,\n"
                    "    num_heads=3, feedforward_channels=768)))\n")  # BEiTV2Neck reads depth; it asserts num_layers
    return path


@pytest.fixture(scope="session")
def beit_cae(mm_tmp) -> tuple[Path, Path, tuple[str, ...]]:
    config = package_configs("mmpretrain") / CAE
    return config, runner_checkpoint(config, mm_tmp, CAE_TINY), CAE_TINY


@pytest.fixture(scope="session")
def beit_v2(mm_tmp) -> tuple[Path, Path, tuple[str, ...]]:
    config = v2_config(mm_tmp)
    options = TINY + V2_CODEBOOK
    return config, runner_checkpoint(config, mm_tmp, options), options


def reference(config: Path, checkpoint: Path, options: tuple[str, ...], image: Path, seed: int = 0):
    """mmpretrain's own inputs and ``BEiT.loss`` (``CAE.loss``): (its cross-entropy, the mask, the target tokens,
    the masked patches' logits, the inputs)."""
    import torch
    from mmengine.dataset import Compose, default_collate
    from mmpretrain.apis import get_model
    from mmpretrain.registry import TRANSFORMS

    cfg = mm_config(config, options)
    with mock.patch.dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"):  # the Runner's HistoryBuffer; our file
        model = get_model(cfg, str(checkpoint), device="cpu").eval()
    steps = {s["type"]: dict(s) for s in cfg.train_dataloader.dataset.pipeline}
    two = steps["RandomResizedCropAndInterpolationWithTwoPic"]
    # the picture the model sees (visctl without a test pipeline: Resize(224, pillow)), cropped whole by the
    # pipeline's own two-picture transform: scale (1, 1), ratio (1, 1) on a square picture
    data = Compose([dict(type="LoadImageFromFile"), dict(type="Resize", scale=(224, 224), backend="pillow"),
                    dict(two, scale=(1.0, 1.0), ratio=(1.0, 1.0))])(dict(img_path=str(image)))
    np.random.seed(seed)  # the mask generator's first draw after seeding
    data = TRANSFORMS.build(steps["BEiTMaskGenerator"])(data)
    data = default_collate([Compose([dict(type="PackInputs")])(data)])  # as the config packs it
    with torch.no_grad():
        out = model.data_preprocessor(data, False)
        inputs, samples = out["inputs"], out["data_samples"]
        torch.manual_seed(seed)  # an uninitialised VQ-KD codebook: k-means from here, as visctl seeds it
        losses = model.loss(inputs, samples)
        mask = torch.stack([s.mask for s in samples]).flatten(1).bool()
        tokens = model.target_generator(inputs[1])
        tokens = (tokens.argmax(1) if tokens.dim() == 4 else tokens).flatten(1)  # DALL-E: BEiTV1Head's argmax
        if type(model).__name__ == "CAE":  # CAE.loss: the decoder's logits of the masked patches
            pos = model.backbone.pos_embed[:, 1:]
            logits, _ = model.neck(model.backbone(inputs[0], mask)[:, 1:], pos[:, mask[0]], pos[:, ~mask[0]])
            return float(losses["main"]), mask[0].numpy(), tokens[0].numpy(), logits[0], inputs
        latent = model.backbone(inputs[0], mask.reshape(-1, 14, 14))
        if model.with_neck:
            feats, _ = model.neck(latent, rel_pos_bias=model.backbone.shared_rel_pos_bias)
        else:
            feats = latent[0][:, 1:]
        logits = model.head.cls_head(feats[mask])
    loss = losses["loss_1"] if "loss_1" in losses else losses["loss"]
    return float(loss), mask[0].numpy(), tokens[0].numpy(), logits, inputs


def recon_api(image: Path, config: Path, checkpoint: Path, options: tuple[str, ...], **kwargs):
    import visctl
    from visctl.session import RunOptions

    return visctl.recon(image, str(config), str(checkpoint), options=RunOptions(device="cpu", cfg_options=options),
                              **kwargs)


@pytest.mark.parametrize("which", ["v1", "v2", "cae"])
def test_token_predictions_equal_beit_loss(request, photo, which):
    config, ckpt, options = request.getfixturevalue(f"beit_{which}")
    res = recon_api(photo, config, ckpt, options)
    im = res.images[0]
    loss, mask, tokens, logits, inputs = reference(config, ckpt, options, photo)

    assert res.kind == ("cae" if which == "cae" else "beit") and im.mse is None
    assert tuple(inputs[1].shape[2:]) == ((224, 224) if which == "v2" else (112, 112))  # DALL-E sees 112 px
    np.testing.assert_array_equal(im.mask.reshape(-1), mask)  # the config's BEiTMaskGenerator, seeded
    assert im.count == mask.sum() == 75
    np.testing.assert_array_equal(im.target.reshape(-1), tokens)  # the target generator's tokens, every patch
    top1 = logits.argmax(-1).numpy()
    np.testing.assert_array_equal(im.reconstruction.reshape(-1)[mask], top1)
    assert np.all(im.reconstruction.reshape(-1)[~mask] == -1)
    assert abs(im.cross_entropy - loss) < 1e-5  # BEiT.loss: CrossEntropyLoss over the masked patches
    assert im.accuracy == pytest.approx(float(np.mean(top1 == tokens[mask])), abs=1e-12)
    assert im.correct == int(np.sum(top1 == tokens[mask]))
    assert np.isnan(im.cross_entropy_map.reshape(-1)[~mask]).all()
    assert np.nanmean(im.cross_entropy_map) == pytest.approx(im.cross_entropy, abs=1e-5)


def test_cli_figure_caption_equals_manifest_and_loss(invoke, beit_v1, photo, tmp_path):
    config, ckpt, options = beit_v1
    r = invoke("recon", photo, config, ckpt, "--cfg-options", *options, "-o", tmp_path, "--device", "cpu",
               "--save-raw", "--target-generator", "--norm-pix")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "manifest.json").read_text())
    entry = m["inputs"][0]
    assert m["params"]["model"] == "beit" and "masked_patch_mse" not in entry
    # the two pixel flags do not apply, and say so (the figure is the same as without them: the loss below)
    assert any("--target-generator does not apply to BEiT v1" in n for n in m["notes"])
    assert any("--norm-pix does not apply to BEiT v1" in n for n in m["notes"]) and not m["params"]["norm_pix"]
    assert not any("never initialised" in n for n in m["notes"])  # DALL-E has no codebook
    (fig,) = [o for o in m["outputs"] if o["path"].endswith("photo_recon_beit.png")]
    caption = fig["caption"]
    assert "BEiT v1 (DALL-E tokens)" in caption and "no pixel decoder" in caption
    acc, correct, count, ce = re.search(r"accuracy ([\d.]+) \((\d+)/(\d+)\) \| mean cross-entropy ([\d.]+)",
                                        caption).groups()
    assert float(acc) == pytest.approx(entry["masked_token_accuracy"], abs=5e-5)
    assert (int(correct), int(count)) == (entry["masked_tokens_correct"], entry["masked_tokens"]) and int(count) == 75
    assert float(ce) == pytest.approx(entry["masked_token_cross_entropy"], abs=5e-5)
    assert fig["masked_token_cross_entropy"] == entry["masked_token_cross_entropy"]
    loss, *_ = reference(config, ckpt, options, photo)
    assert abs(entry["masked_token_cross_entropy"] - loss) < 1e-5
    raw = np.load(tmp_path / "photo_recon_beit.npy")  # target token, top-1 token, cross-entropy per patch
    assert raw.shape == (3, 14, 14) and np.nanmean(raw[2]) == pytest.approx(loss, abs=1e-5)


def test_uninitialised_vq_kd_codebook_is_said_and_seeded_as_loss(mm_tmp, photo):
    """The shipped BEiT v2 config with never-trained weights: its quantizer k-means-initialises the codebook on
    the first batch (mmpretrain's own forward); visctl says so and seeds it as the reference does. (Its VQ-KD
    encoder a DeiT-tiny here: the full one is in the test above.)"""
    config = v2_config(mm_tmp)
    options = (*TINY, "model.target_generator.encoder_config.arch=deit-tiny")
    ckpt = runner_checkpoint(config, mm_tmp, options)
    res = recon_api(photo, config, ckpt, options)
    assert any("never initialised" in n and "no trained tokenizer" in n for n in res.notes)
    loss, mask, tokens, _, _ = reference(config, ckpt, options, photo)
    np.testing.assert_array_equal(res.images[0].target.reshape(-1), tokens)
    assert abs(res.images[0].cross_entropy - loss) < 1e-5
