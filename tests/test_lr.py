"""`visctl lr`: values equal hand-computed schedules, as mmengine's training loop steps them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, manifest

from visctl import schedules
from visctl.errors import ConfigError

SGD = "optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))\n"


def _cfg(tmp_path: Path, body: str, name: str = "cfg.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def _values(out: Path) -> dict[str, np.ndarray]:
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def test_multistep_by_epoch(invoke, tmp_path):
    cfg = _cfg(tmp_path, SGD + "param_scheduler = dict(type='MultiStepLR', milestones=[2, 4], gamma=0.1, by_epoch=True)\n"
               "train_cfg = dict(by_epoch=True, max_epochs=6)\ntrain_dataloader = dict(batch_size=5)\n")
    result = invoke("lr", cfg, "--dataset-size", "10", "--csv", tmp_path / "v.csv", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    v = _values(tmp_path / "v.csv")
    assert np.allclose(v["lr"], [0.1] * 4 + [0.01] * 4 + [0.001] * 4)
    assert (tmp_path / "out" / "lr.png").is_file()
    assert manifest(tmp_path / "out")["params"]["rule"] == "iters/epoch = ceil(10 / (5 x 1 GPU)) = 2"


def test_cosine_after_linear_warmup_converted_to_iterations(invoke, tmp_path):
    cfg = _cfg(tmp_path, SGD + "param_scheduler = [\n"
               "  dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),\n"
               "  dict(type='CosineAnnealingLR', T_max=3, by_epoch=True, begin=1, end=4)]\n"
               "train_cfg = dict(by_epoch=True, max_epochs=4)\ntrain_dataloader = dict(batch_size=2)\n")
    result = invoke("lr", cfg, "-d", "8", "--csv", tmp_path / "v.csv", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    lr = _values(tmp_path / "v.csv")["lr"]
    # warmup over the 4 iterations of epoch 0: base * (0.1 + 0.9 * t / 3)
    warm = [0.1 * (0.1 + 0.9 * t / 3) for t in range(4)]
    # then one cosine value per epoch: eta_max / 2 * (1 + cos(pi * e / T_max))
    cos = [0.05 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    assert np.allclose(lr, warm + [c for c in cos for _ in range(4)])


def test_one_cycle_by_iteration(tmp_path):
    total = 100
    sched = schedules.simulate(
        dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9)),
        dict(type="OneCycleLR", eta_max=0.5, total_steps=total, pct_start=0.3, by_epoch=False),
        by_epoch=False, max_epochs=None, max_iters=total, iters_per_epoch=total, rule="")
    lr = sched.lr[:, 0]
    initial, low = 0.5 / 25, 0.5 / 25 / 1e4
    up = 0.3 * total - 1

    def anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))
    expected = [anneal(initial, 0.5, t / up) if t <= up else anneal(0.5, low, (t - up) / (total - 1 - up))
                for t in range(total)]
    assert np.allclose(lr, expected, rtol=1e-6)
    assert sched.groups == ["all parameters"]


def test_two_param_groups(invoke, tmp_path):
    cfg = _cfg(tmp_path, "optim_wrapper = dict(optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.05),\n"
               "  paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=0.1, decay_mult=0.0)}))\n"
               "param_scheduler = dict(type='StepLR', step_size=1, gamma=0.5, by_epoch=True)\n"
               "model = dict(type='visctl.demo_models:shapes_classifier')\n"
               "train_cfg = dict(by_epoch=True, max_epochs=3)\ntrain_dataloader = dict(batch_size=4)\n")
    result = invoke("lr", cfg, "-d", "8", "--json", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    groups = doc["params"]["groups"]
    assert len(groups) == 2 and any(g.startswith("head.") for g in groups)
    head = next(k for k in doc["values"] if k.startswith("lr[head."))
    body = next(k for k in doc["values"] if k.startswith("lr[") and k != head)
    assert np.allclose(doc["values"][body], [0.01] * 2 + [0.005] * 2 + [0.0025] * 2)
    assert np.allclose(doc["values"][head], np.array(doc["values"][body]) * 0.1)
    assert "momentum[" + groups[0] + "]" in doc["values"]  # AdamW's beta1


def test_ceil_and_floor(invoke, tmp_path):
    cfg = _cfg(tmp_path, SGD + "train_cfg = dict(by_epoch=True, max_epochs=2)\ntrain_dataloader = dict(batch_size=3)\n")
    for flag, ipe in (([], 4), (["--drop-last"], 3)):
        out = tmp_path / f"o{ipe}"
        result = invoke("lr", cfg, "-d", "10", *flag, "-o", out)
        assert result.exit_code == 0, result.output
        assert manifest(out)["params"]["total_iters"] == 2 * ipe


def test_no_scheduler_is_a_flat_line_with_a_note(invoke, tmp_path):
    cfg = _cfg(tmp_path, SGD + "train_cfg = dict(by_epoch=False, max_iters=50)\ntrain_dataloader = dict(batch_size=3)\n")
    result = invoke("lr", cfg, "--csv", tmp_path / "v.csv", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert np.all(_values(tmp_path / "v.csv")["lr"] == 0.1)
    assert "no param_scheduler" in manifest(tmp_path / "out")["notes"][0]


def test_unknown_scheduler_lists_the_known(invoke, tmp_path):
    cfg = _cfg(tmp_path, SGD + "param_scheduler = dict(type='CosineLR')\ntrain_cfg = dict(by_epoch=False, max_iters=5)\n"
               "train_dataloader = dict(batch_size=3)\n")
    result = invoke("lr", cfg, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "unknown scheduler type 'CosineLR'" in result.stderr and "CosineAnnealingLR" in result.stderr


def test_real_mmpretrain_config_with_base_inheritance(invoke, tmp_path):
    cfg = ROOT / "tests" / "configs" / "mmpretrain" / "resnet50_8xb32-coslr-warmup_in1k.py"
    result = invoke("lr", cfg, "--ngpus", "8", "--csv", tmp_path / "v.csv", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "out")
    assert m["params"]["dataset_size"] == 1_281_167 and m["params"]["total_iters"] == 100 * 5005
    lr = _values(tmp_path / "v.csv")["lr"]
    assert lr[0] == pytest.approx(0.025) and lr[5 * 5005] == pytest.approx(0.1) and lr[-1] < 1e-3


def test_fast_epochs_equal_stepping_every_iteration():
    kw = dict(by_epoch=True, max_epochs=12, max_iters=None, iters_per_epoch=7, rule="")
    optim = dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4))
    sched = [dict(type="LinearLR", start_factor=0.1, by_epoch=True, begin=0, end=2, convert_to_iter_based=True),
             dict(type="PolyLR", eta_min=0.001, by_epoch=False, begin=40, end=60),
             dict(type="CosineAnnealingLR", T_max=10, by_epoch=True, begin=2, end=12),
             dict(type="CosineAnnealingMomentum", T_max=12, eta_min=0.8, by_epoch=True, begin=0, end=12)]
    fast = schedules.simulate(optim, sched, **kw)
    slow = schedules.simulate(optim, sched, **kw, per_iteration=True)
    assert np.array_equal(fast.lr, slow.lr) and np.array_equal(fast.momentum, slow.momentum)


def test_missing_dataset_size_is_a_clear_error(invoke, tmp_path):
    cfg = _cfg(tmp_path, SGD + "train_cfg = dict(by_epoch=True, max_epochs=2)\n"
               "train_dataloader = dict(batch_size=3, dataset=dict(type='CustomDataset', data_root='nowhere'))\n")
    result = invoke("lr", cfg, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--dataset-size" in result.stderr
    with pytest.raises(ConfigError, match="no train_cfg"):
        schedules.training_length({})
