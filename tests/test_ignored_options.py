"""Option and config values the run cannot use (issue 24, items 14 and 15): a value that contradicts another
option is one ``error:`` + ``hint:`` (exit 2, before the model loads); a value that only has no effect is one
true ``warning:``, and the manifest's params do not record it as used."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DEMO_CFG, ROOT, assert_one_error, manifest

DETECTOR = ROOT / "examples" / "demo_detector" / "config.py"
MAE = ROOT / "examples" / "demo_mae" / "config.py"
LOADED = "loaded 26/26 tensors"  # the demo classifier's checkpoint summary: the model was loaded


def _warnings(result, needle: str) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("warning:") and needle in ln]


@pytest.fixture(scope="module")
def dataset_cfg(tmp_path_factory) -> Path:
    """The demo classifier's config over 8 generated images (train and test)."""
    from visctl.shapes import write_scenes

    folder = tmp_path_factory.mktemp("ignored")
    write_scenes(folder / "data", range(300_000, 300_008), 64, 1)
    cfg = folder / "cls.py"
    cfg.write_text(f"_base_ = ['{DEMO_CFG}']\n_data = '{folder / 'data'}'\n"
                   "train_dataloader = dict(batch_size=4, dataset=dict(type='CustomDataset', data_root=_data))\n"
                   "test_dataloader = dict(batch_size=4, dataset=dict(type='CustomDataset', data_root=_data))\n")
    return cfg


# --- cam / boxam ------------------------------------------------------------------------------------------------

def test_cam_topk_with_target_category_is_refused_before_the_model_loads(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, DEMO_CFG, "-c", "1", "--topk", "3", "-o", tmp_path / "o")
    assert_one_error(result, "--topk 3", "--target-category")
    assert LOADED not in result.stderr
    import visctl
    from visctl.errors import ArgumentError

    with pytest.raises(ArgumentError, match="topk=3"):
        visctl.cam(str(image_file), str(DEMO_CFG), target_category=1, topk=3)


def test_cam_ratio_without_ablationcam_warns(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, DEMO_CFG, "--ratio-channels-to-ablate", "0.3", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    lines = _warnings(result, "--ratio-channels-to-ablate 0.3 has no effect")
    assert len(lines) == 1 and "gradcam" in lines[0], result.stderr


def test_boxam_ratio_without_ablationcam_warns(invoke, tmp_path):
    from PIL import Image

    from visctl import shapes

    img = tmp_path / "scene.png"
    Image.fromarray(shapes.make_scene(200_000, 128, n_objects=3, min_side=14, max_side=36).image).save(img)
    result = invoke("boxam", img, DETECTOR, "-m", "layercam", "--ratio-channels-to-ablate", "0.3",
                    "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    lines = _warnings(result, "--ratio-channels-to-ablate 0.3 has no effect")
    assert len(lines) == 1 and "layercam" in lines[0], result.stderr


def test_vit_like_on_a_spatial_layer_warns_and_is_not_recorded(invoke, image_file, tmp_path):
    out = tmp_path / "o"
    result = invoke("cam", image_file, DEMO_CFG, "--vit-like", "--num-extra-tokens", "2", "-o", out)
    assert result.exit_code == 0, result.output
    lines = _warnings(result, "had no effect")
    assert len(lines) == 1, result.stderr
    assert "--vit-like" in lines[0] and "--num-extra-tokens 2" in lines[0] and "(1, 64," in lines[0]
    assert manifest(out)["params"]["vit_like"] is False


# --- featmap ----------------------------------------------------------------------------------------------------

def test_featmap_options_without_effect_warn(invoke, image_file, tmp_path):
    result = invoke("featmap", image_file, DEMO_CFG, "--topk", "8", "--no-overlaid", "--alpha", "0.9",
                    "--repo", "mmdet", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert len(_warnings(result, "--topk 8 has no effect")) == 1, result.stderr
    assert len(_warnings(result, "--alpha 0.9 has no effect")) == 1, result.stderr
    assert len(_warnings(result, "--repo mmdet has no effect")) == 1, result.stderr
    assert manifest(tmp_path / "o")["params"]["topk"] is None


def test_featmap_topk_above_the_channels_records_the_number_drawn(invoke, image_file, tmp_path):
    out = tmp_path / "o"
    result = invoke("featmap", image_file, DEMO_CFG, "--channel-reduction", "none", "--topk", "100", "-o", out)
    assert result.exit_code == 0, result.output
    lines = _warnings(result, "--topk 100")
    assert len(lines) == 1 and "(64)" in lines[0], result.stderr
    assert manifest(out)["params"]["topk"] == 64


# --- recon, pipeline, browse, lr --------------------------------------------------------------------------------

def test_recon_norm_pix_stats_without_norm_pix_warns(invoke, image_file, tmp_path):
    result = invoke("recon", image_file, MAE, "--norm-pix-stats", "visible", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert len(_warnings(result, "--norm-pix-stats visible has no effect")) == 1, result.stderr


@pytest.mark.parametrize("option", [("--min-edge-length", "10"), ("--max-edge-length", "500")])
def test_pipeline_edge_lengths_need_adaptive(invoke, dataset_cfg, tmp_path, option):
    result = invoke("pipeline", dataset_cfg, *option, "-n", "1", "-o", tmp_path / "o")
    assert_one_error(result, option[0], "--adaptive")
    ok = invoke("pipeline", dataset_cfg, *option, "--adaptive", "-n", "1", "-o", tmp_path / "a")
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("command", ["pipeline", "browse"])
def test_skip_type_not_in_the_pipeline_warns(invoke, dataset_cfg, tmp_path, command):
    out = tmp_path / "o"
    result = invoke(command, dataset_cfg, "--skip-type", "Nosuch", "-n", "1", "-o", out)
    assert result.exit_code == 0, result.output
    lines = _warnings(result, "--skip-type Nosuch")
    assert len(lines) == 1, result.stderr
    # the pipeline's own types are named, and the documented behaviour (the list replaces the default) is said
    assert "LoadImageFromFile, Resize, RandomFlip, PackInputs" in lines[0] and "replaces the default" in lines[0]
    assert "PackInputs is drawn" in lines[0]
    assert manifest(out)["params"]["skip_type"] == ["Nosuch"]
    known = invoke(command, dataset_cfg, "--skip-type", "PackInputs", "-n", "1", "-o", tmp_path / "k")
    assert known.exit_code == 0 and not _warnings(known, "--skip-type"), known.stderr


def test_lr_log_scale_of_another_parameter_is_recorded(invoke, dataset_cfg, tmp_path):
    out = tmp_path / "o"
    result = invoke("lr", dataset_cfg, "-p", "wd", "--log-scale", "-o", out)
    assert result.exit_code == 0, result.output
    assert manifest(out)["params"]["log_scale"] == "weight decay axis"


# --- config values ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["'yes'", "'no'", "[1]"])
def test_to_rgb_must_be_a_bool(invoke, image_file, tmp_path, value):
    cfg = tmp_path / "rgb.py"
    cfg.write_text(f"_base_ = ['{DEMO_CFG}']\ndata_preprocessor = dict(mean=[0,0,0], std=[1,1,1], to_rgb={value})\n")
    result = invoke("cam", image_file, cfg, "-o", tmp_path / "o")
    assert_one_error(result, "data_preprocessor.to_rgb")
    assert LOADED not in result.stderr


def test_a_child_test_pipeline_that_does_not_run_is_warned(invoke, image_file, tmp_path):
    cfg = tmp_path / "child.py"
    cfg.write_text(f"_base_ = ['{DEMO_CFG}']\ntest_pipeline = [dict(type='LoadImageFromFile'), "
                   "dict(type='Resize', scale=(16, 16)), dict(type='PackInputs')]\n")
    result = invoke("cam", image_file, cfg, "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    lines = _warnings(result, "test_pipeline differs")
    assert len(lines) == 1 and "test_dataloader.dataset.pipeline runs" in lines[0], result.stderr
    # the base alone (both keys the same list) and a child that sets both say nothing
    same = tmp_path / "same.py"
    same.write_text(f"_base_ = ['{DEMO_CFG}']\ntest_pipeline = [dict(type='LoadImageFromFile'), "
                    "dict(type='Resize', scale=(16, 16)), dict(type='PackInputs')]\n"
                    "test_dataloader = dict(dataset=dict(pipeline=test_pipeline))\n")
    for quiet in (DEMO_CFG, same):
        ok = invoke("cam", image_file, quiet, "-o", tmp_path / "q")
        assert ok.exit_code == 0 and not _warnings(ok, "test_pipeline"), ok.stderr


def test_cfg_options_hint_names_the_pipeline_that_runs(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, DEMO_CFG, "--cfg-options", "noequals", "-o", tmp_path / "o")
    _, hint = assert_one_error(result, "key=value")
    assert "test_dataloader.dataset.pipeline." in hint and "'test_pipeline." not in hint


def test_segmentation_run_says_which_classification_options_it_does_not_use(invoke, image_file, tmp_path):
    segmenter = ROOT / "examples" / "demo_segmenter" / "config.py"
    result = invoke("cam", image_file, segmenter, "--topk", "3", "--eigen-smooth", "--panel-size", "300",
                    "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    lines = _warnings(result, "had no effect")
    assert len(lines) == 1 and all(o in lines[0] for o in ("--topk 3", "--eigen-smooth", "--panel-size 300"))
    assert "topk" not in manifest(tmp_path / "o")["params"]
