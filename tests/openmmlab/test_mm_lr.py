"""`visctl lr` on mmpretrain's own configs equals a real mmengine Runner's values: every param group, every iteration.

The reference is mmengine's ``Runner`` given the config's own model (built through mmpretrain's registry),
``optim_wrapper``, ``param_scheduler``, ``train_cfg``, ``default_scope`` and ``custom_hooks`` (SimSiamHook fixes
a predictor's lr), trained over a DataLoader of ``dataset_size`` stand-in samples as the Runner builds one
(DefaultSampler, the config's batch size and drop_last). Two things differ from a real training, neither
touching the values: ``train_step`` does nothing (the schedule does not depend on the updates) and
``init_weights`` is skipped (benchmark configs name ``Pretrained`` checkpoints). EMAHook is left out of the
reference's hooks: it averages weights, never the optimizer's values, and costs seconds per config. A hook
reads every param group in ``before_train_iter`` at the lowest priority: the values that iteration's
optimizer step uses. visctl's columns are matched to the Runner's groups by their parameters' names.

The second reference, mmpretrain's ``tools/visualization/vis_scheduler.py``, builds a Runner over its
``SimpleModel`` (one Conv2d) and records the first param group only: it cannot show layer-wise decay (its
model has no ``get_layer_depth``, so the layer-decay constructor raises) nor any group but the first, and its
epoch has ``dataset_size // total batch`` iterations where the Runner's DataLoader has the ceiling.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mmstack import mm_config, package_configs

MAE = "mae/benchmarks/vit-base-p16_8xb128-coslr-100e_in1k.py"
BEIT = "beit/benchmarks/beit-base-p16_8xb128-coslr-100e_in1k.py"
RSB = "resnet/resnet50_8xb256-rsb-a1-600e_in1k.py"

#: a broad sample of the families: (config, --cfg-options, why it is here); 300-epoch schedules whose cosine
#: ends at max_epochs run 40 epochs (warmup 20, cosine 20: their whole course)
SHORT = ("train_cfg.max_epochs=40",)
SAMPLE = [
    ("resnet/resnet50_8xb32_in1k.py", (), "SGD, MultiStepLR by epoch, one group"),
    ("resnet/resnet50_8xb256-rsb-a3-100e_in1k.py", (), "Lamb (mmpretrain's), paramwise_cfg"),
    ("swin_transformer/swin-tiny_16xb64_in1k.py", SHORT, "AdamW, custom_keys, warmup converted to iterations"),
    ("convnext/convnext-tiny_32xb128_in1k.py", SHORT, "AdamW, EMAHook in custom_hooks"),
    ("deit/deit-small_4xb256_in1k.py", SHORT, "AdamW, cls_token/pos_embed without decay"),
    ("vision_transformer/vit-base-p16_64xb64_in1k-384px.py", (), "ViT-B 384 px, cosine with an explicit end"),
    ("efficientnet/efficientnet-b0_8xb32_in1k.py", (), "SGD, StepLR"),
    ("mobilenet_v2/mobilenet-v2_8xb32_in1k.py", ("train_cfg.max_epochs=30",), "SGD, StepLR every epoch"),
    ("mobilenet_v3/mobilenet-v3-small_8xb128_in1k.py", ("train_cfg.max_epochs=60",), "RMSprop, StepLR"),
    ("mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py", (), "MAE pretraining, AmpOptimWrapper"),
    ("simclr/simclr_resnet50_16xb256-coslr-200e_in1k.py", (), "LARS (mmpretrain's)"),
    ("mocov3/mocov3_resnet50_8xb512-amp-coslr-100e_in1k.py", (), "LARS, frozen momentum encoder"),
    ("mocov3/benchmarks/vit-base-p16_8xb64-coslr-150e_in1k.py", (), "a fine-tuning benchmark"),
    ("simsiam/simsiam_resnet50_8xb32-coslr-100e_in1k.py", (), "SimSiamHook fixes the predictor's lr"),
    ("byol/byol_resnet50_16xb256-coslr-200e_in1k.py", (), "LARS, frozen target network"),
    ("spark/benchmarks/resnet50_8xb256-coslr-300e_in1k.py", (), "layer-wise decay on a ResNet, Lamb"),
    ("simmim/benchmarks/swin-base-w6_8xb256-coslr-100e_in1k-192px.py", (), "layer-wise decay on a Swin: 52 groups"),
    ("mae/benchmarks/vit-base-p16_8xb2048-linear-coslr-90e_in1k.py", (), "linear probe: LARS, frozen backbone"),
]

_RUNS = itertools.count()
# mmcv warns on import that a class moved (mmpretrain's backbones import it), and when MobileNet-v3 builds its
# HSigmoid that its defaults changed in mmcv 1.4.4
pytestmark = [pytest.mark.filterwarnings("ignore::ImportWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning:mmcv.*")]


def _config(rel: str, options: tuple[str, ...] = ()) -> Any:
    return mm_config(package_configs("mmpretrain") / rel, options)


def runner_values(cfg: Any, dataset_size: int, work_dir: Path, model: Any = None) -> tuple[np.ndarray, list[str]]:
    """(iterations, Runner groups, 3): every param group's lr, momentum (or betas[0]) and weight decay per
    iteration of ``Runner.train()``, and each group's first parameter's name."""
    import torch
    from mmengine.dataset import DefaultSampler
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Recorder(Hook):
        priority = "LOWEST"

        def __init__(self) -> None:
            self.rows: list[list[tuple[float, float, float]]] = []
            self.first: list[str] = []

        def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
            groups = runner.optim_wrapper.optimizer.param_groups
            if not self.first:
                names = {id(p): n for n, p in runner.model.named_parameters()}
                self.first = [names[id(g["params"][0])] for g in groups]
            self.rows.append([(g["lr"], g["momentum"] if "momentum" in g else g["betas"][0], g["weight_decay"])
                              for g in groups])

    cfg = copy.deepcopy(cfg)
    data = list(range(dataset_size))
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.train_dataloader.batch_size,
                                         sampler=DefaultSampler(data, shuffle=False), collate_fn=lambda b: b,
                                         drop_last=cfg.train_dataloader.get("drop_last", False))
    optim_wrapper = dict(cfg.optim_wrapper)
    if optim_wrapper.get("type") == "AmpOptimWrapper":  # CUDA only; it schedules as OptimWrapper does
        optim_wrapper.update(type="OptimWrapper")
        optim_wrapper.pop("loss_scale", None)
    hooks = [h for h in cfg.get("custom_hooks") or [] if h.get("type") != "EMAHook"]
    recorder = Recorder()
    runner = Runner(model=model if model is not None else cfg.model, work_dir=str(work_dir),
                    experiment_name=f"lr-{next(_RUNS)}", train_dataloader=loader, train_cfg=cfg.train_cfg,
                    optim_wrapper=optim_wrapper, param_scheduler=cfg.param_scheduler,
                    auto_scale_lr=cfg.get("auto_scale_lr"), default_scope=cfg.default_scope,
                    custom_hooks=[*hooks, recorder], log_level="ERROR",
                    default_hooks=dict(logger=None, timer=None, checkpoint=None,
                                       param_scheduler=cfg.default_hooks.param_scheduler))
    runner.model.train_step = lambda data, optim_wrapper: {}
    runner.model.init_weights = lambda: None
    with warnings.catch_warnings():  # no optimizer.step() before the schedulers' step(): mmengine says so
        warnings.filterwarnings("ignore", message="Detected call of `scheduler.step")
        runner.train()
    return np.array(recorder.rows), recorder.first


def _columns(members: list[list[str]], first: list[str]) -> list[int]:
    """visctl's column of each Runner group: the one holding its first parameter (a single column when
    visctl's groups do not depend on the model's parameters and it used stand-in ones)."""
    cols = [next((k for k, m in enumerate(members) if name in m), None) for name in first]
    if None in cols and len(members) == 1:
        return [0] * len(first)
    assert None not in cols, f"Runner groups of {[n for n, c in zip(first, cols) if c is None]} not in visctl's"
    return [c for c in cols if c is not None]


def _compare(lr: np.ndarray, momentum: np.ndarray, wd: np.ndarray, cols: list[int], expected: np.ndarray) -> None:
    ours = np.stack([lr[:, cols], momentum[:, cols], wd[:, cols]], axis=-1)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=0)


def _no_false_notes(notes: list[str]) -> None:
    """mmpretrain is installed and the model builds: nothing is stood in for, and no note says otherwise."""
    assert not [n for n in notes if any(w in n for w in ("not installed", "not available", "not registered",
                                                          "stand-in", "cannot be built", "is not run"))], notes


@pytest.mark.parametrize("rel,groups", [(MAE, 28), (BEIT, 28), (RSB, 2)], ids=["mae-vit-b", "beit-b", "rsb-a1-lamb"])
def test_cli_equals_runner_on_the_configs_of_the_issue(invoke, tmp_path, rel, groups):
    """The whole configs, as shipped: the CLI builds the model itself, as a user runs it (one iteration per
    epoch: 100 or 600 iterations, every scheduler's whole course)."""
    cfg = _config(rel)
    size = cfg.train_dataloader.batch_size
    result = invoke("lr", package_configs("mmpretrain") / rel, "-d", size, "--json", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    labels, members = list(doc["params"]["group_params"]), list(doc["params"]["group_params"].values())
    assert len(labels) == groups
    _no_false_notes(doc["notes"])
    values = {k: np.array(v) for k, v in doc["values"].items()}
    lr, mom, wd = (np.stack([values[f"{key}[{label}]"] for label in labels], axis=1)
                   for key in ("lr", "momentum", "weight_decay"))
    expected, first = runner_values(cfg, size, tmp_path / "work")
    _compare(lr, mom, wd, _columns(members, first), expected)
    if rel == RSB:  # Lamb's betas[0], which visctl showed as momentum 0.0
        assert np.all(mom == 0.9)
    else:  # 12 blocks + embeddings + head, each with and without weight decay; lr x 0.65 per layer down
        assert any(label.startswith("layer 12: backbone.layers.11.") for label in labels)
        scales = sorted(set(np.round(lr[0] / max(lr[0]), 12)))  # the first iteration: the warmup's start
        assert len(scales) == 14 and scales[0] == pytest.approx(0.65 ** 13)


def test_sample_of_mmpretrain_configs_equals_runner(tmp_path):
    """Eighteen more configs of every family and optimizer, through visctl's library (the CLI's path: it builds
    the model itself, on the meta device where the model's code allows), with one iteration per epoch."""
    import visctl

    for rel, options, why in SAMPLE:
        cfg = _config(rel, options)
        size = cfg.train_dataloader.batch_size
        result = visctl.lr(package_configs("mmpretrain") / rel, dataset_size=size,
                                 options=visctl.RunOptions(cfg_options=options))
        _no_false_notes([n for n in result.notes if "frozen" not in n])
        expected, first = runner_values(cfg, size, tmp_path / "work")
        assert result.momentum is not None, rel
        try:
            _compare(result.lr, result.momentum, result.weight_decay, _columns(result.members, first), expected)
        except AssertionError as exc:
            raise AssertionError(f"{rel} ({why}): {exc}") from None


def test_frozen_parameters_are_named_and_layer_decay_on_a_resnet(tmp_path):
    import visctl

    byol = visctl.lr(package_configs("mmpretrain") / "byol/byol_resnet50_16xb256-coslr-200e_in1k.py",
                           dataset_size=256)
    assert any("frozen parameter(s)" in n and "target_net." in n for n in byol.notes)
    spark = visctl.lr(package_configs("mmpretrain") / "spark/benchmarks/resnet50_8xb256-coslr-300e_in1k.py",
                            dataset_size=256)
    assert len(spark.groups) == 16 and any(g.startswith("layer 1: ") for g in spark.groups)


def test_config_the_runner_refuses_is_refused(invoke, tmp_path):
    """maskfeat's benchmark sets train_cfg type and by_epoch: mmengine 0.10's Runner raises, and so does visctl."""
    from mmengine.runner import Runner

    rel = "maskfeat/benchmarks/vit-base-p16_8xb256-coslr-100e_in1k.py"
    cfg = _config(rel)
    with pytest.raises(RuntimeError, match="Only one of `type` or `by_epoch`"):
        Runner.build_train_loop(object.__new__(Runner), cfg.train_cfg)
    result = invoke("lr", package_configs("mmpretrain") / rel, "-d", 256, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "train_cfg has both type and by_epoch" in result.stderr


class _FakeDataloader(list):
    """vis_scheduler.py's main() defines this for simulate_train: ``dataset_size // total batch`` placeholders."""

    from unittest.mock import MagicMock

    dataset = MagicMock(metainfo=None)


def _vis_scheduler() -> Any:
    path = package_configs("mmpretrain").parent / "tools" / "visualization" / "vis_scheduler.py"
    spec = importlib.util.spec_from_file_location("mmpretrain_vis_scheduler", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vis_scheduler_agrees_on_its_first_group_and_cannot_draw_layer_decay(tmp_path):
    """mmpretrain's own tool as a second reference: its one recorded group (the first: SimpleModel's conv weight,
    which takes the optimizer's base values) equals visctl's group of plain weights; on the layer-decay
    configs its SimpleModel makes the constructor raise, where visctl and the Runner have 28 groups."""
    import visctl

    tool = _vis_scheduler()
    for rel, options in [("resnet/resnet50_8xb32_in1k.py", ()), (RSB, ("train_cfg.max_epochs=60",)),
                         ("swin_transformer/swin-tiny_16xb64_in1k.py", SHORT)]:
        cfg = _config(rel, options)
        cfg.work_dir, cfg.log_level = str(tmp_path / "vis"), "ERROR"
        size = 2 * cfg.train_dataloader.batch_size  # a multiple of the batch: its floor and the Runner's ceil agree
        loader = _FakeDataloader(range(size // cfg.train_dataloader.batch_size))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `scheduler.step")
            # its Runners are named by the second they start in, and mmengine warns when two share one
            warnings.filterwarnings("ignore", message=".*instance named of .* has been created")
            theirs = tool.simulate_train(loader, cfg, by_epoch=True)
        ours = visctl.lr(package_configs("mmpretrain") / rel, dataset_size=size,
                               options=visctl.RunOptions(cfg_options=options))
        base = next(k for k, m in enumerate(ours.members) if any(n.endswith("conv1.weight") or
                    n.endswith("patch_embed.projection.weight") for n in m)) if len(ours.groups) > 1 else 0
        assert ours.momentum is not None
        np.testing.assert_allclose(ours.lr[:, base], theirs["lr"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(ours.momentum[:, base], theirs["momentum"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(ours.weight_decay[:, base], theirs["wd"], rtol=1e-12, atol=0)
    cfg = _config(MAE, ("train_cfg.max_epochs=2",))
    cfg.work_dir, cfg.log_level = str(tmp_path / "vis"), "ERROR"
    with pytest.raises(NotImplementedError, match="get_layer_depth"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*instance named of .* has been created")
        tool.simulate_train(_FakeDataloader(range(1)), cfg, by_epoch=True)
