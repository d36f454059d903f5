"""`visctl lr` against a real mmengine Runner: every iteration's lr, momentum and weight decay of every
param group equals what ``Runner.train()`` gives its optimizer, for every scheduler mmengine registers.

Each case trains a tiny model on a tiny in-memory dataset with ``Runner.train()``; a hook reads the optimizer's
param groups in ``before_train_iter`` (the values that iteration's optimizer step uses, after the previous
iteration's ``ParamSchedulerHook.after_train_iter`` and the previous epoch's ``after_train_epoch``). visctl
computes the same config with ``schedule_from_config`` (the code path of ``visctl lr``), given the dataset
size, batch size and one GPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapperDict
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, PARAM_SCHEDULERS
from mmengine.runner import Runner
from torch import nn

from visctl import schedules

if OPTIM_WRAPPER_CONSTRUCTORS.get("MultiOptimWrapperConstructor") is None:
    @OPTIM_WRAPPER_CONSTRUCTORS.register_module()
    class MultiOptimWrapperConstructor:
        """mmagic's GAN constructor (mmagic/engine/optimizers/multi_optimizer_constructor.py, mmedit 1.x's
        ``MultiOptimWrapperConstructor``), which mmengine does not ship: one DefaultOptimWrapperConstructor per
        key, over the model's submodule of that name, gathered in an OptimWrapperDict."""

        def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
            self.constructors = {}
            for key, cfg in optim_wrapper_cfg.items():
                cfg = dict(cfg)
                self.constructors[key] = DefaultOptimWrapperConstructor(cfg, cfg.pop("paramwise_cfg", None))

        def __call__(self, module: nn.Module) -> OptimWrapperDict:
            return OptimWrapperDict(**{k: c(module._modules[k]) for k, c in self.constructors.items()})


class Net(BaseModel):
    """Weights, biases, a norm and a head: paramwise_cfg makes several distinct groups of them."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
        self.head = nn.Linear(4, 2)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, mode: str = "tensor") -> Any:
        out = self.head(self.backbone(inputs))
        return {"loss": nn.functional.cross_entropy(out, labels)} if mode == "loss" else out


class GAN(BaseModel):
    """Two submodules with an optimizer each (an OptimWrapperDict), updated in turn as GAN models do."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.Linear(3, 3)
        self.discriminator = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, mode: str = "tensor") -> Any:
        return self.discriminator(self.generator(inputs))

    def train_step(self, data: dict, optim_wrapper: OptimWrapperDict) -> dict:
        for name, wrapper in optim_wrapper.items():
            loss = getattr(self, name)(data["inputs"]).pow(2).mean()
            wrapper.update_params(loss)
        return {}


class Toy(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=torch.full((3,), float(i % 5)), labels=i % 2)


class Recorder(Hook):
    """Every param group's (lr, momentum or betas[0], weight decay, first parameter's name) per iteration."""

    def __init__(self) -> None:
        self.rows: list[list[tuple[float, float, float, str]]] = []

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        names = {id(p): n for n, p in runner.model.named_parameters()}
        wrapper = runner.optim_wrapper
        wrappers = list(wrapper.values()) if isinstance(wrapper, OptimWrapperDict) else [wrapper]
        self.rows.append([(g["lr"], g["momentum"] if "momentum" in g else g["betas"][0], g["weight_decay"],
                           names[id(g["params"][0])]) for w in wrappers for g in w.optimizer.param_groups])


SGD = dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4),
           paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                              custom_keys={"head": dict(lr_mult=0.1, decay_mult=0.5)}))
ADAMW = dict(optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
             paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, custom_keys={"head": dict(lr_mult=2.0)}))
GAN_OPTIM = dict(constructor="MultiOptimWrapperConstructor",
                 generator=dict(optimizer=dict(type="Adam", lr=2e-4, betas=(0.5, 0.999))),
                 discriminator=dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=1e-3),
                                    paramwise_cfg=dict(bias_decay_mult=0.0)))
EPOCHS = dict(by_epoch=True, max_epochs=5)


@dataclass
class Case:
    id: str
    param_scheduler: Any
    optim_wrapper: dict = field(default_factory=lambda: SGD)
    train_cfg: dict = field(default_factory=lambda: EPOCHS)
    size: int = 10
    batch: int = 4
    drop_last: bool = False
    model: type = Net
    extra: dict = field(default_factory=dict)  # other top-level keys (auto_scale_lr)

    def config(self) -> dict:
        return copy.deepcopy(dict(
            optim_wrapper=self.optim_wrapper, param_scheduler=self.param_scheduler, train_cfg=self.train_cfg,
            train_dataloader=dict(batch_size=self.batch, drop_last=self.drop_last,
                                  sampler=dict(type="DefaultSampler", shuffle=False)), **self.extra))


CASES = [
    # the reported bug: mmpretrain's Swin/ViT schedule, whose cosine has no `end` (Runner: max_epochs)
    Case("warmup-converted-then-cosine-without-end", [
        dict(type="LinearLR", start_factor=1e-3, by_epoch=True, end=2, convert_to_iter_based=True),
        dict(type="CosineAnnealingLR", eta_min=1e-5, by_epoch=True, begin=2)],
        optim_wrapper=ADAMW, train_cfg=dict(by_epoch=True, max_epochs=6), size=37, batch=8),
    # no begin, no end, no by_epoch: all defaults; and auto_scale_lr (Runner.scale_lr)
    Case("multistep-defaults-auto-scale-lr", [
        dict(type="MultiStepLR", milestones=[1, 3]),
        dict(type="MultiStepMomentum", milestones=[2], gamma=0.5)],
        extra=dict(auto_scale_lr=dict(enable=True, base_batch_size=16))),
    # drop_last: floor(10 / 4) = 2 iterations per epoch; an iteration scheduler's end is max_iters
    Case("drop-last", [
        dict(type="ExponentialLR", gamma=0.8),
        dict(type="ExponentialMomentum", gamma=0.99, by_epoch=False)], drop_last=True),
    # iteration schedulers with a window inside an epoch loop, chained with an epoch scheduler
    Case("iteration-windows-in-epoch-loop", [
        dict(type="PolyLR", eta_min=1e-4, power=2.0, by_epoch=False, begin=3),
        dict(type="StepLR", step_size=1, gamma=0.7, by_epoch=True, begin=2),
        dict(type="PolyMomentum", eta_min=0.5, by_epoch=False, end=10),
        dict(type="StepMomentum", step_size=2, gamma=0.9, begin=1)],
        train_cfg=dict(by_epoch=True, max_epochs=4), size=17),
    # IterBasedTrainLoop by type: OneCycle's total_steps = end - begin = max_iters; converted schedulers use
    # len(train_dataloader) = ceil(10 / 3) = 4 as epoch_length
    Case("iter-based-loop-by-type", [
        dict(type="OneCycleLR", eta_max=0.5, by_epoch=False),
        dict(type="CosineAnnealingMomentum", eta_min=0.8, by_epoch=True, begin=1, end=4, convert_to_iter_based=True)],
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=23), batch=3),
    # train_cfg by_epoch=False: an epoch scheduler's default end is max_epochs = 1, and it is only stepped after
    # the last iteration, so ConstantLR's factor stays on for the whole run
    Case("iter-based-loop-by-flag", [
        dict(type="ConstantLR", factor=0.5),
        dict(type="LinearLR", start_factor=0.1, by_epoch=True, end=2, convert_to_iter_based=True),
        dict(type="CosineRestartLR", periods=[5, 7], restart_weights=[1, 0.5], eta_min=0.01, by_epoch=False, begin=8),
        dict(type="CosineRestartMomentum", periods=[6, 6], restart_weights=[1, 1], eta_min=0.8, by_epoch=False)],
        train_cfg=dict(by_epoch=False, max_iters=20), size=7, batch=2),
    Case("generic-param-schedulers", [
        dict(type="LinearParamScheduler", param_name="weight_decay", start_factor=0.1, end=2),
        dict(type="ExponentialParamScheduler", param_name="weight_decay", gamma=1.1, begin=2),
        dict(type="CosineAnnealingParamScheduler", param_name="lr", eta_min=1e-3, by_epoch=False, begin=2),
        dict(type="StepParamScheduler", param_name="momentum", step_size=2, gamma=0.9)],
        size=12, batch=5),
    Case("generic-param-schedulers-2", [
        dict(type="MultiStepParamScheduler", param_name="lr", milestones=[4, 9], by_epoch=False),
        dict(type="PolyParamScheduler", param_name="weight_decay", eta_min=0.0, begin=1),
        dict(type="ConstantParamScheduler", param_name="momentum", factor=0.5, end=3, by_epoch=False),
        dict(type="CosineRestartParamScheduler", param_name="lr", periods=[2, 2], restart_weights=[1, 0.5],
             eta_min_ratio=0.1, begin=1)]),
    # eta_max per param group, so visctl keeps every group: Net's 6 groups plus the OptimWrapper's
    # base_param_settings, a 7th that the schedulers see when there is more than one (mmengine/optim/optimizer/base.py)
    Case("one-cycle-per-group-eta-max", dict(
        type="OneCycleParamScheduler", param_name="lr", eta_max=[0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.5], by_epoch=False)),
    # ReduceOnPlateau* change only on validation metrics: without a val loop they only count (the Runner
    # here has none; visctl has no metrics either)
    Case("reduce-on-plateau-without-validation", [
        dict(type="LinearLR", start_factor=0.5, end=1),
        dict(type="ReduceOnPlateauLR", monitor="loss", patience=0, begin=1),
        dict(type="ReduceOnPlateauMomentum", monitor="loss", patience=0),
        dict(type="ReduceOnPlateauParamScheduler", param_name="weight_decay", monitor="loss", patience=0)]),
    Case("constant-then-cosine-restart-by-epoch-without-end", [
        dict(type="ConstantLR", factor=0.5, end=2),
        dict(type="CosineRestartLR", periods=[2, 3], restart_weights=[1, 0.5], eta_min=1e-3, begin=2),
        dict(type="ConstantMomentum", factor=0.9, by_epoch=False, end=4)],
        train_cfg=dict(by_epoch=True, max_epochs=7), size=9, batch=4),
    # two optimizers, one scheduler list built for each (Runner.build_param_scheduler)
    Case("two-optimizers-shared-schedulers", [
        dict(type="LinearLR", start_factor=0.5, by_epoch=False, end=4),
        dict(type="ExponentialLR", gamma=0.9, begin=1)],
        optim_wrapper=GAN_OPTIM, model=GAN),
    # two optimizers, a scheduler list each, in an IterBasedTrainLoop
    Case("two-optimizers-own-schedulers", dict(
        generator=[dict(type="LinearMomentum", start_factor=0.5, by_epoch=False, end=6)],
        discriminator=dict(type="StepLR", step_size=3, gamma=0.5, by_epoch=False)),
        optim_wrapper=GAN_OPTIM, model=GAN, train_cfg=dict(by_epoch=False, max_iters=14)),
]


def _runner_values(case: Case, tmp_path) -> tuple[np.ndarray, list[str]]:
    """(iterations, runner groups, 3) values and each runner group's first parameter, from Runner.train()."""
    cfg = case.config()
    loader = dict(cfg["train_dataloader"], dataset=Toy(case.size), collate_fn=dict(type="default_collate"),
                  num_workers=0)
    recorder = Recorder()
    runner = Runner(
        model=case.model(), work_dir=str(tmp_path), experiment_name=f"lr-{case.id}", train_dataloader=loader,
        train_cfg=cfg["train_cfg"], optim_wrapper=cfg["optim_wrapper"], param_scheduler=cfg["param_scheduler"],
        auto_scale_lr=cfg.get("auto_scale_lr"), custom_hooks=[recorder], randomness=dict(seed=0), log_level="ERROR",
        # no logging, timing or checkpoint files; ParamSchedulerHook and RuntimeInfoHook stay
        default_hooks=dict(logger=None, timer=None, checkpoint=None))
    runner.train()
    rows = recorder.rows
    return np.array([[r[:3] for r in row] for row in rows]), [r[3] for r in rows[0]]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_values_equal_a_real_runner(case: Case, tmp_path):
    expected, first_params = _runner_values(case, tmp_path)
    sched = schedules.schedule_from_config(case.config(), dataset_size=case.size, ngpus=1, model=case.model())
    assert sched.total_iters == len(expected)
    # each Runner group is compared with the visctl group holding its parameters (equal groups are merged)
    cols = [next(k for k, m in enumerate(sched.members) if name in m) for name in first_params]
    assert sched.momentum is not None
    ours = np.stack([sched.lr[:, cols], sched.momentum[:, cols], sched.weight_decay[:, cols]], axis=-1)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=0)
    assert np.ptp(expected[..., 0]) > 0 or case.id.startswith("reduce-on-plateau")  # the schedule does something


def test_fast_path_equals_stepping_every_iteration():
    for case in CASES:
        fast = schedules.schedule_from_config(case.config(), dataset_size=case.size, model=case.model())
        slow = schedules.schedule_from_config(case.config(), dataset_size=case.size, model=case.model(),
                                              per_iteration=True)
        assert np.array_equal(fast.lr, slow.lr) and np.array_equal(fast.momentum, slow.momentum), case.id
        assert np.array_equal(fast.weight_decay, slow.weight_decay), case.id


def test_cases_cover_every_registered_scheduler():
    import mmengine.optim  # noqa: F401  (registers mmengine's schedulers)

    used = {c["type"] for case in CASES for c in schedules._scheduler_dicts(case.param_scheduler)}
    registered = set(PARAM_SCHEDULERS.module_dict)
    assert registered - used == set(), "schedulers a Runner test case does not use"
    assert {name for name in registered if name.endswith("LR")} and {n for n in registered if n.endswith("Momentum")}
    kinds = {(c.train_cfg.get("by_epoch", c.train_cfg.get("type") == "EpochBasedTrainLoop"), c.drop_last)
             for c in CASES}
    assert kinds >= {(True, False), (True, True), (False, False)}
    converted = [c for case in CASES for c in schedules._scheduler_dicts(case.param_scheduler)
                 if c.get("convert_to_iter_based")]
    assert converted and any("end" not in c for case in CASES for c in schedules._scheduler_dicts(case.param_scheduler))
