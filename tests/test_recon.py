"""`visctl recon`: the demo MAE, reference-MAE key compatibility, masks, norm-pix, SimMIM and MaskFeat."""

from __future__ import annotations

import numpy as np
import torch
from conftest import ROOT, manifest

from visctl import building, checkpoints, masked
from visctl.shapes import make_scene

MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"


def _reference_mae_b16_keys() -> dict[str, tuple[int, ...]]:
    """The state-dict names and shapes of the reference MAE ViT-B/16 release, written out by hand."""
    keys = {"cls_token": (1, 1, 768), "pos_embed": (1, 197, 768), "patch_embed.proj.weight": (768, 3, 16, 16),
            "patch_embed.proj.bias": (768,), "norm.weight": (768,), "norm.bias": (768,), "mask_token": (1, 1, 512),
            "decoder_embed.weight": (512, 768), "decoder_embed.bias": (512,), "decoder_pos_embed": (1, 197, 512),
            "decoder_norm.weight": (512,), "decoder_norm.bias": (512,), "decoder_pred.weight": (768, 512),
            "decoder_pred.bias": (768,)}

    def block(prefix: str, d: int) -> None:
        keys.update({f"{prefix}.norm1.weight": (d,), f"{prefix}.norm1.bias": (d,),
                     f"{prefix}.attn.qkv.weight": (3 * d, d), f"{prefix}.attn.qkv.bias": (3 * d,),
                     f"{prefix}.attn.proj.weight": (d, d), f"{prefix}.attn.proj.bias": (d,),
                     f"{prefix}.norm2.weight": (d,), f"{prefix}.norm2.bias": (d,),
                     f"{prefix}.mlp.fc1.weight": (4 * d, d), f"{prefix}.mlp.fc1.bias": (4 * d,),
                     f"{prefix}.mlp.fc2.weight": (d, 4 * d), f"{prefix}.mlp.fc2.bias": (d,)})
    for i in range(12):
        block(f"blocks.{i}", 768)
    for i in range(8):
        block(f"decoder_blocks.{i}", 512)
    return keys


def test_reference_mae_checkpoint_loads_without_key_errors(tmp_path):
    state = {k: torch.randn(shape) for k, shape in _reference_mae_b16_keys().items()}
    torch.save({"model": state}, tmp_path / "mae_pretrain_vit_base.pth")
    model = building.build_model(dict(type="visctl.mim_models:mae_vit_base_patch16"))
    summary = checkpoints.load_checkpoint(model, str(tmp_path / "mae_pretrain_vit_base.pth"))
    assert summary["loaded"] == summary["total"] == len(state)
    assert not summary["missing"] and not summary["unexpected"] and not summary["mismatched"]
    assert torch.equal(model.decoder_pred.weight, state["decoder_pred.weight"])


def test_mmpretrain_names_load_with_the_example_revise_keys(tmp_path):
    from mmengine.config import Config

    def mm_name(k: str) -> str:
        for a, b in ((".norm1.", ".ln1."), (".norm2.", ".ln2."), (".mlp.fc1.", ".ffn.layers.0.0."),
                     (".mlp.fc2.", ".ffn.layers.1.")):
            k = k.replace(a, b)
        if k.startswith("blocks."):
            return "backbone.layers." + k[len("blocks."):]
        if k.startswith("patch_embed.proj."):
            return "backbone.patch_embed.projection." + k[len("patch_embed.proj."):]
        if k.startswith("norm."):
            return "backbone.ln1." + k[len("norm."):]
        if k in ("cls_token", "pos_embed"):
            return "backbone." + k
        if k.startswith("decoder_norm."):
            return "neck.ln1." + k[len("decoder_norm."):]
        return "neck." + k
    state = {mm_name(k): torch.randn(s) for k, s in _reference_mae_b16_keys().items()}
    assert "backbone.layers.3.ffn.layers.0.0.weight" in state and "neck.decoder_blocks.1.ln2.bias" in state
    torch.save({"state_dict": state}, tmp_path / "mm.pth")
    cfg = Config.fromfile(str(ROOT / "examples" / "demo_mae" / "mmpretrain_keys.py"))
    model, summary = checkpoints.load_model(cfg, str(tmp_path / "mm.pth"))
    assert summary["loaded"] == summary["total"] and not summary["unexpected"]


def test_mask_ratio_is_exact_and_seeded():
    m = masked.masks_for(3, (14, 14), 0.75, seed=1)
    assert m.sum(1).tolist() == [147, 147, 147]
    assert torch.equal(m, masked.masks_for(3, (14, 14), 0.75, seed=1))
    assert not torch.equal(m[0], m[1])


def test_norm_pix_round_trip():
    from visctl.mim_models import patchify

    tile = torch.rand(1, 3, 8, 8)
    img = tile.repeat(1, 1, 4, 4)  # every patch has the same statistics
    target = patchify(img, 8)
    t = target.reshape(1, 16, 64, 3)
    normed = ((t - t.mean(2, keepdim=True)) / t.var(2, keepdim=True, unbiased=False).add(1e-6).sqrt()).reshape(1, 16, -1)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, :12] = True
    back = masked.unnormalize_norm_pix(normed, target, mask)
    assert torch.allclose(back, target, atol=1e-4)


def test_demo_mae_beats_the_mean_fill(invoke, tmp_path):
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    for s in range(300_000, 300_012):
        scene = make_scene(s, 64, 1 + s % 2, 10, 26, clutter=False)  # as examples/train_mae.py draws them
        cv2.imwrite(str(folder / f"{s}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    result = invoke("recon", folder, MAE_CFG, "--seed", "0", "--save-raw", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "o")
    mse = np.mean([i["masked_patch_mse"] for i in m["inputs"]])
    fill = np.mean([i["mean_fill_mse"] for i in m["inputs"]])
    assert mse * 2 <= fill, (mse, fill)
    assert all(i["masked_share"] == 0.75 for i in m["inputs"])
    again = invoke("recon", folder, MAE_CFG, "--seed", "0", "-o", tmp_path / "p")
    assert again.exit_code == 0
    assert [i["masked_patch_mse"] for i in manifest(tmp_path / "p")["inputs"]] == [i["masked_patch_mse"] for i in m["inputs"]]
    raw = np.load(tmp_path / "o" / next(o["path"] for o in m["outputs"] if o["kind"] == "array"))
    assert raw.shape == (64, 64, 3) and raw.dtype == np.float32


def test_any_patch_multiple_size_and_mask_file(invoke, tmp_path):
    import cv2

    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), make_scene(300_100, (64, 96), 2, 10, 24, clutter=False).image)
    mask = np.zeros((8, 12), bool)
    mask[:, :6] = True
    np.save(tmp_path / "mask.npy", mask)
    result = invoke("recon", path, MAE_CFG, "--cfg-options", "test_pipeline.1.scale=[96,64]", "--mask-file",
                    tmp_path / "mask.npy", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert manifest(tmp_path / "o")["inputs"][0]["masked_share"] == 0.5
    bad = invoke("recon", path, MAE_CFG, "--cfg-options", "test_pipeline.1.scale=[90,64]", "-o", tmp_path / "b")
    assert bad.exit_code == 2 and "multiple of the patch size" in bad.stderr


def test_simmim_and_maskfeat_end_to_end(invoke, image_file, tmp_path):
    simmim = tmp_path / "simmim.py"
    simmim.write_text(
        "model = dict(type='visctl.mim_models:simmim_vit', img_size=64, patch_size=8, embed_dim=64, depth=2, "
        "num_heads=4)\n"
        "test_pipeline = [dict(type='Resize', scale=(64, 64)), dict(type='SimMIMMaskGenerator', input_size=64, "
        "mask_patch_size=16, model_patch_size=8, mask_ratio=0.5)]\n")
    result = invoke("recon", image_file, simmim, "--use-vis-pipeline", "-o", tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert manifest(tmp_path / "s")["inputs"][0]["masked_share"] == 0.5
    maskfeat = tmp_path / "maskfeat.py"
    maskfeat.write_text("model = dict(type='visctl.mim_models:maskfeat_vit', img_size=64, patch_size=16, "
                        "embed_dim=64, depth=2, num_heads=4)\n"
                        "test_pipeline = [dict(type='Resize', scale=(64, 64))]\n")
    result = invoke("recon", image_file, maskfeat, "--mask-ratio", "0.5", "-o", tmp_path / "f")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "f")
    assert m["params"]["model"] == "maskfeat" and m["inputs"][0]["masked_share"] == 0.5
    no_mask = invoke("recon", image_file, maskfeat, "--use-vis-pipeline", "-o", tmp_path / "x")
    assert no_mask.exit_code == 2 and "makes no mask" in no_mask.stderr


def test_norm_pix_patch_stats_restore_each_patch_from_its_own_statistics():
    """--norm-pix-stats patch: a prediction normalised as MAEPretrainHead normalises its target (each patch over
    all its values) comes back as the patch itself; --norm-pix-stats visible uses only the visible patches."""
    import torch

    from visctl import masked

    target = torch.rand(2, 16, 4 * 4 * 3)
    mean = target.mean(-1, keepdim=True)
    pred = (target - mean) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    torch.testing.assert_close(masked.unnormalize_own_patch(pred, target), target, atol=1e-5, rtol=0)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :8] = True
    visible = masked.unnormalize_norm_pix(pred, target, mask)
    assert not torch.allclose(visible[:, :8], target[:, :8], atol=1e-3)  # what the model could not know stays unknown


def test_a_models_own_mask_is_drawn_under_the_generator_lock():
    """The reader threads seed and restore numpy's and torch's global generators for the pipeline's random steps
    under one lock; an OpenMMLab model's own mask draw (seeded globals too) takes the same lock, so a batch read
    ahead cannot reseed the generator between the seed and the draw."""
    import numpy as np
    import torch

    from visctl import openmmlab_mim
    from visctl.transforms import generator_lock

    with openmmlab_mim._numpy_seeded(3):
        assert generator_lock().locked()
        first = np.random.rand()
    with openmmlab_mim._torch_seeded(3, torch.device("cpu")):
        assert generator_lock().locked()
        drawn = torch.rand(1)
    assert not generator_lock().locked()
    np.random.seed(3)
    torch.manual_seed(3)
    assert first == np.random.rand() and torch.equal(drawn, torch.rand(1))
