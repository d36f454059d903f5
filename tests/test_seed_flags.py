"""The seeds' own flags, each doing what the seed tools' users expect: tsne, recon, lr, browse, boxam, slice."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_CFG, ROOT, manifest

DEMO_CKPT = ROOT / "examples" / "demo_classifier" / "classifier.pth"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
MAE_CKPT = ROOT / "examples" / "demo_mae" / "mae.pth"
DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """An ImageFolder of 24 generated 80 px shapes."""
    from visctl.shapes import write_scenes

    folder = tmp_path_factory.mktemp("seed_flags")
    write_scenes(folder, range(100_000, 100_024))
    return folder


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


# ---- tsne ----------------------------------------------------------------------------------------------

def _tsne(invoke, data_root, *args):
    return invoke("tsne", DEMO_CFG, "--cfg-options", f"test_dataloader.dataset.data_root={data_root}",
                  "--max-num-samples", "4", "--method", "pca", *args)


def test_tsne_checkpoint_option_loads_the_weights_and_work_dir_is_the_out_dir(invoke, data_root, tmp_path):
    no_default = ("--cfg-options", "load_from=None")  # only the command line can give weights
    pos = invoke("tsne", DEMO_CFG, DEMO_CKPT, "--cfg-options", f"test_dataloader.dataset.data_root={data_root}",
                 "--max-num-samples", "4", "--method", "pca", *no_default, "-o", tmp_path / "pos")
    opt = _tsne(invoke, data_root, "--checkpoint", DEMO_CKPT, *no_default, "--work-dir", tmp_path / "work")
    bare = _tsne(invoke, data_root, *no_default, "--work_dir", tmp_path / "bare")
    assert pos.exit_code == opt.exit_code == bare.exit_code == 0, pos.output + opt.output + bare.output
    f_pos, f_opt, f_bare = (np.load(tmp_path / d / "features_backbone_layer4.npy") for d in ("pos", "work", "bare"))
    assert np.array_equal(f_pos, f_opt)
    assert not np.allclose(f_opt, f_bare)  # without the checkpoint: random weights
    assert manifest(tmp_path / "work")["params"]["checkpoint"] == str(DEMO_CKPT)
    both = invoke("tsne", DEMO_CFG, DEMO_CKPT, "--checkpoint", DEMO_CKPT, "-o", tmp_path / "x")
    assert both.exit_code == 2 and "two checkpoints" in both.stderr
    two_dirs = _tsne(invoke, data_root, "-o", tmp_path / "a", "--work-dir", tmp_path / "b")
    assert two_dirs.exit_code == 2 and "--work-dir" in two_dirs.stderr


def test_tsne_vis_stage_picks_backbone_neck_and_pre_logits(invoke, data_root, tmp_path):
    feats = {}
    for stage in ("backbone", "neck", "pre_logits"):
        result = _tsne(invoke, data_root, "--vis-stage", stage, "-o", tmp_path / stage)
        assert result.exit_code == 0, result.output
        feats[stage] = np.load(tmp_path / stage / f"features_{stage}.npy")
        assert any(n.startswith("--vis-stage") for n in manifest(tmp_path / stage)["notes"])
    layer4 = _tsne(invoke, data_root, "--target-layers", "backbone.layer4", "-o", tmp_path / "l4")
    assert layer4.exit_code == 0
    # the demo classifier: backbone = layer1..layer4; neck = global average pool; head.fc's input = the neck's
    assert np.array_equal(feats["backbone"], np.load(tmp_path / "l4" / "features_backbone_layer4.npy"))
    assert np.allclose(feats["backbone"], feats["neck"], atol=1e-6)  # --pooling avg of the map = the neck's GAP
    assert np.array_equal(feats["neck"], feats["pre_logits"])


def test_tsne_pre_logits_is_the_input_of_the_last_linear_layer():
    import torch

    from visctl import embedding, featmaps
    from visctl.choices import VisStage

    model = torch.nn.Sequential()
    model.add_module("backbone", torch.nn.Linear(5, 6))
    model.add_module("head", torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)))
    label, path, take_input, _ = embedding.vis_stage_layer(model, VisStage.pre_logits, lambda n: None, "backbone")
    assert (label, path, take_input) == ("pre_logits", "head.2", True)
    x = torch.randn(4, 5)
    got = featmaps.capture(model, {label: model.head[2]}, x, inputs_of=frozenset([label]))[label]
    assert torch.allclose(got, model.head[1](model.head[0](model.backbone(x))))


def test_tsne_test_cfg_takes_the_other_configs_test_dataloader(invoke, data_root, tmp_path):
    other = tmp_path / "tsne_data.py"
    other.write_text(f"test_dataloader = dict(dataset=dict(type='CustomDataset', data_root='{data_root}', "
                     "pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64))]))\n")
    # the model's own config points nowhere: only --test-cfg can give the data
    result = invoke("tsne", DEMO_CFG, "--cfg-options", "test_dataloader.dataset.data_root=/nonexistent",
                    "--test-cfg", other, "--max-num-samples", "3", "--method", "pca", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "o")
    per_class = [min(3, len(list(d.iterdir()))) for d in data_root.iterdir()]
    assert m["params"]["samples"] == sum(per_class) and all(str(data_root) in i["path"] for i in m["inputs"])


def test_tsne_n_components_init_and_sklearn_options(invoke, data_root, tmp_path):
    args = ("--method", "tsne", "--n-iter", "300", "--n-components", "3")
    a = _tsne(invoke, data_root, *args, "--init", "random", "--n-iter-without-progress", "50", "--deterministic",
              "-o", tmp_path / "a")
    b = _tsne(invoke, data_root, *args, "--init", "pca", "-o", tmp_path / "b")
    assert a.exit_code == b.exit_code == 0, a.output + b.output
    rows_a, rows_b = _rows(tmp_path / "a" / "tsne_backbone_layer4.csv"), _rows(tmp_path / "b" / "tsne_backbone_layer4.csv")
    assert list(rows_a[0])[-3:] == ["x", "y", "dim2"] and len(rows_a) == manifest(tmp_path / "a")["params"]["samples"]
    coords = np.array([[float(r[k]) for k in ("x", "y", "dim2")] for r in rows_a])
    assert np.ptp(coords, axis=0).min() > 0  # three real dimensions
    assert not np.allclose(coords, [[float(r[k]) for k in ("x", "y", "dim2")] for r in rows_b])  # init matters
    m = manifest(tmp_path / "a")
    assert m["params"]["n_components"] == 3 and "openTSNE" in m["quality"]["backbone.layer4"]["method"]
    # openTSNE has no early stop: said once on stderr and in the manifest; --deterministic is a no-op
    assert a.stderr.count("--n-iter-without-progress does not apply") == 1
    assert any("--n-iter-without-progress" in n for n in m["notes"]) and any("--deterministic" in n for n in m["notes"])


def test_tsne_sklearn_arm_gets_init_dims_and_early_stop(monkeypatch):
    import sys

    from sklearn.manifold import TSNE

    from visctl import embedding

    monkeypatch.setitem(sys.modules, "openTSNE", None)  # import fails: the scikit-learn arm
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    got, how = embedding.embed(x, embedding.EmbedMethod.tsne, perplexity=5, n_iter=300, n_components=3,
                               init="random", n_iter_without_progress=60, seed=1)
    ref = TSNE(n_components=3, perplexity=5, early_exaggeration=12.0, learning_rate="auto", init="random",
               random_state=1, n_jobs=1, max_iter=300, n_iter_without_progress=60).fit_transform(x)
    assert "scikit-learn" in how and np.allclose(got, ref, atol=1e-5)


# ---- recon ---------------------------------------------------------------------------------------------

def test_recon_seed_line_writes_exactly_the_out_file(invoke, image_file, tmp_path):
    out = tmp_path / "out.jpg"
    result = invoke("recon", MAE_CFG, "--checkpoint", MAE_CKPT, "--img-path", image_file, "--out-file", out,
                    "--norm-pix", "--cfg-options", "load_from=None", "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.read_bytes()[:2] == b"\xff\xd8"  # a JPEG, by its name
    assert not list((tmp_path / "run").glob("*.png"))  # the figure went to --out-file only
    m = manifest(tmp_path / "run")
    pos = invoke("recon", image_file, MAE_CFG, MAE_CKPT, "--norm-pix", "--cfg-options", "load_from=None",
                 "-o", tmp_path / "pos")
    bare = invoke("recon", "--img-path", image_file, MAE_CFG, "--norm-pix", "--cfg-options", "load_from=None",
                  "-o", tmp_path / "bare")
    assert pos.exit_code == bare.exit_code == 0
    mse = m["inputs"][0]["masked_patch_mse"]
    assert mse == manifest(tmp_path / "pos")["inputs"][0]["masked_patch_mse"]  # --checkpoint loaded the weights
    # random weights draw something else (not necessarily worse: --norm-pix gives every masked patch its own
    # mean and std, as the seed's script does, which flatters any model)
    assert mse != manifest(tmp_path / "bare")["inputs"][0]["masked_patch_mse"]
    both = invoke("recon", image_file, MAE_CFG, MAE_CKPT, "--checkpoint", MAE_CKPT, "-o", tmp_path / "x")
    assert both.exit_code == 2 and "two checkpoints" in both.stderr
    second = tmp_path / "second.png"
    second.write_bytes(image_file.read_bytes())
    two = invoke("recon", MAE_CFG, "--img-path", image_file, "--img-path", second, "--out-file", out,
                 "-o", tmp_path / "y")
    assert two.exit_code == 2 and "--out-file names one file" in two.stderr


def test_recon_target_generator_shows_maskfeats_hog_target(invoke, image_file, tmp_path):
    import cv2

    maskfeat = tmp_path / "maskfeat.py"
    maskfeat.write_text("model = dict(type='visctl.mim_models:maskfeat_vit', img_size=64, patch_size=16, "
                        "embed_dim=64, depth=2, num_heads=4)\ntest_pipeline = [dict(type='Resize', scale=(64, 64))]\n")
    plain = invoke("recon", image_file, maskfeat, "--out-file", tmp_path / "plain.png", "-o", tmp_path / "p")
    target = invoke("recon", image_file, maskfeat, "--target-generator", "--out-file", tmp_path / "t.png",
                    "-o", tmp_path / "t")
    assert plain.exit_code == target.exit_code == 0, plain.output + target.output
    a, b = cv2.imread(str(tmp_path / "plain.png")), cv2.imread(str(tmp_path / "t.png"))
    assert b.shape[1] < a.shape[1] * 0.8  # three panels (target, masked, prediction): no RGB original
    # the first panel is the HOG glyph picture (mostly black), not the grey-background RGB image
    first_a, first_b = a[-a.shape[1] // 5:, : a.shape[1] // 5], b[-b.shape[1] // 4:, : b.shape[1] // 4]
    assert first_b.mean() < first_a.mean()
    assert manifest(tmp_path / "t")["params"]["target_generator"] is True
    mae = invoke("recon", image_file, MAE_CFG, "--target-generator", "-o", tmp_path / "m")
    assert mae.exit_code == 0 and mae.stderr.count("--target-generator does not apply to MAE") == 1
    assert any("--target-generator" in n for n in manifest(tmp_path / "m")["notes"])


# ---- lr ------------------------------------------------------------------------------------------------

LR_CFG = ("optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))\n"
          "param_scheduler = [dict(type='CosineAnnealingLR', T_max=20, by_epoch=False),\n"
          "                   dict(type='CosineAnnealingMomentum', T_max=20, eta_min=0.5, by_epoch=False)]\n"
          "train_cfg = dict(by_epoch=False, max_iters=20)\ntrain_dataloader = dict(batch_size=4)\n")


def test_lr_parameter_plots_one_panel_of_that_column(invoke, tmp_path, monkeypatch):
    from visctl import schedules

    cfg = tmp_path / "cfg.py"
    cfg.write_text(LR_CFG)
    figures = []
    plot = schedules.plot
    monkeypatch.setattr(schedules, "plot", lambda *a, **k: figures.append(plot(*a, **k)) or figures[-1])
    for parameter, column, label in (("momentum", "momentum", "momentum"), ("wd", "weight_decay", "weight decay"),
                                     ("lr", "lr", "learning rate")):
        out = tmp_path / parameter
        result = invoke("lr", cfg, "-p", parameter, "--csv", out / "v.csv", "--not-show", "--log-level", "INFO",
                        "-o", out)
        assert result.exit_code == 0, result.output
        values = np.array([float(r[column]) for r in _rows(out / "v.csv")])
        (ax,) = figures[-1].axes
        assert ax.get_ylabel() == label
        (line,) = ax.get_lines()
        assert np.allclose(line.get_ydata(), values, rtol=1e-6, atol=0)  # the CSV keeps 10 significant digits
        assert {"lr", "momentum", "weight_decay"} <= set(_rows(out / "v.csv")[0])  # the CSV keeps everything
    assert np.ptp(values) > 0
    default = invoke("lr", cfg, "-o", tmp_path / "all")
    assert default.exit_code == 0 and len(figures[-1].axes) == 2  # lr and the changing momentum
    assert invoke("lr", cfg, "--log-level", "LOUD", "-o", tmp_path / "x").exit_code == 2
    adagrad = tmp_path / "adagrad.py"  # an optimizer with neither momentum nor betas
    adagrad.write_text(LR_CFG.replace("type='SGD', lr=0.1, momentum=0.9", "type='Adagrad', lr=0.1").replace(
        ",\n                   dict(type='CosineAnnealingMomentum', T_max=20, eta_min=0.5, by_epoch=False)", ""))
    bad = invoke("lr", adagrad, "-p", "momentum", "-o", tmp_path / "y")
    assert bad.exit_code == 2 and "no momentum" in bad.stderr


# ---- browse --------------------------------------------------------------------------------------------

def test_browse_skip_type_drops_that_transform(invoke, data_root, tmp_path):
    args = ("browse", DEMO_CFG, "--cfg-options", f"train_dataloader.dataset.data_root={data_root}", "-n", "3")
    default = invoke(*args, "-o", tmp_path / "d")
    skipped = invoke(*args, "--skip-type", "Resize", "RandomFlip", "-o", tmp_path / "s")
    assert default.exit_code == skipped.exit_code == 0, default.output + skipped.output
    assert {tuple(i["shape"]) for i in manifest(tmp_path / "d")["inputs"]} == {(64, 64)}
    assert {tuple(i["shape"]) for i in manifest(tmp_path / "s")["inputs"]} == {(80, 80)}  # the files' own size
    assert manifest(tmp_path / "s")["params"]["skip_type"] == ["Resize", "RandomFlip"]


def _png(path: Path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path))[..., ::-1]


def test_browse_mmpretrain_flags_mean_mmpretrains_thing(invoke, data_root, tmp_path):
    """mmpretrain's browse_dataset.py: -m/--mode one figure per sample, -r/--rescale-factor (original mode), -c/
    --channel-order; visctl's own grid keeps --rows/--cols (never -r 2 as two rows)."""
    args = ("browse", DEMO_CFG, "--cfg-options", f"train_dataloader.dataset.data_root={data_root}", "-n", "3")
    rescaled = invoke(*args, "-m", "original", "-r", "2", "-o", tmp_path / "r")
    rgb = invoke(*args, "--mode", "original", "--rescale-factor", "2", "-c", "RGB", "-o", tmp_path / "c")
    bgr = invoke(*args, "-m", "original", "-r", "2", "--channel-order", "BGR", "-o", tmp_path / "b")
    assert rescaled.exit_code == rgb.exit_code == bgr.exit_code == 0, rescaled.output + rgb.output + bgr.output
    outputs = manifest(tmp_path / "r")["outputs"]
    assert len(outputs) == 3 and manifest(tmp_path / "r")["params"]["rescale_factor"] == 2.0
    for o in outputs:
        mine = _png(tmp_path / "r" / o["path"])
        assert mine.shape == (160, 160, 3)  # the 80 px files, mmcv.imrescale by 2, the label drawn on them
        # -c names the images' channel order: BGR is what LoadImageFromFile gives (true colours), RGB swaps them
        assert np.array_equal(_png(tmp_path / "b" / o["path"]), mine)
        assert np.array_equal(_png(tmp_path / "c" / o["path"]), mine[..., ::-1])
    for mode in ("transformed", "concat", "pipeline"):
        result = invoke(*args, "-m", mode, "-o", tmp_path / mode)
        assert result.exit_code == 0, result.output
        assert [Path(o["path"]).name.endswith(f"_{mode}.png") for o in manifest(tmp_path / mode)["outputs"]] == [True] * 3
    grid = invoke(*args, "--rows", "1", "--cols", "2", "-o", tmp_path / "g")
    assert grid.exit_code == 0 and len(manifest(tmp_path / "g")["outputs"]) == 2  # 3 samples, 2 a page
    two_rows = invoke(*args, "-r", "2", "-o", tmp_path / "x")
    assert two_rows.exit_code == 2 and "--mode original" in two_rows.stderr and "--rows" in two_rows.stderr
    rows_per_sample = invoke(*args, "-m", "concat", "--rows", "2", "-o", tmp_path / "z")
    assert rows_per_sample.exit_code == 2 and "one figure per sample" in rows_per_sample.stderr
    bad_order = invoke(*args, "-c", "4", "-o", tmp_path / "y")
    assert bad_order.exit_code == 2 and "'4' is not one of" in bad_order.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_pipeline_takes_mmpretrains_flags_too(invoke, data_root, tmp_path):
    args = ("pipeline", DEMO_CFG, "--cfg-options", f"train_dataloader.dataset.data_root={data_root}")
    result = invoke(*args, "--show-number", "2", "-m", "original", "-r", "0.5", "-c", "RGB", "-i", "0",
                    "-o", tmp_path / "p")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "p")
    assert len(m["outputs"]) == 2 and m["params"]["channel_order"] == "RGB"
    assert {_png(tmp_path / "p" / o["path"]).shape for o in m["outputs"]} == {(40, 40, 3)}
    concat = invoke(*args, "-n", "1", "-m", "concat", "-r", "2", "-o", tmp_path / "c")
    assert concat.exit_code == 2 and "--mode original" in concat.stderr
    both = invoke(*args, "-n", "1", "-m", "original", "-r", "2", "--adaptive", "-o", tmp_path / "a")
    assert both.exit_code == 2 and "give one" in both.stderr


# ---- boxam ---------------------------------------------------------------------------------------------

def test_boxam_max_shape_caps_the_map_as_mmyolo(invoke, image_file, tmp_path, monkeypatch):
    import pytorch_grad_cam as gc
    import torch
    from mmengine.config import Config

    from visctl import config, images, transforms
    from visctl.checkpoints import load_model

    result = invoke("boxam", image_file, DET_CFG, "--method", "eigencam", "--max-shape", "5", "--save-raw",
                    "-o", tmp_path / "c")
    full = invoke("boxam", image_file, DET_CFG, "--method", "eigencam", "--max-shape", "-1", "--save-raw",
                  "-o", tmp_path / "f")
    assert result.exit_code == full.exit_code == 0, result.output + full.output
    capped = np.load(next((tmp_path / "c").glob("*_boxam_all.npy")))
    uncapped = np.load(next((tmp_path / "f").glob("*_boxam_all.npy")))
    # the reference: grad-cam's EigenCAM on the neck with mmyolo's reshape_transform (boxam_utils.py:
    # `interpolate(torch.abs(feat), max_shape, mode='bilinear')` with max_shape = min(map, cap)), without the abs
    cfg = Config.fromfile(str(DET_CFG))
    model, _ = load_model(cfg, None)
    mean, std, rgb = config.normalization(cfg)
    img = images.read_image(image_file)
    batch = transforms.to_tensor([transforms.run_pipeline(img, config.test_pipeline(cfg))], mean, std, rgb)

    def cap(t):
        return torch.nn.functional.interpolate(t, (min(t.shape[2], 5), min(t.shape[3], 5)), mode="bilinear")
    from test_cam import _negated_projections

    for reshape, got in ((cap, capped), (None, uncapped)):
        # grad-cam leaves the principal component's sign arbitrary, visctl orients it: equal to one of the two
        ref = gc.EigenCAM(model, [model.neck], reshape_transform=reshape)(batch, targets=[lambda out: 0])[0]
        with _negated_projections(monkeypatch):
            neg = gc.EigenCAM(model, [model.neck], reshape_transform=reshape)(batch, targets=[lambda out: 0])[0]
        assert any(np.allclose(got[: r.shape[0], : r.shape[1]], r, atol=1e-4) for r in (ref, neg))
    assert not np.allclose(capped, uncapped, atol=1e-2)
    assert manifest(tmp_path / "c")["params"]["max_shape"] == [5, 5]
    bad = invoke("boxam", image_file, DET_CFG, "--max-shape", "0", "-o", tmp_path / "x")
    assert bad.exit_code == 2 and "--max-shape" in bad.stderr


# ---- slice ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_image(tmp_path_factory) -> Path:
    import cv2

    from visctl.shapes import make_scene

    scene = make_scene(7, 256, n_objects=8, min_side=12, max_side=24)
    path = tmp_path_factory.mktemp("big") / "big.png"
    cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return path


def test_slice_save_patch_writes_one_picture_per_tile(invoke, big_image, tmp_path):
    from visctl import detection

    out = tmp_path / "o"
    result = invoke("slice", big_image, DET_CFG, "--patch-size", "128", "--debug", "--save-patch",
                    "--merge-nms-type", "nms", "-o", out)
    assert result.exit_code == 0, result.output
    tiles = detection.tiles(256, 256, 128, 0.25)
    files = sorted((out / "big_patch").iterdir())
    assert len(files) == len(tiles) == manifest(out)["inputs"][0]["tiles"]
    assert {f.name for f in files} == {f"big_slice_{i}_result.png" for i in range(len(tiles))}
    captions = [o["caption"] for o in manifest(out)["outputs"] if "tile" in o]
    assert sum(int(c.rsplit(", ", 1)[1].split()[0]) for c in captions) >= manifest(out)["inputs"][0]["boxes"]
    plain = invoke("slice", big_image, DET_CFG, "--patch-size", "128", "--save-patch", "-o", tmp_path / "p")
    assert plain.exit_code == 0 and "--save-patch does not apply without --debug" in plain.stderr
    assert not (tmp_path / "p" / "big_patch").exists()
    # --merge-nms-type nms is --merge nms
    assert (out / "results.json").read_text() == (tmp_path / "p" / "results.json").read_text()


def test_slice_merge_nms_type_tta_and_deploy(invoke, big_image, tmp_path):
    import torch

    from visctl import building

    soft = invoke("slice", big_image, DET_CFG, "--merge-nms-type", "soft_nms", "-o", tmp_path / "a")
    assert soft.exit_code == 2 and "only nms is supported" in soft.stderr
    tta = invoke("slice", big_image, DET_CFG, "--tta", "-o", tmp_path / "b")
    assert tta.exit_code == 2 and "--tta" in tta.stderr and "hint:" in tta.stderr
    deploy = invoke("slice", big_image, DET_CFG, "--patch-size", "128", "--deploy", "-o", tmp_path / "c")
    assert deploy.exit_code == 0 and "--deploy does not apply" in deploy.stderr
    assert any("--deploy" in n for n in manifest(tmp_path / "c")["notes"])

    class Rep(torch.nn.Module):
        deployed = False

        def switch_to_deploy(self):
            self.deployed = True
    model = torch.nn.Sequential(Rep(), torch.nn.Conv2d(1, 1, 1), torch.nn.Sequential(Rep()))
    assert building.switch_to_deploy(model) == ["0", "2.0"] and model[0].deployed and model[2][0].deployed
