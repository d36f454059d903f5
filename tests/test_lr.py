"""`visctl lr`: values equal hand-computed schedules, as mmengine's training loop steps them."""

from __future__ import annotations

import csv
import itertools
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
        schedules.TrainLoop.build(False, total, None))
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
    loop = schedules.TrainLoop.build(True, 12, 7)
    optim = dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4))
    sched = [dict(type="LinearLR", start_factor=0.1, by_epoch=True, begin=0, end=2, convert_to_iter_based=True),
             dict(type="PolyLR", eta_min=0.001, by_epoch=False, begin=40, end=60),
             dict(type="CosineAnnealingLR", T_max=10, by_epoch=True, begin=2, end=12),
             dict(type="CosineAnnealingMomentum", T_max=12, eta_min=0.8, by_epoch=True, begin=0, end=12)]
    fast = schedules.simulate(optim, sched, loop)
    slow = schedules.simulate(optim, sched, loop, per_iteration=True)
    assert np.array_equal(fast.lr, slow.lr) and np.array_equal(fast.momentum, slow.momentum)


def test_missing_dataset_size_is_a_clear_error(invoke, tmp_path):
    cfg = _cfg(tmp_path, SGD + "train_cfg = dict(by_epoch=True, max_epochs=2)\n"
               "train_dataloader = dict(batch_size=3, dataset=dict(type='CustomDataset', data_root='nowhere'))\n")
    result = invoke("lr", cfg, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--dataset-size" in result.stderr
    with pytest.raises(ConfigError, match="no train_cfg"):
        schedules.training_length({})


SWIN = """
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
                     paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20)]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
train_dataloader = dict(batch_size=64, dataset=dict(type='ImageNet', data_root='data/imagenet'))
"""


def test_scheduler_without_end_ends_at_max_epochs(tmp_path):
    # mmpretrain's Swin/ViT/ConvNeXt schedule: the cosine has no `end`, which the Runner sets to max_epochs
    # (Runner._build_param_scheduler); T_max = end - begin = 280 epochs
    from mmengine import Config

    sched = schedules.schedule_from_config(Config.fromfile(_cfg(tmp_path, SWIN)), dataset_size=1281167, ngpus=8)
    lr = sched.lr[:, 0]  # the groups differ in weight decay only
    assert np.array_equal(sched.lr[:, 1], lr)
    ipe = math.ceil(1281167 / 512)
    assert len(lr) == 300 * ipe and lr[20 * ipe] == pytest.approx(1e-3)
    epoch = 400_000 // ipe
    cosine = 1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * (epoch - 20) / 280)) / 2
    assert lr[400_000] == pytest.approx(cosine, rel=1e-6) and lr[400_000] == pytest.approx(5.1e-4, rel=0.01)
    assert lr[-1] == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * 279 / 280)) / 2, rel=1e-6)


def test_plotted_lines_are_the_csv_values(invoke, tmp_path, monkeypatch):
    figures = []
    plot = schedules.plot

    def spy(*args, **kwargs):
        figures.append(plot(*args, **kwargs))
        return figures[-1]
    monkeypatch.setattr(schedules, "plot", spy)
    # 3 x 4 = 12 epochs of 1000 iterations: the plot keeps 20000 points at most, plus every change of value
    cfg = _cfg(tmp_path, SGD.replace("))", "), paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=0.1)}))")
               + "param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=1500),\n"
               "  dict(type='MultiStepLR', milestones=[3, 7], by_epoch=True),\n"
               "  dict(type='CosineAnnealingMomentum', eta_min=0.8, by_epoch=False, begin=1500)]\n"
               "train_cfg = dict(by_epoch=True, max_epochs=30)\ntrain_dataloader = dict(batch_size=2)\n")
    result = invoke("lr", cfg, "-d", "2000", "--csv", tmp_path / "v.csv", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    v = _values(tmp_path / "v.csv")
    (fig,) = figures
    lr_ax, mom_ax = fig.axes[:2]
    assert [a.get_ylabel() for a in (lr_ax, mom_ax)] == ["learning rate", "momentum"]
    for ax, name in ((lr_ax, "lr"), (mom_ax, "momentum")):
        columns = [k for k in v if k.startswith(name + "[")]
        assert len(ax.lines) == len(columns) == 2
        for line, col in zip(ax.lines, columns):
            x, y = line.get_xdata(), line.get_ydata()
            assert line.get_label() == col[len(name) + 1:-1]
            # the CSV holds 10 significant digits
            np.testing.assert_allclose(y, v[col][x.astype(int)], rtol=1e-9, atol=0)
            # steps-post through every change: the value drawn at each iteration is the CSV's
            drawn = y[np.searchsorted(x, v["iteration"], side="right") - 1]
            np.testing.assert_allclose(drawn, v[col], rtol=1e-9, atol=0)


def test_dataloader_length_equals_torch_dataloader_with_mmengine_samplers(monkeypatch):
    import torch
    from mmengine.dataset import sampler as mm_sampler

    data = list(range(37))
    for world, batch, drop_last in itertools.product((1, 3, 8), (1, 4, 5), (False, True)):
        # rank 0 of `world` processes (the Runner's epoch_length is rank 0's len(train_dataloader))
        monkeypatch.setattr(mm_sampler, "get_dist_info", lambda w=world: (0, w))
        for kind, sampler in (("DefaultSampler", mm_sampler.DefaultSampler(data, shuffle=False)),
                              ("DefaultSampler", mm_sampler.DefaultSampler(data, shuffle=False, round_up=False)),
                              ("InfiniteSampler", mm_sampler.InfiniteSampler(data, shuffle=False))):
            loader = torch.utils.data.DataLoader(data, batch_size=batch, sampler=sampler, drop_last=drop_last)
            n, rule = schedules.dataloader_length(len(data), batch, world, drop_last, kind)
            assert n == len(loader), (kind, world, batch, drop_last, rule)


def test_iteration_loop_needs_the_dataset_size_only_to_convert_epochs(tmp_path):
    base = dict(optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)), train_cfg=dict(by_epoch=False, max_iters=10),
                train_dataloader=dict(batch_size=2))
    sched = schedules.schedule_from_config(dict(base, param_scheduler=dict(type="PolyLR", by_epoch=False)),
                                           dataset_size=None)
    assert sched.total_iters == 10 and sched.lr[-1, 0] < sched.lr[0, 0] and sched.iters_per_epoch is None
    converted = dict(base, param_scheduler=dict(type="LinearLR", end=1, convert_to_iter_based=True))
    with pytest.raises(ConfigError, match="size"):
        schedules.schedule_from_config(converted, dataset_size=None)
    assert schedules.schedule_from_config(converted, dataset_size=8).lr[3, 0] == pytest.approx(0.1)


def test_train_cfg_read_as_the_runner_builds_its_loop():
    assert schedules.training_length(dict(type="IterBasedTrainLoop", max_iters=5)) == (False, 5)
    assert schedules.training_length(dict(type="EpochBasedTrainLoop", max_epochs=3, val_interval=2)) == (True, 3)
    assert schedules.training_length(dict(by_epoch=False, max_iters=7, val_interval=100)) == (False, 7)
    with pytest.raises(ConfigError, match="both type and by_epoch"):
        schedules.training_length(dict(type="EpochBasedTrainLoop", by_epoch=True, max_epochs=3))
    with pytest.raises(ConfigError, match="max_iters"):
        schedules.training_length(dict(by_epoch=False, max_epochs=3))


def test_plateau_schedulers_are_flat_with_a_note():
    sched = schedules.schedule_from_config(dict(
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)), train_cfg=dict(by_epoch=True, max_epochs=4),
        train_dataloader=dict(batch_size=2), param_scheduler=dict(type="ReduceOnPlateauLR", patience=0)),
        dataset_size=4)
    assert np.all(sched.lr == 0.1) and "validation metrics" in sched.notes[0]


def test_repeated_and_concatenated_datasets_are_counted(tmp_path):
    ann = tmp_path / "train.txt"
    ann.write_text("a.jpg 0\nb.jpg 1\nc.jpg 0\n")
    inner = dict(type="CustomDataset", ann_file=str(ann))
    assert schedules.dataset_size_from_config(dict(type="RepeatDataset", times=4, dataset=inner))[0] == 12
    both = dict(type="ConcatDataset", datasets=[inner, dict(type="CIFAR10", data_root="nowhere")])
    assert schedules.dataset_size_from_config(both)[0] == 50_003
    assert schedules.dataset_size_from_config(dict(type="ClassBalancedDataset", oversample_thr=0.1,
                                                   dataset=inner)) is None


def test_json_stdout_is_only_json_with_paramwise_cfg(tmp_path):
    # mmengine logs each paramwise_cfg decision on stdout; a fresh process shows whether it reaches ours
    import subprocess
    import sys

    cfg = _cfg(tmp_path, SWIN.replace("max_epochs=300", "max_epochs=2").replace("20", "1"))
    proc = subprocess.run([sys.executable, "-m", "visctl", "lr", str(cfg), "-d", "640", "--json", "-o",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["params"]["total_iters"] == 20
