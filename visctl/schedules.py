"""Learning-rate, momentum and weight-decay schedules, built and stepped as mmengine's Runner does.

No formula is re-implemented and no runner is built. The config's optimizer wrapper (or wrappers: an
OptimWrapperDict) is built over the config's model or a stand-in with parameters of every kind
``paramwise_cfg`` looks at; the config's schedulers are built by mmengine's registry with what
``Runner.build_param_scheduler`` adds (``end`` = the loop's max_epochs / max_iters when absent,
``epoch_length`` = len(train_dataloader), one list per optimizer); and they are stepped where
``ParamSchedulerHook`` steps them in the loop ``train_cfg`` names: iteration schedulers after every
iteration, epoch schedulers after every epoch (an IterBasedTrainLoop's one epoch ends after its last
iteration). ``tests/test_lr_runner.py`` compares every value with a real Runner's.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visctl.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


@dataclass(frozen=True)
class TrainLoop:
    """What mmengine's train loop (``mmengine.runner.loops``) tells the schedulers."""

    by_epoch: bool  # EpochBasedTrainLoop, else IterBasedTrainLoop
    max_epochs: int  # Runner.max_epochs; an IterBasedTrainLoop's is 1
    max_iters: int  # Runner.max_iters; an EpochBasedTrainLoop's is max_epochs x epoch_length
    epoch_length: int | None  # len(train_dataloader); None: unknown, which only an IterBasedTrainLoop can afford

    @classmethod
    def build(cls, by_epoch: bool, length: int, epoch_length: int | None) -> TrainLoop:
        """From ``training_length``'s (by_epoch, max_epochs or max_iters) and len(train_dataloader)."""
        if by_epoch:
            if not epoch_length:
                raise ConfigError("an epoch has no iteration (len(train_dataloader) = 0)",
                                  hint="pass a --dataset-size of at least one batch, or drop --drop-last")
            return cls(True, length, length * epoch_length, epoch_length)
        return cls(False, 1, length, epoch_length)


@dataclass
class Schedule:
    """Per-iteration values of every distinct param group."""

    groups: list[str]  # a label per distinct group (the parameters that share its values)
    members: list[list[str]]  # the parameter names of each distinct group
    lr: np.ndarray  # (iters, groups)
    momentum: np.ndarray | None  # (iters, groups): momentum, or betas[0]; NaN for a group with neither
    weight_decay: np.ndarray  # (iters, groups)
    loop: TrainLoop
    rule: str  # how iters/epoch was computed, for the plot's subtitle
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # what the schedule was computed from, for the manifest

    @property
    def by_epoch(self) -> bool:
        return self.loop.by_epoch

    @property
    def iters_per_epoch(self) -> int | None:
        return self.loop.epoch_length

    @property
    def total_iters(self) -> int:
        return self.loop.max_iters

    def columns(self) -> dict[str, np.ndarray]:
        """Per-iteration columns: iteration, epoch, and lr / momentum / weight_decay per group."""
        import numpy as np

        cols = {"iteration": np.arange(self.total_iters)}
        if self.loop.by_epoch and self.loop.epoch_length:
            cols["epoch"] = cols["iteration"] // self.loop.epoch_length
        for g, label in enumerate(self.groups):
            suffix = "" if len(self.groups) == 1 else f"[{label}]"
            cols[f"lr{suffix}"] = self.lr[:, g]
            if self.momentum is not None:
                cols[f"momentum{suffix}"] = self.momentum[:, g]
            cols[f"weight_decay{suffix}"] = self.weight_decay[:, g]
        return cols


def csv_text(cols: dict[str, np.ndarray]) -> str:
    """The columns as CSV text with a header line, values with 10 significant digits."""
    import numpy as np

    texts = []
    for values in cols.values():
        # a schedule repeats few distinct values: format each once
        unique, inverse = np.unique(values, return_inverse=True)
        formatted = np.array([f"{v:.10g}" for v in unique.tolist()], dtype=object)
        texts.append(formatted[inverse.ravel()].tolist())
    return ",".join(cols) + "\n" + "".join(",".join(row) + "\n" for row in zip(*texts))


def dataloader_length(dataset_size: int, batch_size: int, ngpus: int = 1, drop_last: bool = False,
                      sampler: str = "DefaultSampler") -> tuple[int, str]:
    """len(train_dataloader) on rank 0, which the Runner passes as ``epoch_length``; and the rule as text.

    mmengine's DefaultSampler gives each of the ``ngpus`` ranks ceil(size / ngpus) samples (rank 0 gets that
    many with ``round_up`` on or off), batched with ceil, floor with ``drop_last``; an InfiniteSampler's
    length is the whole dataset's, whatever the number of GPUs.
    """
    gpus = f"{ngpus} GPU{'s' if ngpus > 1 else ''}"
    if sampler.rsplit(".", 1)[-1] == "InfiniteSampler":
        n = dataset_size // batch_size if drop_last else math.ceil(dataset_size / batch_size)
        return n, f"len(InfiniteSampler) = {dataset_size}: iters/epoch = {'floor' if drop_last else 'ceil'}" \
                  f"({dataset_size} / {batch_size}) = {n}"
    per_rank = math.ceil(dataset_size / ngpus)
    if not drop_last:  # ceil(ceil(size / gpus) / batch) == ceil(size / (batch x gpus))
        n = math.ceil(per_rank / batch_size)
        return n, f"iters/epoch = ceil({dataset_size} / ({batch_size} x {gpus})) = {n}"
    n = per_rank // batch_size
    if ngpus == 1:
        return n, f"iters/epoch = floor({dataset_size} / ({batch_size} x {gpus})) = {n}"
    return n, f"iters/epoch = floor(ceil({dataset_size} / {gpus}) / {batch_size}) = {n}"


def training_length(train_cfg: Mapping) -> tuple[bool, int]:
    """(by_epoch, max_epochs or max_iters) of the loop ``Runner.build_train_loop`` builds from ``train_cfg``."""
    if not train_cfg:
        raise ConfigError("the config has no train_cfg",
                          hint="add train_cfg = dict(by_epoch=True, max_epochs=100) (or max_iters=...)")
    loop = train_cfg.get("type")
    loop = (loop if isinstance(loop, str) else getattr(loop, "__name__", "")).rsplit(".", 1)[-1] if loop else ""
    if loop and "by_epoch" in train_cfg:  # Runner.build_train_loop raises the same
        raise ConfigError("train_cfg has both type and by_epoch", hint="keep one of them")
    if "by_epoch" in train_cfg:
        by_epoch = bool(train_cfg["by_epoch"])
    elif loop in ("EpochBasedTrainLoop", "IterBasedTrainLoop"):
        by_epoch = loop == "EpochBasedTrainLoop"
    else:  # a loop of another package, or neither key (which the Runner refuses): go by its length key
        by_epoch = "max_epochs" in train_cfg
    key = "max_epochs" if by_epoch else "max_iters"
    length = train_cfg.get(key)
    if not isinstance(length, (int, float)) or int(length) != length or length <= 0:
        raise ConfigError(f"train_cfg.{key} is {length!r}",
                          hint=f"an {'epoch' if by_epoch else 'iteration'}-based train_cfg needs a positive "
                               f"integer {key}")
    return by_epoch, int(length)


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


@contextmanager
def _quiet_mmengine() -> Iterator[None]:
    # mmengine logs every paramwise_cfg decision at INFO on stdout, which carries only visctl's results
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _signature(group: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in group.items()
                        if k != "params" and isinstance(v, (int, float, bool, str, list, tuple, type(None)))))


def _type_name(value: Any) -> str:
    return value if isinstance(value, str) else getattr(value, "__name__", str(value))


def _sub_optimizers(optim_cfg: Mapping) -> dict[str, Mapping]:
    """The per-optimizer configs of a multi-optimizer optim_wrapper (mmagic's MultiOptimWrapperConstructor
    format: ``dict(constructor=..., generator=dict(optimizer=...), discriminator=dict(optimizer=...))``)."""
    if "optimizer" in optim_cfg:
        return {}
    return {k: v for k, v in optim_cfg.items() if isinstance(v, Mapping) and "optimizer" in v}


def needs_model(optim_cfg: Mapping) -> bool:
    """Whether the param groups depend on the model's parameter names (paramwise_cfg, a custom constructor)."""
    cfgs = list(_sub_optimizers(optim_cfg).values()) or [optim_cfg]
    return any(c.get("paramwise_cfg") or c.get("constructor") for c in cfgs)


def _build_one(optim_cfg: Mapping, module: nn.Module, merge: bool) -> tuple[Any, list[str], list[list[str]], list[str]]:
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIMIZERS

    notes: list[str] = []
    cfg = dict(optim_cfg)
    cfg.pop("type", None)  # AmpOptimWrapper and friends schedule exactly like OptimWrapper
    for key in ("loss_scale", "dtype", "accumulative_counts", "clip_grad"):
        cfg.pop(key, None)
    opt_cfg = dict(cfg.get("optimizer") or {})
    if "type" not in opt_cfg:
        raise ConfigError("optim_wrapper.optimizer has no type", hint="e.g. optimizer=dict(type='SGD', lr=0.1)")
    if isinstance(opt_cfg["type"], str) and OPTIMIZERS.get(opt_cfg["type"]) is None:
        # LARS, Lamb, ... live in OpenMMLab packages; the schedule only needs the group hyperparameters
        stand_in = "Adam" if "betas" in opt_cfg else "SGD"
        notes.append(f"optimizer {opt_cfg['type']} is not installed; scheduled as {stand_in} with the same lr, "
                     f"{'betas' if stand_in == 'Adam' else 'momentum'} and weight decay")
        keep = ("lr", "betas", "weight_decay") if stand_in == "Adam" else ("lr", "momentum", "weight_decay")
        opt_cfg = dict(type=stand_in, **{k: opt_cfg[k] for k in keep if k in opt_cfg})
    cfg["optimizer"] = opt_cfg
    constructor = cfg.get("constructor")
    # a name the registry does not hold would be imported as a dotted path and called (mmengine's
    # Registry.get falls back to get_object_from_string): only registered constructors are built; another
    # plain name (mmpretrain's layer-decay constructor without mmpretrain installed, say) gives mmengine's
    # default groups
    if constructor is not None and (not isinstance(constructor, str) or (
            "." in constructor and constructor not in OPTIM_WRAPPER_CONSTRUCTORS.module_dict)):
        raise ConfigError(f"unknown optim_wrapper constructor {constructor!r}",
                          hint=f"known: {', '.join(sorted(OPTIM_WRAPPER_CONSTRUCTORS.module_dict))}")
    if isinstance(constructor, str) and constructor not in OPTIM_WRAPPER_CONSTRUCTORS.module_dict:
        notes.append(f"optim_wrapper constructor {constructor} is not installed; param groups built by "
                     "mmengine's DefaultOptimWrapperConstructor")
        cfg.pop("constructor")
    try:
        with _quiet_mmengine():
            wrapper = build_optim_wrapper(module, dict(type="OptimWrapper", **cfg))
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        raise ConfigError(f"cannot build the optimizer {opt_cfg}: {exc}") from exc
    optimizer = wrapper.optimizer
    names = {id(p): n for n, p in module.named_parameters()}
    kept: dict[Any, dict] = {}
    members: dict[Any, list[str]] = {}
    for i, group in enumerate(optimizer.param_groups):
        # groups with the same hyperparameters evolve identically under any scheduler, so one of each is
        # kept (a ResNet-50 with paramwise_cfg has 161 groups and a handful of distinct ones)
        sig = _signature(group) if merge else i
        kept.setdefault(sig, group)
        members.setdefault(sig, []).extend(names.get(id(p), "?") for p in group["params"])
    optimizer.param_groups[:] = list(kept.values())
    labels = []
    for sig in kept:
        params = members[sig] or ["(no parameters)"]
        labels.append(params[0] if len(params) == 1 else f"{params[0]} +{len(params) - 1}")
    return wrapper, labels, list(members.values()), notes


def build_optim_wrappers(optim_cfg: Mapping, model: nn.Module | None = None, merge: bool = True
                         ) -> tuple[list[tuple[str | None, Any]], list[str], list[list[str]], list[str]]:
    """The optimizer wrapper(s) ``Runner.build_optim_wrapper`` builds, one group per distinct set of values.

    One ``optimizer`` gives one wrapper (name None). Without one, each sub-dict holding an ``optimizer`` is the
    wrapper of the model's submodule of that name, as OpenMMLab's MultiOptimWrapperConstructor builds an
    OptimWrapperDict for GANs.

    Returns:
        [(name, wrapper)], a label per kept group, the parameter names of each, notes.
    """
    subs = _sub_optimizers(optim_cfg)
    if "optimizer" not in optim_cfg and not subs:
        raise ConfigError("the config has no optim_wrapper.optimizer",
                          hint="add optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))")
    if not subs:
        wrapper, labels, members, notes = _build_one(optim_cfg, model or _dummy_model(), merge)
        return [(None, wrapper)], ["all parameters"] if len(labels) == 1 else labels, members, notes
    wrappers: list[tuple[str | None, Any]] = []
    all_labels: list[str] = []
    all_members: list[list[str]] = []
    all_notes: list[str] = []
    for name, sub in subs.items():
        module = getattr(model, "_modules", {}).get(name) if model is not None else None
        if module is None:
            if model is not None:
                all_notes.append(f"the model has no submodule {name!r}; its optimizer's groups use stand-in "
                                 "parameters")
            module = _dummy_model()
        wrapper, labels, members, notes = _build_one(sub, module, merge)
        wrappers.append((name, wrapper))
        all_labels += [name] if len(labels) == 1 else [f"{name}: {label}" for label in labels]
        all_members += [[f"{name}.{n}" for n in m] for m in members]
        all_notes += [f"{name}: {n}" for n in notes]
    return wrappers, all_labels, all_members, all_notes


def _known_schedulers() -> list[str]:
    import mmengine.optim  # noqa: F401  (registers the schedulers)
    from mmengine.registry import PARAM_SCHEDULERS

    return sorted(PARAM_SCHEDULERS.module_dict)


def _scheduler_dicts(sched_cfg: Any) -> Iterator[Mapping]:
    if isinstance(sched_cfg, Mapping):
        if "type" in sched_cfg:
            yield sched_cfg
        else:  # one list per optimizer
            for v in sched_cfg.values():
                yield from _scheduler_dicts(v)
    elif isinstance(sched_cfg, Sequence) and not isinstance(sched_cfg, str):
        for v in sched_cfg:
            yield from _scheduler_dicts(v)


def _build_list(sched_cfg: Any, wrapper: Any, loop: TrainLoop) -> list[Any]:
    # Runner._build_param_scheduler (mmengine/runner/runner.py): a dict or a list of dicts; `end` defaults to
    # the loop's max_epochs (by_epoch, the default) or max_iters; epoch_length = len(train_dataloader)
    from mmengine.registry import PARAM_SCHEDULERS

    cfgs = list(sched_cfg) if isinstance(sched_cfg, Sequence) and not isinstance(sched_cfg, str) else [sched_cfg]
    out = []
    for c in cfgs:
        if not isinstance(c, Mapping):
            raise ConfigError(f"param_scheduler entry {c!r} is not a dict", hint="e.g. dict(type='StepLR', step_size=30)")
        c = copy.deepcopy(dict(c))
        kind = c.get("type")
        if not isinstance(kind, str) or PARAM_SCHEDULERS.get(kind) is None:
            raise ConfigError(f"unknown scheduler type {kind!r}", hint=f"known: {', '.join(_known_schedulers())}")
        c.setdefault("end", loop.max_epochs if c.get("by_epoch", True) else loop.max_iters)
        if c.get("convert_to_iter_based") and not loop.epoch_length:
            raise ConfigError(f"{kind} has convert_to_iter_based=True, which needs the iterations per epoch",
                              hint="pass --dataset-size N (the training set's size)")
        try:
            out.append(PARAM_SCHEDULERS.build(c, default_args=dict(optimizer=wrapper, epoch_length=loop.epoch_length)))
        except (TypeError, ValueError, KeyError, AssertionError) as exc:
            raise ConfigError(f"cannot build scheduler {c}: {exc}") from exc
    return out


def build_schedulers(sched_cfg: Any, wrappers: list[tuple[str | None, Any]], loop: TrainLoop) -> list[list[Any]]:
    """The schedulers of each wrapper, as ``Runner.build_param_scheduler`` builds them.

    With several optimizers, a dict without ``type`` gives each optimizer its own entry; anything else is
    built once per optimizer.
    """
    if sched_cfg is None:
        return [[] for _ in wrappers]
    if len(wrappers) == 1 and wrappers[0][0] is None:
        return [_build_list(sched_cfg, wrappers[0][1], loop)]
    out = []
    for name, wrapper in wrappers:
        if isinstance(sched_cfg, Mapping) and "type" not in sched_cfg:
            if name not in sched_cfg:
                raise ConfigError(f"param_scheduler has no entry for the optimizer {name!r}",
                                  hint=f"give one for each of {', '.join(str(n) for n, _ in wrappers)}")
            out.append(_build_list(sched_cfg[name], wrapper, loop))
        else:
            out.append(_build_list(sched_cfg, wrapper, loop))
    return out


def simulate(optim_cfg: Mapping, sched_cfg: Any, loop: TrainLoop, *, rule: str = "", model: nn.Module | None = None,
             lr_scale: float = 1.0, per_iteration: bool = False) -> Schedule:
    """Step the schedulers over the whole training and record each distinct group's values per iteration.

    The value recorded for an iteration is the one its optimizer step uses (read where ``before_train_iter``
    would). Stretches in which no iteration-based scheduler is inside its ``[begin, end)`` window are recorded
    in one slice, since its step() only counts there (1.5 M ImageNet iterations take seconds, not
    minutes); ``per_iteration`` forces a step() per iteration throughout, which gives the same values.

    Args:
        lr_scale: ``Runner.scale_lr``'s factor (``auto_scale_lr``), applied before the schedulers are built.
    """
    import warnings

    import numpy as np

    # OneCycle's eta_max and ReduceOnPlateau's min_value may hold one value per param group: keep every group
    merge = not any(isinstance(c.get(k), (list, tuple)) for c in _scheduler_dicts(sched_cfg)
                    for k in ("eta_max", "min_value"))
    wrappers, labels, members, notes = build_optim_wrappers(optim_cfg, model, merge)
    groups = [g for _, w in wrappers for g in w.optimizer.param_groups]
    if lr_scale != 1.0:
        for group in groups:
            group["lr"] = group["lr"] * lr_scale
    with warnings.catch_warnings():
        # mmengine warns that scheduler.step() runs before optimizer.step(); no optimizer step happens here
        warnings.filterwarnings("ignore", message="Detected call of `scheduler.step")
        per_wrapper = build_schedulers(sched_cfg, wrappers, loop)
        schedulers = [s for lst in per_wrapper for s in lst]
        if not schedulers:
            notes.append("no param_scheduler: the values stay at the optimizer's settings")
        plateau = sorted({type(s).__name__ for s in schedulers if getattr(s, "need_val_args", False)})
        if plateau:
            notes.append(f"{', '.join(plateau)} change values only on validation metrics, which a schedule "
                         "has none of: drawn as if no reduction happened")
        iter_based = [s for s in schedulers if not s.by_epoch]
        epoch_based = [s for s in schedulers if s.by_epoch]
        has_momentum = any("momentum" in g or "betas" in g for g in groups)
        runs: list[int] = []  # iterations in a row that use the values below
        values: list[tuple[float, ...]] = []  # lr..., weight_decay..., momentum... of every group

        def record(n: int) -> None:
            row = [g["lr"] for g in groups] + [g.get("weight_decay", 0.0) for g in groups]
            if has_momentum:
                row += [g["momentum"] if "momentum" in g else g["betas"][0] if "betas" in g else math.nan
                        for g in groups]
            runs.append(n)
            values.append(tuple(row))

        plain = [s for s in iter_based if _steps_plainly(s)]
        # EpochBasedTrainLoop: max_epochs epochs of len(train_dataloader) iterations; IterBasedTrainLoop: one
        # epoch of max_iters iterations whose after_train_epoch comes after the last one (mmengine.runner.loops)
        epoch_iters = (loop.epoch_length or 0) if loop.by_epoch else loop.max_iters
        for _ in range(loop.max_epochs):
            j = 0
            while j < epoch_iters:
                n = 0
                if not per_iteration and len(plain) == len(iter_based):
                    n = min([epoch_iters - j] + [_idle_steps(s) for s in iter_based])
                if n > 0:  # no iteration scheduler acts: the values stay, and each step() would only count
                    record(n)
                    for s in iter_based:
                        _advance_idle(s, n)
                else:
                    n = 1
                    record(1)
                    for s in iter_based:  # ParamSchedulerHook.after_train_iter
                        s.step()
                j += n
            for s in epoch_based:  # ParamSchedulerHook.after_train_epoch
                s.step()
    table = np.repeat(np.array(values, dtype=float).reshape(len(values), -1), runs, axis=0)
    k = len(groups)
    lr, wd = table[:, :k], table[:, k:2 * k]
    mom = table[:, 2 * k:] if has_momentum else None
    return Schedule(groups=labels, members=members, lr=lr, momentum=mom, weight_decay=wd, loop=loop, rule=rule,
                    notes=notes)


def _steps_plainly(scheduler: Any) -> bool:
    """Whether the scheduler's step() is mmengine's _ParamScheduler.step, with its ``_global_step`` counter."""
    from mmengine.optim.scheduler.param_scheduler import _ParamScheduler

    return type(scheduler).step is _ParamScheduler.step and isinstance(getattr(scheduler, "_global_step", None), int)


def _idle_steps(scheduler: Any) -> int:
    """How many of the next step() calls fall outside the scheduler's ``[begin, end)`` window (and only count)."""
    step = scheduler._global_step + 1
    if step >= scheduler.end:
        return sys.maxsize
    return max(0, scheduler.begin - step)


def _advance_idle(scheduler: Any, n: int) -> None:
    # what n calls of mmengine's _ParamScheduler.step() do outside the window: count, and remember the values
    scheduler._global_step += n
    scheduler._last_value = [g[scheduler.param_name] for g in scheduler.optimizer.param_groups]


def schedule_from_config(cfg: Mapping, *, dataset_size: int | None, batch_size: int | None = None, ngpus: int = 1,
                         drop_last: bool | None = None, model: nn.Module | None = None,
                         per_iteration: bool = False) -> Schedule:
    """The schedule ``Runner.train()`` follows for ``cfg`` on ``ngpus`` GPUs.

    The loop from ``train_cfg``; len(train_dataloader) from the dataset size, the batch size
    (``train_dataloader.batch_size`` unless given), ``train_dataloader.drop_last`` (unless given) and its
    sampler; ``auto_scale_lr`` when enabled; then the optimizer wrapper(s) and ``param_scheduler``.

    Args:
        dataset_size: Training samples; may be None only for an IterBasedTrainLoop whose schedulers do not
            use ``convert_to_iter_based``.
        model: The model whose parameter names ``paramwise_cfg`` reads [default: a stand-in].
    """
    optim_cfg = cfg.get("optim_wrapper")
    if not isinstance(optim_cfg, Mapping):
        raise ConfigError("the config has no optim_wrapper.optimizer",
                          hint="add optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))")
    by_epoch, length = training_length(cfg.get("train_cfg") or {})
    loader = cfg.get("train_dataloader") or {}
    batch = batch_size or loader.get("batch_size")
    if not batch:
        raise ConfigError("no batch size: train_dataloader.batch_size is not set", hint="pass --batch-size")
    drop = bool(loader.get("drop_last", False)) if drop_last is None else drop_last
    sampler = _type_name((loader.get("sampler") or {}).get("type", "DefaultSampler"))
    sched_cfg = cfg.get("param_scheduler")
    converts = any(c.get("convert_to_iter_based") for c in _scheduler_dicts(sched_cfg))
    if dataset_size is None:
        if by_epoch or converts:
            raise ConfigError("cannot tell the training set's size from the config",
                              hint="pass --dataset-size N (e.g. 1281167 for ImageNet-1k)")
        epoch_length, rule = None, "IterBasedTrainLoop"
    else:
        epoch_length, rule = dataloader_length(dataset_size, int(batch), ngpus, drop, sampler)
        if not by_epoch:
            rule = f"IterBasedTrainLoop, {rule}" if converts else "IterBasedTrainLoop"
    loop = TrainLoop.build(by_epoch, length, epoch_length)
    scale = 1.0
    auto = cfg.get("auto_scale_lr")
    notes = []
    if isinstance(auto, Mapping) and auto.get("enable", False):  # Runner.scale_lr
        if not auto.get("base_batch_size"):
            raise ConfigError("auto_scale_lr is enabled without base_batch_size", hint="set auto_scale_lr.base_batch_size")
        scale = int(batch) * ngpus / float(auto["base_batch_size"])
        notes.append(f"auto_scale_lr: lr x {scale:g} ({batch} x {ngpus} / base batch {auto['base_batch_size']})")
    sched = simulate(optim_cfg, sched_cfg, loop, rule=rule, model=model, lr_scale=scale, per_iteration=per_iteration)
    sched.notes[:0] = notes
    sched.params = dict(dataset_size=dataset_size, batch_size=int(batch), ngpus=ngpus, drop_last=drop,
                        sampler=sampler, rule=rule, by_epoch=by_epoch, max_epochs=loop.max_epochs if by_epoch else None,
                        total_iters=loop.max_iters, epoch_length=epoch_length, lr_scale=scale, groups=sched.groups)
    return sched


def plot_points(values: np.ndarray, max_points: int = 20_000) -> np.ndarray:
    """The iterations a line of ``values`` is drawn through (steps-post): every ``total // max_points``-th,
    plus every iteration where the value changes while there are at most 4 x max_points of them, so that
    piecewise-constant schedules are drawn exactly."""
    import numpy as np

    total = len(values)
    idx = np.arange(0, total, max(1, total // max_points))
    changes = np.flatnonzero(values[1:] != values[:-1]) + 1
    if len(changes) <= 4 * max_points:
        idx = np.union1d(idx, changes)
    return np.union1d(idx, [total - 1])


def _changes(values: np.ndarray) -> bool:
    import numpy as np

    return bool(np.any(np.nan_to_num(np.ptp(values, axis=0)) > 0))


def plot(schedule: Schedule, title: str, window: tuple[float, float] = (12.0, 7.0), style: str | None = None,
         log_scale: bool = False, max_points: int = 20_000) -> Any:
    """A matplotlib Figure: LR of every group, and momentum / weight decay panels when they change."""
    import matplotlib.style
    from matplotlib.figure import Figure

    rows = [("learning rate", schedule.lr)]
    if schedule.momentum is not None and _changes(schedule.momentum):
        rows.append(("momentum", schedule.momentum))
    if _changes(schedule.weight_decay):
        rows.append(("weight decay", schedule.weight_decay))
    ctx = matplotlib.style.context(style) if style else matplotlib.style.context("default")
    with ctx:
        fig = Figure(figsize=window, layout="constrained")
        axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False,
                            gridspec_kw=dict(height_ratios=[3] + [1] * (len(rows) - 1)))[:, 0]
        for ax, (name, values) in zip(axes, rows):
            for g, label in enumerate(schedule.groups):
                x = plot_points(values[:, g], max_points)
                ax.plot(x, values[x, g], label=label, drawstyle="steps-post", linewidth=1.4)
            ax.set_ylabel(name)
            ax.grid(True, alpha=0.3)
        if log_scale:
            axes[0].set_yscale("log")
        if len(schedule.groups) > 1:
            axes[0].legend(title="param groups", fontsize="small")
        axes[-1].set_xlabel("iteration")
        ipe = schedule.iters_per_epoch
        if schedule.by_epoch and ipe:
            top = axes[0].secondary_xaxis("top", functions=(lambda v: v / ipe, lambda v: v * ipe))
            top.set_xlabel("epoch")
        fig.suptitle(f"{title}\n{schedule.rule}, {schedule.total_iters} iterations", fontsize="medium")
    return fig


# training-set sizes of well-known datasets, used when the config's dataset is not on this machine
KNOWN_SIZES = {"ImageNet": 1_281_167, "CIFAR10": 50_000, "CIFAR100": 50_000, "MNIST": 60_000,
               "FashionMNIST": 60_000, "ImageNet21k": 14_197_122}


def dataset_size_from_config(dataset_cfg: Mapping | None) -> tuple[int, str] | None:
    """Count a config's training set without building it: images under its folder, lines of its
    annotation file, or the known size of a standard dataset; ``RepeatDataset`` multiplies by ``times`` and
    ``ConcatDataset`` adds up. None when it cannot be told (``ClassBalancedDataset``'s size depends on the
    labels)."""
    from pathlib import Path

    from visctl.images import is_image_path

    if not dataset_cfg:
        return None
    ds = dict(dataset_cfg)
    kind = _type_name(ds.get("type", "")).rsplit(".", 1)[-1]
    if kind == "RepeatDataset" and isinstance(ds.get("dataset"), Mapping):
        inner = dataset_size_from_config(ds["dataset"])
        times = int(ds.get("times", 1))
        return (inner[0] * times, f"{times} x {inner[1]}") if inner else None
    if kind == "ConcatDataset" and isinstance(ds.get("datasets"), Sequence):
        parts = [dataset_size_from_config(d) for d in ds["datasets"]]
        if not parts or any(p is None for p in parts):
            return None
        return sum(p[0] for p in parts if p), " + ".join(p[1] for p in parts if p)
    if kind == "ClassBalancedDataset" or isinstance(ds.get("dataset"), Mapping):
        return None
    root = Path(str(ds.get("data_root") or ds.get("root") or ""))
    ann = ds.get("ann_file")
    if ann:
        path = Path(ann) if Path(ann).is_absolute() else root / ann
        if path.is_file() and path.suffix.lower() == ".json":  # mmengine's BaseDataset annotation format
            import json

            doc = json.loads(path.read_text())
            data = doc.get("data_list") if isinstance(doc, dict) else None
            return (len(data), f"data_list of {path}") if isinstance(data, list) else None
        if path.is_file():
            return sum(1 for line in path.read_text().splitlines() if line.strip()), f"lines of {path}"
    prefix = ds.get("data_prefix")
    prefix = prefix.get("img_path", prefix.get("img", "")) if isinstance(prefix, dict) else (prefix or "")
    folder = root / str(prefix)
    if str(folder) not in ("", ".") and folder.is_dir():
        n = sum(1 for p in folder.rglob("*") if p.is_file() and is_image_path(p))
        if n:
            return n, f"images under {folder}"
    if kind in KNOWN_SIZES:
        return KNOWN_SIZES[kind], f"the {kind} training set"
    return None
