"""``recon`` and ``tsne`` on mmpretrain's own pretraining and classifier configs, against mmpretrain's own code.

recon: mmpretrain 1.x ships no reconstruction tool; the reference is mmselfsup 1.x's
``tools/analysis_tools/visualize_reconstruction.py`` (quoted below where its lines are used: mmselfsup is not
installable next to mmpretrain 1.x) run on mmpretrain's models: its pipeline through mmpretrain's TRANSFORMS,
the model's ``data_preprocessor``, its seeding, the forward its ``extract_feat`` ran (the same as the models'
``loss()`` in mmpretrain) and its ``reconstruct`` + ``post_process`` arithmetic.

tsne: the reference is mmpretrain's ``tools/visualization/vis_tsne.py`` as its wheel ships it, run in this
process along its own path (``get_model`` on a Runner-style checkpoint, the dataset through mmpretrain's
DATASETS, ``Runner.build_dataloader``, ``model.extract_feat``); where it cannot run (``pre_logits``: its loop
iterates over the rows of the bare tensor; a self-supervised model's ``neck``: ``extract_feat`` takes no
``stage``) the test runs its loop with the call the model's own ``loss()`` makes.

Small variants (ViT ``deit-tiny``, Swin ``tiny``, a short MAE decoder) keep the ViT-base pretraining configs in
the CI budget; the classifier and the ResNet-50 MoCo v3 / SimCLR configs run as they ship.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from mmstack import mm_config, need, package_configs, runner_checkpoint

# the OpenMMLab packages' own warnings at import and load (mmcv's moved-class notice, mmengine's loaders)
pytestmark = pytest.mark.filterwarnings("ignore::ImportWarning", "ignore::UserWarning")

MAE = "mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py"
MAE_SMALL = ("model.backbone.arch=deit-tiny", "model.neck.embed_dim=192", "model.neck.decoder_embed_dim=128",
             "model.neck.decoder_depth=2", "model.neck.decoder_num_heads=4")
SIMMIM = "simmim/simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py"
SIMMIM_SMALL = ("model.backbone.arch=tiny", "model.neck.in_channels=768")
MASKFEAT = "maskfeat/maskfeat_vit-base-p16_8xb256-amp-coslr-300e_in1k.py"
MASKFEAT_SMALL = ("model.backbone.arch=deit-tiny", "model.neck.in_channels=192")
MIXMIM = "mixmim/mixmim_mixmim-base_16xb128-coslr-300e_in1k.py"
R18 = "resnet/resnet18_8xb32_in1k.py"
DEIT = "deit/deit-tiny_4xb256_in1k.py"
MOCOV3 = "mocov3/mocov3_resnet50_8xb512-amp-coslr-100e_in1k.py"
SIMCLR = "simclr/simclr_resnet50_16xb256-coslr-200e_in1k.py"
# visualize_reconstruction.py's post_process un-normalises with these, whatever the config says
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@contextlib.contextmanager
def full_pickle_loads():
    """mmengine's ``torch.load`` of a Runner checkpoint (its HistoryBuffer) needs a full pickle load on torch >= 2.6;
    the file is the test's own."""
    old = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = old


def mm_model(cfg, checkpoint: Path):
    from mmpretrain.apis import get_model

    with full_pickle_loads():
        return get_model(cfg, str(checkpoint), device="cpu")


# ------------------------------------------------------------------------------------------------ recon


@pytest.fixture(scope="session")
def mim_configs() -> Path:
    return package_configs("mmpretrain")


def vis_inputs(model, image: Path, size: int, mask_step: dict | None = None, seed: int = 0):
    """visualize_reconstruction.py's input: its seeding, then its pipeline (mmselfsup's vis_pipeline, or its own
    default) through mmpretrain's TRANSFORMS, ``default_collate`` and the model's ``data_preprocessor``."""
    import torch
    from mmengine.dataset import Compose, default_collate

    # make random mask reproducible (comment out to make it change)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    steps = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(size, size), backend="pillow")]
    if mask_step:
        steps.append(mask_step)
    data = Compose([*steps, dict(type="PackInputs", algorithm_keys=["mask"] if mask_step else [])])(
        dict(img_path=str(image)))
    data = default_collate([data])
    out = model.data_preprocessor(data, False)
    return out["inputs"], out["data_samples"]


def post_process(original_img, pred_img, mask):
    """visualize_reconstruction.py's ``post_process`` and ``recover_norm`` without the final ``.int()`` (0-1 here):
        original_img = torch.einsum('nchw->nhwc', original_img.cpu())
        img_masked = original_img * (1 - mask)
        img_paste = original_img * (1 - mask) + pred_img * mask
        img = torch.clip((img * std + mean) * 255, 0, 255).int()   # imagenet_mean, imagenet_std
    """
    import torch

    original_img = torch.einsum("nchw->nhwc", original_img.cpu()).double()
    img_masked = original_img * (1 - mask)
    img_paste = original_img * (1 - mask) + pred_img * mask

    def recover(img):
        return torch.clip((img[0] * IMAGENET_STD + IMAGENET_MEAN) * 255, 0, 255).numpy() / 255

    return recover(original_img), recover(img_masked), recover(pred_img.double()), recover(img_paste)


def recon_api(image: Path, config: Path, checkpoint: Path, options: tuple[str, ...], **kwargs):
    import visctl
    from visctl.session import RunOptions

    return visctl.recon(image, str(config), str(checkpoint),
                              options=RunOptions(device="cpu", cfg_options=options), **kwargs)


def test_mae_seed_line_equals_visualize_reconstruction(invoke, mim_configs, mm_tmp, photo, tmp_path):
    import torch

    config = mim_configs / MAE
    ckpt = runner_checkpoint(config, mm_tmp, MAE_SMALL)
    out = tmp_path / "test_mae.jpg"
    # the seed's line, translated by the tool's name
    r = invoke("recon", config, "--checkpoint", ckpt, "--img-path", photo, "--out-file", out, "--norm-pix",
               "--save-raw", "--cfg-options", *MAE_SMALL, "-o", tmp_path / "run", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert out.is_file()
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["params"]["model"] == "mae" and m["params"]["norm_pix"] and m["params"]["norm_pix_stats"] == "patch"
    assert m["params"]["mask_ratio"] == 0.75 and m["inputs"][0]["masked_share"] == round(147 / 196, 4)
    assert any("pixels the model did not see" in n for n in m["notes"])  # the leak is said
    raw = np.load(tmp_path / "run" / "photo_recon_mae.npy")

    # the reference: mmselfsup's MAE.extract_feat / reconstruct on mmpretrain's MAE, with --norm-pix
    model = mm_model(mm_config(config, MAE_SMALL), ckpt)
    with torch.no_grad():
        img, _ = vis_inputs(model, photo, 224)
        # if args.norm_pix:  img_embedding = model.head.patchify(img[0]) ... mean, std of each patch
        img_embedding = model.head.patchify(img)
        mean = img_embedding.mean(dim=-1, keepdim=True)
        std = (img_embedding.var(dim=-1, keepdim=True) + 1.e-6) ** .5
        # MAE.extract_feat: latent, mask, ids_restore = self.backbone(inputs[0]); pred = self.neck(latent, ids_restore)
        latent, mask, ids_restore = model.backbone(img)
        features = model.neck(latent, ids_restore)
        # MAE.reconstruct: features * std + mean, head.unpatchify, the mask repeated over each patch's pixels
        pred = torch.einsum("nchw->nhwc", model.head.unpatchify(features * std + mean))
        pix_mask = torch.einsum("nchw->nhwc", model.head.unpatchify(mask.unsqueeze(-1).repeat(1, 1, 16 ** 2 * 3)))
    original, masked, reconstruction, paste = post_process(img, pred, pix_mask)

    np.testing.assert_allclose(raw, reconstruction, atol=1e-5)  # the CLI's --save-raw reconstruction
    res = recon_api(photo, config, ckpt, MAE_SMALL, norm_pix=True)
    im = res.images[0]
    np.testing.assert_array_equal(im.mask.reshape(-1), mask[0].numpy().astype(bool))  # the backbone's own mask
    np.testing.assert_allclose(im.original, original, atol=1e-5)
    np.testing.assert_allclose(im.reconstruction, reconstruction, atol=1e-5)
    np.testing.assert_allclose(im.pasted, paste, atol=1e-5)
    visible = ~pix_mask[0].numpy().astype(bool)  # masked patches: visctl draws grey, the script the mean colour
    np.testing.assert_allclose(im.masked[visible], masked[visible], atol=1e-5)
    assert np.all(im.masked[~visible] == 0.5)


def test_mae_images_get_their_own_seeds_and_visible_stats_on_request(mim_configs, mm_tmp, photo, tmp_path):
    import cv2
    import torch

    config = mim_configs / MAE
    ckpt = runner_checkpoint(config, mm_tmp, MAE_SMALL)
    second = tmp_path / "second.png"
    cv2.imwrite(str(second), cv2.imread(str(photo))[::-1])
    res = recon_api([photo, second], config, ckpt, MAE_SMALL, seed=5, norm_pix_stats="visible")
    model = mm_model(mm_config(config, MAE_SMALL), ckpt)
    for k, im in enumerate(res.images):  # image k: the mask MAEViT draws after torch.manual_seed(5 + k)
        img, _ = vis_inputs(model, [photo, second][k], 224, seed=5 + k)
        with torch.no_grad():
            _, mask, _ = model.backbone(img)
        np.testing.assert_array_equal(im.mask.reshape(-1), mask[0].numpy().astype(bool))
    assert res.params["norm_pix"] and res.params["norm_pix_stats"] == "visible"  # the config's norm_pix=True
    assert not any("did not see" in n for n in res.notes)
    # visible: the masked patches' statistics come from the visible ones, not from the hidden pixels
    assert not np.allclose(res.images[0].reconstruction, recon_api(photo, config, ckpt, MAE_SMALL, seed=5)
                           .images[0].reconstruction, atol=1e-3)


def test_mae_vit_base_as_the_config_builds_it(mim_configs, photo):
    """The config's own ViT-base MAE (no checkpoint file: 450 MB; the built module itself, as a notebook has it)."""
    import torch
    from mmengine.registry import MODELS, init_default_scope

    import visctl

    cfg = mm_config(mim_configs / MAE)
    init_default_scope("mmpretrain")
    torch.manual_seed(0)
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor)).eval()  # as the Runner builds it
    res = visctl.recon(photo, model, seed=3)  # norm_pix from the model's head
    im = res.images[0]
    with torch.no_grad():
        img, _ = vis_inputs(model, photo, 224, seed=3)
        patches = model.head.patchify(img)
        mean = patches.mean(dim=-1, keepdim=True)
        std = (patches.var(dim=-1, keepdim=True) + 1.e-6) ** .5
        latent, mask, ids_restore = model.backbone(img)
        pred = torch.einsum("nchw->nhwc", model.head.unpatchify(model.neck(latent, ids_restore) * std + mean))
    pix_mask = torch.einsum("nchw->nhwc", model.head.unpatchify(mask.unsqueeze(-1).repeat(1, 1, 16 ** 2 * 3)))
    _, _, reconstruction, paste = post_process(img, pred, pix_mask)
    assert res.kind == "mae" and im.mask.shape == (14, 14) and im.mask.sum() == 147
    np.testing.assert_array_equal(im.mask.reshape(-1), mask[0].numpy().astype(bool))
    np.testing.assert_allclose(im.reconstruction, reconstruction, atol=1e-5)
    np.testing.assert_allclose(im.pasted, paste, atol=1e-5)


def test_simmim_mask_generator_and_decoder_equal_mmpretrain(mim_configs, mm_tmp, photo):
    import torch
    from mmpretrain.registry import TRANSFORMS

    config = mim_configs / SIMMIM
    ckpt = runner_checkpoint(config, mm_tmp, SIMMIM_SMALL)
    cfg = mm_config(config, SIMMIM_SMALL)
    res = recon_api(photo, config, ckpt, SIMMIM_SMALL, use_vis_pipeline=True)
    im = res.images[0]

    model = mm_model(cfg, ckpt)
    step = next(s for s in cfg.train_dataloader.dataset.pipeline if s["type"] == "SimMIMMaskGenerator")
    with torch.no_grad():
        img, _ = vis_inputs(model, photo, 192)
        np.random.seed(0)  # the generator's draw right after seeding (mmselfsup's vis_pipeline: Resize, then it)
        mask = torch.from_numpy(TRANSFORMS.build(dict(step)).transform({})["mask"])[None]
        # SimMIM.extract_feat: img_latent = self.backbone(inputs[0], mask); feat = self.neck(img_latent[0])
        features = model.neck(model.backbone(img, mask)[0])
    # SimMIM.reconstruct: pred = nhwc(features); the patch mask repeated p1 x p2 (init_input_size // patch_resolution)
    pred = torch.einsum("nchw->nhwc", features)
    p = 192 // 48
    pix_mask = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(-1).repeat(1, 1, 1, 3)
    original, _, reconstruction, paste = post_process(img, pred, pix_mask)
    assert im.mask.shape == (48, 48) and res.kind == "simmim"
    np.testing.assert_array_equal(im.mask, mask[0].numpy().astype(bool))
    assert abs(im.masked_share - 0.6) < 0.03  # 22 of 36 blocks of 32 px
    np.testing.assert_allclose(im.original, original, atol=1e-5)
    np.testing.assert_allclose(im.reconstruction, reconstruction, atol=1e-5)
    np.testing.assert_allclose(im.pasted, paste, atol=1e-5)


def test_maskfeat_hog_target_and_prediction_equal_mmpretrain(mim_configs, mm_tmp, photo):
    import torch
    from mmpretrain.registry import TRANSFORMS

    config = mim_configs / MASKFEAT
    ckpt = runner_checkpoint(config, mm_tmp, MASKFEAT_SMALL)
    cfg = mm_config(config, MASKFEAT_SMALL)
    res = recon_api(photo, config, ckpt, MASKFEAT_SMALL, target_generator=True)
    im = res.images[0]

    model = mm_model(cfg, ckpt)
    step = next(s for s in cfg.train_dataloader.dataset.pipeline if s["type"] == "BEiTMaskGenerator")
    with torch.no_grad():
        img, _ = vis_inputs(model, photo, 224)
        np.random.seed(0)
        mask = torch.from_numpy(TRANSFORMS.build(dict(step)).transform({})["mask"])[None].bool()
        # MaskFeat.extract_feat: latent = self.backbone(img, self.mask); pred = self.neck([latent.view(B * L, C)])
        # (mmpretrain's MaskFeatViT takes the mask flattened, as MaskFeat.loss hands it over)
        latent = model.backbone(img, mask.flatten(1))
        b, length, c = latent.shape
        features = model.neck((latent.view(b * length, c),))[0].view(b, length, -1)[:, 1:]  # a tuple, as MaskFeat.loss
        model.target_generator(img)
        target = model.target_generator.out  # (1, 3, 9, 28, 28): the HOG its generate_hog_image draws
    # MaskFeat.reconstruct: "recover to HOG description from feature embeddings"
    unfold_size = model.target_generator.unfold_size
    tmp4 = features.unflatten(2, (features.shape[2] // unfold_size ** 2, unfold_size, unfold_size))
    tmp3 = tmp4.unflatten(1, model.backbone.patch_resolution)
    b, p1, p2, c_nbins, _, _ = tmp3.shape
    tmp2 = tmp3.permute(0, 1, 2, 5, 3, 4).reshape((b, p1, p2 * unfold_size, c_nbins, unfold_size))
    tmp1 = tmp2.permute(0, 1, 4, 2, 3).reshape((b, p1 * unfold_size, p2 * unfold_size, c_nbins))
    hog_out = tmp1.permute(0, 3, 1, 2).unflatten(1, (c_nbins // 9, 9))  # (1, 3, 9, 28, 28)

    assert res.kind == "maskfeat" and im.mask.shape == (14, 14)
    np.testing.assert_array_equal(im.mask, mask[0].numpy())
    assert im.mask.sum() == 78  # BEiTMaskGenerator(num_masking_patches=78)
    np.testing.assert_allclose(im.target, target[0].numpy(), atol=1e-5)
    cell_mask = np.kron(im.mask, np.ones((2, 2), bool))  # 2 x 2 HOG cells of 8 px in a 16 px patch
    np.testing.assert_allclose(im.reconstruction[:, :, cell_mask], hog_out[0].clamp(min=0).numpy()[:, :, cell_mask],
                               atol=1e-5)
    np.testing.assert_allclose(im.reconstruction[:, :, ~cell_mask], target[0].numpy()[:, :, ~cell_mask], atol=1e-5)


# BEiT v1/v2 and CAE draw their token predictions (test_mm_recon_beit.py)
@pytest.mark.parametrize("name, what", [(MIXMIM, "two images mixed"), (MOCOV3, "not a masked-image model"),
                                        (R18, "reconstructs nothing")])
def test_families_without_pixels_are_refused_with_the_reason(invoke, mim_configs, photo, tmp_path, name, what):
    options = ()
    r = invoke("recon", photo, mim_configs / name, "-o", tmp_path, "--device", "cpu",
               *(("--cfg-options", *options) if options else ()))
    assert r.exit_code == 2, r.output
    lines = [x for x in r.stderr.splitlines() if x.startswith(("error:", "hint:"))]
    assert len(lines) == 2 and what in lines[0] and "Traceback" not in r.output
    assert "MAE" in lines[1] and "SimMIM" in lines[1] and "MaskFeat" in lines[1]


# ------------------------------------------------------------------------------------------------- tsne


@pytest.fixture(scope="session")
def class_folders(mm_tmp) -> Path:
    """A tiny ImageNet layout: ROOT/val/<class>/*.jpg, three classes of four pictures."""
    import cv2

    root = mm_tmp / "imagenet"
    rng = np.random.default_rng(0)
    for k, name in enumerate(["cat", "dog", "fox"]):
        (root / "val" / name).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            img = np.clip(rng.normal(60 + 60 * k, 40, (72, 96, 3)), 0, 255).astype(np.uint8)
            cv2.circle(img, (30 + 10 * i, 36), 12 + 4 * k, (255 - 80 * k, 40 * i, 90), -1)
            cv2.imwrite(str(root / "val" / name / f"{i}.jpg"), img)
    return root


@pytest.fixture(scope="session")
def test_cfg(class_folders, mm_tmp) -> Path:
    """A --test-cfg for the self-supervised configs (they have no test_dataloader), as vis_tsne.py asks."""
    path = mm_tmp / "tsne_data.py"
    path.write_text(
        "test_dataloader = dict(batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),\n"
        f"    dataset=dict(type='CustomDataset', data_root={str(class_folders / 'val')!r}, pipeline=[\n"
        "        dict(type='LoadImageFromFile'), dict(type='ResizeEdge', scale=64, edge='short'),\n"
        "        dict(type='CenterCrop', crop_size=64), dict(type='PackInputs')]))\n")
    return path


def r18_options(root: Path) -> tuple[str, ...]:
    """A classifier's own test_dataloader (ImageNet, split val, ResizeEdge 256, CenterCrop 224) pointed at ``root``."""
    return (f"test_dataloader.dataset.data_root={root}", "test_dataloader.dataset.metainfo.classes=[cat,dog,fox]",
            "test_dataloader.batch_size=4", "test_dataloader.num_workers=0",
            "test_dataloader.persistent_workers=False")


def vis_tsne(config: Path, checkpoint: Path, work_dir: Path, *args: str) -> dict[str, np.ndarray]:
    """mmpretrain's vis_tsne.py, run in this process as ``python vis_tsne.py ...`` runs it; its features files."""
    import matplotlib

    tool = Path(package_configs("mmpretrain")).parent / "tools" / "visualization" / "vis_tsne.py"
    argv = sys.argv
    sys.argv = [str(tool), str(config), "--checkpoint", str(checkpoint), "--work-dir", str(work_dir),
                "--device", "cpu", "--perplexity", "2", "--n-iter", "250", *args]
    backend = matplotlib.get_backend()
    try:
        with full_pickle_loads():
            runpy.run_path(str(tool), run_name="__main__")
    finally:
        sys.argv = argv
        matplotlib.use(backend)
        import matplotlib.pyplot as plt

        plt.close("all")
    return {p.stem: np.load(p) for p in work_dir.glob("tsne_*/feat_*.npy")}


def visctl_tsne(invoke, out: Path, *args) -> tuple[dict[str, np.ndarray], dict]:
    r = invoke("tsne", *args, "--method", "pca", "-o", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    labels = json.loads((out / "labels.json").read_text())
    order = np.argsort(labels["rows"])  # rows in dataset order, as vis_tsne.py keeps them
    return {p.stem: np.load(p)[order] for p in out.glob("features_*.npy")}, labels


def mm_loop(config: Path, checkpoint: Path, options: tuple[str, ...], test_cfg: Path | None, features) -> np.ndarray:
    """vis_tsne.py's loop (dataset, dataloader, data_preprocessor) with ``features(model, inputs)`` as the call."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner
    from mmpretrain.registry import DATASETS

    cfg = mm_config(config, options)
    model = mm_model(cfg, checkpoint)
    loader_cfg = Config.fromfile(str(test_cfg)).get("test_dataloader") if test_cfg else cfg.get("test_dataloader")
    loader_cfg.dataset = DATASETS.build(loader_cfg.pop("dataset"))
    loader_cfg.setdefault("collate_fn", dict(type="default_collate"))
    out = []
    for data in Runner.build_dataloader(loader_cfg):
        with torch.no_grad():
            inputs = model.data_preprocessor(data)["inputs"]
            out.append(features(model, inputs).cpu().numpy())
    return np.concatenate(out)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name, key", [(R18, "feat_3"), (DEIT, "feat_11")])
def test_classifier_stages_equal_vis_tsne(invoke, mim_configs, mm_tmp, class_folders, tmp_path, name, key):
    config = mim_configs / name
    ckpt = runner_checkpoint(config, mm_tmp)
    options = r18_options(class_folders)
    ref_neck = vis_tsne(config, ckpt, tmp_path / "ref_neck", "--cfg-options", *options)  # its default: neck
    ref_backbone = vis_tsne(config, ckpt, tmp_path / "ref_bb", "--vis-stage", "backbone", "--cfg-options", *options)
    neck, labels = visctl_tsne(invoke, tmp_path / "neck", config, ckpt, "--cfg-options", *options)
    assert sorted(labels["labels"]) == [0] * 4 + [1] * 4 + [2] * 4 and labels["classes"][:3] == ["cat", "dog", "fox"]
    (got,) = neck.values()  # resnet18: its GlobalAveragePooling neck; DeiT has none: the backbone's class token
    np.testing.assert_allclose(got, ref_neck[key], atol=1e-5)
    backbone, _ = visctl_tsne(invoke, tmp_path / "bb", config, ckpt, "--vis-stage", "backbone", "--cfg-options",
                              *options)
    np.testing.assert_allclose(backbone["features_backbone-0"], ref_backbone[key], atol=1e-5)
    pre, _ = visctl_tsne(invoke, tmp_path / "pre", config, ckpt, "--vis-stage", "pre_logits", "--cfg-options",
                         *options)
    # vis_tsne.py cannot save pre_logits (a bare tensor: its key loop runs over the batch's rows); its extract_feat
    ref_pre = mm_loop(config, ckpt, options, None, lambda m, x: m.extract_feat(x, stage="pre_logits"))
    np.testing.assert_allclose(pre["features_pre_logits"], ref_pre, atol=1e-5)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", [MOCOV3, SIMCLR])
def test_self_supervised_backbone_and_neck_equal_mmpretrain(invoke, mim_configs, mm_tmp, test_cfg, tmp_path, name):
    config = mim_configs / name
    ckpt = runner_checkpoint(config, mm_tmp)
    # without --vis-stage vis_tsne.py runs extract_feat(inputs): a self-supervised model's backbone, and so does visctl
    ref = vis_tsne(config, ckpt, tmp_path / "ref", "--test-cfg", str(test_cfg))
    default, _ = visctl_tsne(invoke, tmp_path / "default", config, ckpt, "--test-cfg", test_cfg)
    (got,) = default.values()
    np.testing.assert_allclose(got, ref["feat_3"], atol=1e-5)
    # --vis-stage neck: vis_tsne.py stops with a TypeError (extract_feat takes no stage); the projection the
    # model's loss() computes, self.neck(self.backbone(x))
    neck, _ = visctl_tsne(invoke, tmp_path / "neck", config, ckpt, "--test-cfg", test_cfg, "--vis-stage", "neck")
    ref_neck = mm_loop(config, ckpt, (), test_cfg, lambda m, x: m.neck(m.backbone(x))[0])
    np.testing.assert_allclose(neck["features_neck-0"], ref_neck, atol=1e-5)
    assert ref_neck.shape[1] in (128, 256)


def test_self_supervised_pre_logits_and_missing_dataloader_say_what_to_do(invoke, mim_configs, mm_tmp, test_cfg,
                                                                        tmp_path):
    config = mim_configs / MOCOV3
    ckpt = runner_checkpoint(config, mm_tmp)
    r = invoke("tsne", config, ckpt, "--test-cfg", test_cfg, "--vis-stage", "pre_logits", "-o", tmp_path / "a")
    assert r.exit_code == 2 and "no classification head" in r.stderr and "--vis-stage neck" in r.stderr
    r = invoke("tsne", config, ckpt, "-o", tmp_path / "b")
    assert r.exit_code == 2 and "--test-cfg" in r.stderr, r.output


def test_maskfeat_hog_glyphs_follow_the_edges():
    """A vertical edge: mmpretrain's HOGGenerator puts its gradient (horizontal) in the bin whose angle visctl
    draws as 0, so the glyph (perpendicular to the gradient) runs along the edge."""
    need("mmpretrain")
    import torch
    from mmpretrain.models.selfsup.maskfeat import HOGGenerator

    from visctl.openmmlab_mim import _HOGView

    img = torch.zeros(1, 3, 224, 224)
    img[..., 112:] = 1.0  # dark left, bright right: a vertical edge, the gradient along +x
    gen = HOGGenerator(nbins=9, pool=8, gaussian_window=16)
    gen(img)
    view = _HOGView(gen, 16)
    edge_cell = gen.out[0, 0, :, 10, 13]  # a cell on the edge (column 13 of 28 holds x = 104..111)
    b = int(edge_cell.argmax())
    assert abs(view.gradient_angles[b]) < np.pi / 9  # the gradient is horizontal; the glyph, at +90 deg, vertical


def test_a_neck_that_does_not_take_the_backbone_output_is_refused(invoke, mim_configs, test_cfg, tmp_path):
    """MAE's neck (its decoder) needs the masking's ids_restore: --vis-stage neck says so, no traceback."""
    r = invoke("tsne", mim_configs / MAE, "--test-cfg", test_cfg, "--vis-stage", "neck", "--cfg-options",
               *MAE_SMALL, "-o", tmp_path, "--device", "cpu")
    assert r.exit_code == 2, r.output
    assert "MAEPretrainDecoder" in r.stderr and "--vis-stage backbone" in r.stderr and "Traceback" not in r.output
