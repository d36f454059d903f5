"""`visctl.lr`: the values `visctl lr` writes, mmengine Runner's values, and the CLI's folder from save()."""

from __future__ import annotations

import dataclasses
import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, manifest
from test_lr_runner import CASES, _runner_values

import visctl
from visctl import schedules
from visctl.errors import ConfigError

BODY = ("optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),\n"
        "  paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=0.1)}))\n"
        "param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=True, end=1, convert_to_iter_based=True),\n"
        "  dict(type='CosineAnnealingLR', T_max=3, by_epoch=True, begin=1, end=4),\n"
        "  dict(type='CosineAnnealingMomentum', eta_min=0.8, by_epoch=False, begin=4)]\n"
        "model = dict(type='visctl.demo_models:shapes_classifier')\n"
        "train_cfg = dict(by_epoch=True, max_epochs=4)\ntrain_dataloader = dict(batch_size=2)\n")


@pytest.fixture
def cfg(tmp_path) -> Path:
    path = tmp_path / "sched_cfg.py"
    path.write_text(BODY)
    return path


def _rgb(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def test_values_and_files_equal_the_cli(invoke, cfg, tmp_path):
    out = tmp_path / "cli"
    cli = invoke("lr", cfg, "-d", "8", "--csv", out / "lr.csv", "-o", out)
    assert cli.exit_code == 0, cli.output
    result = visctl.lr(cfg, dataset_size=8)
    # the CSV's text is the result's columns, exactly (10 significant digits each)
    assert (out / "lr.csv").read_text() == schedules.csv_text(result.values)
    assert len(result.groups) == 2 and result.lr.shape == (16, 2) and result.momentum is not None
    assert result.values["lr[" + result.groups[0] + "]"] is not None
    # the figure is the CLI's lr.png, pixel for pixel
    (fig,) = result.figures()
    np.testing.assert_array_equal(fig.image, _rgb((out / "lr.png").read_bytes()))
    # save() writes the CLI's files under the CLI's names, with the same parameters and captions
    saved = tmp_path / "api"
    result.save(saved)
    ours, theirs = manifest(saved), manifest(out)
    assert [(o["path"], o["kind"], o["caption"]) for o in ours["outputs"]] == \
           [(o["path"], o["kind"], o["caption"]) for o in theirs["outputs"]]
    assert {k: v for k, v in ours["params"].items()} == {k: v for k, v in theirs["params"].items()}
    assert (saved / "lr.csv").read_bytes() == (out / "lr.csv").read_bytes()
    assert sorted(p.name for p in saved.iterdir()) == sorted(p.name for p in out.iterdir())


def test_parameter_panel_equals_the_cli(invoke, cfg, tmp_path):
    cli = invoke("lr", cfg, "-d", "8", "-p", "momentum", "--log-scale", "--window-size", "6*4", "-o", tmp_path / "o")
    assert cli.exit_code == 0, cli.output
    result = visctl.lr(str(cfg), dataset_size=8, parameter="momentum", log_scale=True, window_size="6*4")
    np.testing.assert_array_equal(result.figures()[0].image, _rgb((tmp_path / "o" / "lr.png").read_bytes()))
    assert result.figures()[0].image.shape == (400, 600, 3)
    assert manifest(tmp_path / "o")["outputs"][0]["caption"] == result.figures()[0].caption


RUNNER_CASES = ("warmup-converted-then-cosine-without-end", "iter-based-loop-by-flag")


@pytest.mark.parametrize("case", [c for c in CASES if c.id in RUNNER_CASES], ids=lambda c: c.id)
def test_values_equal_a_real_runner(case, tmp_path):
    expected, first_params = _runner_values(case, tmp_path)
    result = visctl.lr(case.config(), dataset_size=case.size, model=case.model())
    assert result.total_iters == len(expected)
    cols = [next(k for k, m in enumerate(result.members) if name in m) for name in first_params]
    ours = np.stack([result.lr[:, cols], result.momentum[:, cols], result.weight_decay[:, cols]], axis=-1)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=0)


def test_a_config_object_and_epoch_values(cfg):
    from mmengine.config import Config

    result = visctl.lr(Config.fromfile(cfg), dataset_size=8)
    assert result.title == "sched_cfg" and result.params["config"].endswith("sched_cfg.py")
    per_epoch = result.epoch_values()
    assert np.array_equal(per_epoch["epoch"], [0, 1, 2, 3])
    np.testing.assert_allclose(per_epoch["lr[" + result.groups[0] + "]"][1:],
                               [0.05 * (1 + np.cos(np.pi * e / 3)) for e in range(3)])
    iters = visctl.lr(dict(optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)),
                                 train_cfg=dict(by_epoch=False, max_iters=5), train_dataloader=dict(batch_size=2)))
    assert np.all(iters.lr == 0.1) and iters.params["config"] == "<config>" and "epoch" not in iters.values
    with pytest.raises(ConfigError, match="no epochs"):
        iters.epoch_values()
    with pytest.raises(ConfigError, match="no momentum"):
        visctl.lr(dict(optim_wrapper=dict(optimizer=dict(type="Adagrad", lr=0.1)),
                             train_cfg=dict(by_epoch=False, max_iters=5), train_dataloader=dict(batch_size=2)),
                        parameter="momentum")


def test_jupyter_frozen_and_silent(cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = visctl.lr(cfg, dataset_size=8, title="<a & b>")
    assert capsys.readouterr().out == ""
    assert sorted(tmp_path.rglob("*")) == before  # no file written
    np.testing.assert_array_equal(_rgb(result._repr_png_()), result.figures()[0].image)
    page = result._repr_html_()
    assert "&lt;a &amp; b&gt;: iters/epoch" in page and "<a & b>" not in page
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rule = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        result.lr[0, 0] = 1.0
    assert "LrResult(" in repr(result) and "total_iters=16" in repr(result)


def test_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lr.py", str(tmp_path / "out")])
    runpy.run_path(str(ROOT / "examples" / "api" / "lr.py"), run_name="__main__")
    assert "3920 iterations" in capsys.readouterr().out
    assert {"lr.png", "lr.csv", "manifest.json", "index.html"} <= {p.name for p in (tmp_path / "out").iterdir()}
