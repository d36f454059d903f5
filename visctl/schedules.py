"""Learning-rate, momentum and weight-decay schedules, stepped with mmengine's own scheduler classes.

No formula is re-implemented and no runner is built: a dummy optimizer gets the config's param groups, the
config's schedulers are built by mmengine's registry exactly as its Runner builds them (``epoch_length``,
``convert_to_iter_based``), and they are stepped the way its ``ParamSchedulerHook`` steps them: iteration
schedulers after every iteration, epoch schedulers after every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visctl.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


@dataclass
class Schedule:
    """Per-iteration values of every distinct param group."""

    groups: list[str]  # a label per distinct group (the parameters that share its values)
    lr: np.ndarray  # (iters, groups)
    momentum: np.ndarray | None  # (iters, groups) or None when the optimizer has none
    weight_decay: np.ndarray  # (iters, groups)
    by_epoch: bool
    iters_per_epoch: int
    total_iters: int
    rule: str  # how iters/epoch was computed, for the plot's subtitle
    notes: list[str] = field(default_factory=list)

    def columns(self) -> dict[str, np.ndarray]:
        """Per-iteration columns: iteration, epoch, and lr / momentum / weight_decay per group."""
        import numpy as np

        cols = {"iteration": np.arange(self.total_iters)}
        if self.by_epoch:
            cols["epoch"] = cols["iteration"] // self.iters_per_epoch
        for g, label in enumerate(self.groups):
            suffix = "" if len(self.groups) == 1 else f"[{label}]"
            cols[f"lr{suffix}"] = self.lr[:, g]
            if self.momentum is not None:
                cols[f"momentum{suffix}"] = self.momentum[:, g]
            cols[f"weight_decay{suffix}"] = self.weight_decay[:, g]
        return cols


def csv_text(cols: dict[str, np.ndarray]) -> str:
    """The columns as CSV text with a header line."""
    import io

    import numpy as np

    buf = io.StringIO()
    np.savetxt(buf, np.column_stack(list(cols.values())), delimiter=",", header=",".join(cols), comments="",
               fmt="%.10g")
    return buf.getvalue()


def iterations_per_epoch(dataset_size: int, batch_size: int, ngpus: int, drop_last: bool) -> tuple[int, str]:
    """Iterations per epoch: ceil(size / (batch x gpus)), floor with ``drop_last``; and the rule as text."""
    total = batch_size * ngpus
    if drop_last:
        n, op = dataset_size // total, "floor"
    else:
        n, op = math.ceil(dataset_size / total), "ceil"
    return n, f"iters/epoch = {op}({dataset_size} / ({batch_size} x {ngpus} GPU{'s' if ngpus > 1 else ''})) = {n}"


def _dummy_model() -> nn.Module:
    # parameters of every kind paramwise_cfg rules look at: conv/linear weights and biases, norms, tokens
    import torch
    from torch import nn

    class Dummy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential()
            self.backbone.add_module("conv", nn.Conv2d(1, 1, 1))
            self.backbone.add_module("bn", nn.BatchNorm2d(1))
            self.backbone.add_module("ln", nn.LayerNorm(1))
            self.backbone.cls_token = nn.Parameter(torch.zeros(1))
            self.backbone.pos_embed = nn.Parameter(torch.zeros(1))
            self.neck = nn.Linear(1, 1)
            self.head = nn.Sequential()
            self.head.add_module("fc", nn.Linear(1, 1))

    return Dummy()


def _signature(group: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in group.items()
                        if k != "params" and isinstance(v, (int, float, bool, str, list, tuple, type(None)))))


def build_optimizer(optim_cfg: dict, model: nn.Module | None = None) -> tuple[Any, list[str], list[str]]:
    """An mmengine OptimWrapper over the config's param groups, one group per distinct set of values.

    Groups with the same hyperparameters evolve identically under any scheduler, so only one of each is
    kept (a ResNet-50 with paramwise_cfg has 161 groups and a handful of distinct ones).

    Returns:
        The optim wrapper, a label per kept group, notes.
    """
    from mmengine.optim import build_optim_wrapper

    notes: list[str] = []
    model = model or _dummy_model()
    cfg = dict(optim_cfg)
    cfg.pop("type", None)  # AmpOptimWrapper and friends schedule exactly like OptimWrapper
    for key in ("loss_scale", "dtype", "accumulative_counts", "clip_grad"):
        cfg.pop(key, None)
    opt_cfg = dict(cfg.get("optimizer") or {})
    from mmengine.registry import OPTIMIZERS

    if "type" not in opt_cfg:
        raise ConfigError("optim_wrapper.optimizer has no type", hint="e.g. optimizer=dict(type='SGD', lr=0.1)")
    if opt_cfg["type"] not in OPTIMIZERS.module_dict:
        # LARS, Lamb, ... live in OpenMMLab packages; the schedule only needs the group hyperparameters
        notes.append(f"optimizer {opt_cfg['type']} is not installed; scheduled as SGD with the same lr, "
                     "momentum and weight decay")
        keep = {k: opt_cfg[k] for k in ("lr", "momentum", "weight_decay") if k in opt_cfg}
        opt_cfg = dict(type="SGD", **keep)
    cfg["optimizer"] = opt_cfg
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

    constructor = cfg.get("constructor")
    # a name the registry does not hold would be imported as a dotted path and called (mmengine's
    # Registry.get falls back to get_object_from_string): only registered constructors are built
    if constructor is not None and constructor not in OPTIM_WRAPPER_CONSTRUCTORS.module_dict:
        raise ConfigError(f"unknown optim_wrapper constructor {constructor!r}",
                          hint=f"known: {', '.join(sorted(OPTIM_WRAPPER_CONSTRUCTORS.module_dict))}")
    wrapper = build_optim_wrapper(model, dict(type="OptimWrapper", **cfg))
    optimizer = wrapper.optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    kept: dict[tuple, dict] = {}
    members: dict[tuple, list[str]] = {}
    for group in optimizer.param_groups:
        sig = _signature(group)
        kept.setdefault(sig, group)
        members.setdefault(sig, []).extend(names.get(id(p), "?") for p in group["params"])
    optimizer.param_groups[:] = list(kept.values())
    labels = [] if len(kept) > 1 else ["all parameters"]
    for sig in kept if len(kept) > 1 else []:
        params = members[sig]
        labels.append(params[0] if len(params) == 1 else f"{params[0]} +{len(params) - 1}")
    return wrapper, labels, notes


def _known_schedulers() -> list[str]:
    import mmengine.optim  # noqa: F401  (registers the schedulers)
    from mmengine.registry import PARAM_SCHEDULERS

    return sorted(PARAM_SCHEDULERS.module_dict)


def build_schedulers(sched_cfg: Any, wrapper: Any, iters_per_epoch: int) -> list[Any]:
    """Build the config's param_scheduler (a dict or a list) as mmengine's Runner does."""
    from mmengine.registry import PARAM_SCHEDULERS

    known = _known_schedulers()
    cfgs = [sched_cfg] if isinstance(sched_cfg, dict) else list(sched_cfg or [])
    out = []
    for c in cfgs:
        c = dict(c)
        if c.get("type") not in known:
            raise ConfigError(f"unknown scheduler type {c.get('type')!r}", hint=f"known: {', '.join(known)}")
        try:
            out.append(PARAM_SCHEDULERS.build(c, default_args=dict(optimizer=wrapper, epoch_length=iters_per_epoch)))
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(f"cannot build scheduler {c}: {exc}") from exc
    return out


def simulate(optim_cfg: dict, sched_cfg: Any, *, by_epoch: bool, max_epochs: int | None, max_iters: int | None,
             iters_per_epoch: int, rule: str, model: nn.Module | None = None, per_iteration: bool = False) -> Schedule:
    """Step the schedulers over the whole training and record each distinct group's values per iteration.

    Epochs in which no iteration-based scheduler is inside its ``[begin, end)`` window are recorded in one
    slice (1.5 M ImageNet iterations take seconds, not minutes); ``per_iteration`` forces a step() per
    iteration throughout, which gives the same values.
    """
    import warnings

    import numpy as np

    wrapper, labels, notes = build_optimizer(optim_cfg, model)
    optimizer = wrapper.optimizer
    total = (max_epochs or 0) * iters_per_epoch if by_epoch else int(max_iters or 0)
    if total <= 0:
        raise ConfigError(f"nothing to schedule: {rule}, {'max_epochs' if by_epoch else 'max_iters'}="
                          f"{max_epochs if by_epoch else max_iters}",
                          hint="set train_cfg.max_epochs / max_iters and a --dataset-size larger than one batch")
    with warnings.catch_warnings():
        # mmengine warns that scheduler.step() runs before optimizer.step(); no optimizer step happens here
        warnings.filterwarnings("ignore", message="Detected call of `scheduler.step")
        schedulers = build_schedulers(sched_cfg, wrapper, iters_per_epoch)
        if not schedulers:
            notes.append("no param_scheduler: the values stay at the optimizer's settings")
        iter_based = [s for s in schedulers if not s.by_epoch]
        epoch_based = [s for s in schedulers if s.by_epoch]
        groups = optimizer.param_groups
        has_momentum = "momentum" in groups[0] or "betas" in groups[0]
        lr = np.empty((total, len(groups)))
        mom = np.empty((total, len(groups))) if has_momentum else None
        wd = np.empty((total, len(groups)))

        def record(i: int, n: int = 1) -> None:
            for g, group in enumerate(groups):
                lr[i:i + n, g] = group["lr"]
                wd[i:i + n, g] = group.get("weight_decay", 0.0)
                if mom is not None:
                    mom[i:i + n, g] = group["momentum"] if "momentum" in group else group["betas"][0]

        epochs = max_epochs if by_epoch else 1
        per_epoch = iters_per_epoch if by_epoch else total
        i = 0
        for _ in range(int(epochs or 0)):
            if not per_iteration and all(_idle(s, per_epoch) for s in iter_based):
                # no iteration scheduler acts during this epoch: its values are constant, so record the
                # epoch in one slice and advance the idle schedulers' step counters as step() would
                record(i, per_epoch)
                for s in iter_based:
                    _advance_idle(s, per_epoch)
                i += per_epoch
            else:
                for _ in range(per_epoch):
                    record(i)
                    for s in iter_based:
                        s.step()
                    i += 1
            if by_epoch:
                for s in epoch_based:
                    s.step()
    return Schedule(groups=labels, lr=lr, momentum=mom, weight_decay=wd, by_epoch=by_epoch,
                    iters_per_epoch=iters_per_epoch, total_iters=total, rule=rule, notes=notes)


def _idle(scheduler: Any, n: int) -> bool:
    """Whether the next ``n`` step() calls fall outside the scheduler's window (and so change nothing)."""
    step = getattr(scheduler, "_global_step", None)
    if not isinstance(step, int):
        return False  # an mmengine without the counter: take no shortcut
    return step + n < scheduler.begin or step + 1 >= scheduler.end


def _advance_idle(scheduler: Any, n: int) -> None:
    # what n calls of mmengine's _ParamScheduler.step() do outside the window: count, and remember the values
    scheduler._global_step += n
    scheduler._last_value = [g[scheduler.param_name] for g in scheduler.optimizer.param_groups]


def training_length(train_cfg: dict) -> tuple[bool, int | None, int | None]:
    """(by_epoch, max_epochs, max_iters) from ``train_cfg`` as mmengine reads it."""
    if not train_cfg:
        raise ConfigError("the config has no train_cfg",
                          hint="add train_cfg = dict(by_epoch=True, max_epochs=100) (or max_iters=...)")
    loop = str(train_cfg.get("type", ""))
    if "by_epoch" in train_cfg:
        by_epoch = bool(train_cfg["by_epoch"])
    elif loop:
        by_epoch = loop == "EpochBasedTrainLoop"
    else:
        by_epoch = "max_epochs" in train_cfg
    return by_epoch, train_cfg.get("max_epochs"), train_cfg.get("max_iters")


def plot(schedule: Schedule, title: str, window: tuple[float, float] = (12.0, 7.0), style: str | None = None,
         log_scale: bool = False, max_points: int = 20_000) -> Any:
    """A matplotlib Figure: LR of every group, and momentum / weight decay panels when they change."""
    import matplotlib.style
    import numpy as np
    from matplotlib.figure import Figure

    rows = [("learning rate", schedule.lr)]
    if schedule.momentum is not None and np.ptp(schedule.momentum, axis=0).max() > 0:
        rows.append(("momentum", schedule.momentum))
    if np.ptp(schedule.weight_decay, axis=0).max() > 0:
        rows.append(("weight decay", schedule.weight_decay))
    stride = max(1, schedule.total_iters // max_points)
    x = np.arange(0, schedule.total_iters, stride)
    ctx = matplotlib.style.context(style) if style else matplotlib.style.context("default")
    with ctx:
        fig = Figure(figsize=window, layout="constrained")
        axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False,
                            gridspec_kw=dict(height_ratios=[3] + [1] * (len(rows) - 1)))[:, 0]
        for ax, (name, values) in zip(axes, rows):
            for g, label in enumerate(schedule.groups):
                ax.plot(x, values[::stride, g], label=label, drawstyle="steps-post", linewidth=1.4)
            ax.set_ylabel(name)
            ax.grid(True, alpha=0.3)
        if log_scale:
            axes[0].set_yscale("log")
        if len(schedule.groups) > 1:
            axes[0].legend(title="param groups", fontsize="small")
        axes[-1].set_xlabel("iteration")
        if schedule.by_epoch:
            ipe = schedule.iters_per_epoch
            top = axes[0].secondary_xaxis("top", functions=(lambda v: v / ipe, lambda v: v * ipe))
            top.set_xlabel("epoch")
        fig.suptitle(f"{title}\n{schedule.rule}, {schedule.total_iters} iterations", fontsize="medium")
    return fig


# training-set sizes of well-known datasets, used when the config's dataset is not on this machine
KNOWN_SIZES = {"ImageNet": 1_281_167, "CIFAR10": 50_000, "CIFAR100": 50_000, "MNIST": 60_000,
               "FashionMNIST": 60_000, "ImageNet21k": 14_197_122}


def dataset_size_from_config(dataset_cfg: dict | None) -> tuple[int, str] | None:
    """Count a config's training set without building it: images under its folder, lines of its
    annotation file, or the known size of a standard dataset. None when it cannot be told."""
    from pathlib import Path

    from visctl.images import is_image_path

    if not dataset_cfg:
        return None
    ds = dict(dataset_cfg)
    while "dataset" in ds and isinstance(ds["dataset"], dict):  # RepeatDataset / ClassBalancedDataset wrappers
        ds = dict(ds["dataset"])
    root = Path(str(ds.get("data_root") or ds.get("root") or ""))
    ann = ds.get("ann_file")
    if ann:
        path = Path(ann) if Path(ann).is_absolute() else root / ann
        if path.is_file():
            return sum(1 for line in path.read_text().splitlines() if line.strip()), f"lines of {path}"
    prefix = ds.get("data_prefix")
    prefix = prefix.get("img_path", prefix.get("img", "")) if isinstance(prefix, dict) else (prefix or "")
    folder = root / str(prefix)
    if str(folder) not in ("", ".") and folder.is_dir():
        n = sum(1 for p in folder.rglob("*") if p.is_file() and is_image_path(p))
        if n:
            return n, f"images under {folder}"
    kind = str(ds.get("type", "")).split(".")[-1]
    if kind in KNOWN_SIZES:
        return KNOWN_SIZES[kind], f"the {kind} training set"
    return None
