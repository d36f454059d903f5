"""Models built for another input size (timm's img_size) and import-path models beside the config."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("timm")


def test_timm_model_built_for_another_size_gets_its_own_size(invoke, image_file, tmp_path):
    # no pipeline: the model's own 48 px (its strict patch embedding), not 224 (which asserts inside timm)
    result = invoke("cam", image_file, "timm.vit_tiny_patch16_224", "-o", tmp_path, "--json",
                    "--cfg-options", "model.img_size=48", "model.num_classes=3")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert any("input size 48x48" in n for n in m["notes"])
    assert any("3x3 grid" in n for n in m["notes"])  # 48 / 16 patches a side


def test_wrong_input_size_for_a_strict_model_is_one_error_naming_the_fix(invoke, image_file, tmp_path):
    result = invoke("featmap", image_file, "timm.vit_tiny_patch16_224", "-o", tmp_path,
                    "--cfg-options", "model.img_size=48", "model.num_classes=3", "visctl.input_size=64")
    assert result.exit_code == 2
    assert "takes 48x48 inputs only" in result.stderr and "visctl.input_size=48" in result.stderr
    assert "Traceback" not in result.output


MODULE = '''
import torch
from torch import nn


def build(num_classes=3):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))
'''


@pytest.mark.parametrize("where", ["beside the config", "in the working directory"])
def test_import_path_model_is_found_beside_the_config_or_in_the_cwd(invoke, image_file, tmp_path, monkeypatch, where):
    cfg_dir, cwd = tmp_path / "cfgs", tmp_path / "elsewhere"
    cfg_dir.mkdir()
    cwd.mkdir()
    module_name = "beside_cfg_net" if where == "beside the config" else "cwd_net"
    (cfg_dir if where == "beside the config" else cwd).joinpath(f"{module_name}.py").write_text(MODULE)
    cfg = cfg_dir / "net.py"
    cfg.write_text(f"model = dict(type='{module_name}:build', num_classes=3)\nvisctl = dict(input_size=32)\n")
    monkeypatch.chdir(cwd)
    result = invoke("featmap", image_file, cfg, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_import_path_model_not_found_says_where_it_looked(invoke, image_file, tmp_path, monkeypatch):
    cfg = tmp_path / "net.py"
    cfg.write_text("model = dict(type='no_such_net_module:build')\n")
    monkeypatch.chdir(tmp_path)
    result = invoke("featmap", image_file, cfg, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert str(tmp_path) in result.stderr
