"""Learning-rate, momentum and weight-decay schedules, built and stepped as mmengine's Runner does.

No formula is re-implemented and no runner is built. The config's optimizer wrapper (or wrappers: an
OptimWrapperDict) is built over the config's model or a stand-in with parameters of every kind
``paramwise_cfg`` looks at, by the optimizer and constructor that the config's ``default_scope`` package
registers (mmpretrain's Lamb and layer-decay constructor) as the Runner finds them; the config's schedulers
are built by mmengine's registry (under the same scope) with what
``Runner.build_param_scheduler`` adds (``end`` = the loop's max_epochs / max_iters when absent,
``epoch_length`` = len(train_dataloader), one list per optimizer); and they are stepped where
``ParamSchedulerHook`` steps them in the loop ``train_cfg`` names: iteration schedulers after every
iteration, epoch schedulers after every epoch (an IterBasedTrainLoop's one epoch ends after its last
iteration). Hooks that set param-group values (mmpretrain's SimSiamHook) run where the Runner calls them.
``tests/test_lr_runner.py`` and ``tests/test_lr_packages.py`` compare every value with a real Runner's, and
``tests/openmmlab/test_mm_lr.py`` does on mmpretrain's own configs.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visctl import openmmlab
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
                                  hint="pass a dataset_size= of at least one batch, or drop drop_last=True")
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
def quiet_mmengine(level: int | None = None) -> Iterator[None]:
    # mmengine logs every paramwise_cfg decision at INFO on stdout, which carries only visctl's results; and
    # OpenMMLab's constructors print (mmseg's layer-decay one prints every parameter's layer and a JSON of
    # its groups, through print_log(logger=None)): what they print is dropped, the groups are in the manifest
    import contextlib
    import io
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    before = logger.level
    logger.setLevel(level or logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(before)


#: keys an optimizer wrapper constructor writes into a param group to describe it, which no scheduler reads:
#: mmpretrain's layer-decay constructor names each parameter (``param_name``) in its own group
_DESCRIPTIVE_KEYS = frozenset({"param_name"})


def _signature(group: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in group.items()
                        if k != "params" and k not in _DESCRIPTIVE_KEYS
                        and isinstance(v, (int, float, bool, str, list, tuple, type(None)))))


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


def scope_installed(scope: str | None) -> bool:
    """Whether ``default_scope`` names an importable package (mmpretrain, mmdet, ...) whose registries the Runner
    would use; False for None, "mmengine" included (its registries are the root ones)."""
    return openmmlab.is_package(scope)


def _scope_name(scope: str | None) -> str:
    """The scope the Runner's lookups use: ``scope`` where it is an installed package, else mmengine's."""
    return scope if scope is not None and scope_installed(scope) else "mmengine"


@contextmanager
def in_scope(scope: str | None) -> Iterator[None]:
    """The config's ``default_scope`` as the current one while registries build, as the Runner sets it: mmengine's
    ``build_from_cfg`` then looks names up in that package's registry (``mmpretrain.registry.OPTIMIZERS`` holds
    Lamb and LARS, its ``OPTIM_WRAPPER_CONSTRUCTORS`` the layer-decay constructor) before the root's.

    Without one, or with one whose package is not installed, the Runner's lookups go to mmengine's own
    registries, whatever scope an earlier build in this process left current (``init_default_scope``)."""
    with openmmlab.scope(_scope_name(scope)):
        yield


def registered(registry: Any, name: str, scope: str | None) -> Any:
    """What ``registry`` builds for ``name`` under ``scope`` (the default scope's registry, then its ancestors;
    a ``scope.Name`` prefix picks that package's), or None. Unlike ``Registry.get`` this never falls back to
    importing ``name`` as a dotted path (``'os.system'`` names no registered class)."""
    from mmengine.registry import registry as registry_module

    with openmmlab.registry(registry, _scope_name(scope)) as scoped:  # the lock held: the patch is ours alone
        original = registry_module.get_object_from_string
        registry_module.get_object_from_string = lambda *_args, **_kwargs: None
        try:
            return scoped.get(name)
        finally:
            registry_module.get_object_from_string = original


#: OpenMMLab optimizers that mmengine does not ship, by the package that registers them: the hyperparameters
#: a schedule shows (momentum or betas, weight decay) with their defaults in that package's signature
FOREIGN_OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Lamb": ("mmpretrain", dict(betas=(0.9, 0.999), weight_decay=0.01)),
    "LARS": ("mmpretrain", dict(momentum=0.0, weight_decay=0.0)),
    "Adan": ("mmpretrain", dict(betas=(0.98, 0.92, 0.99), weight_decay=0.0)),
}
#: paramwise_cfg keys mmengine's DefaultOptimWrapperConstructor reads (mmengine/optim/optimizer/default_constructor.py)
_DEFAULT_PARAMWISE_KEYS = frozenset({"custom_keys", "bias_lr_mult", "bias_decay_mult", "norm_decay_mult",
                                     "dwconv_decay_mult", "flat_decay_mult", "bypass_duplicate", "dcn_offset_lr_mult"})
#: paramwise_cfg keys of OpenMMLab's layer-decay constructors (mmpretrain's, mmdet's and mmseg's)
_LAYER_DECAY_KEYS = ("layer_decay_rate", "decay_rate")


def _missing_package(scope: str | None) -> str:
    """Why a registered name is not found: the scope's package is not installed, or it has no such name."""
    if scope and scope != "mmengine" and not scope_installed(scope):
        return f"default_scope {scope!r}: {scope} is not installed"
    if scope and scope != "mmengine":
        return f"neither {scope}'s registry nor mmengine's has it"
    return "mmengine's registry does not hold it, and the config sets no default_scope naming a package that might"


def _stand_in_optimizer(opt_cfg: dict, scope: str | None) -> tuple[dict, str]:
    """An mmengine optimizer config that schedules like ``opt_cfg``'s unregistered optimizer, and a note that
    says what it stands for. Schedulers read and write only lr, momentum or betas and weight_decay."""
    kind = str(opt_cfg["type"]).rsplit(".", 1)[-1]
    package, defaults = FOREIGN_OPTIMIZERS.get(kind, (None, {}))
    values = {**defaults, **{k: opt_cfg[k] for k in ("lr", "momentum", "betas", "weight_decay") if k in opt_cfg}}
    adam = "betas" in values
    out: dict[str, Any] = dict(type="Adam" if adam else "SGD")
    for key in ("lr", "weight_decay") + (("betas",) if adam else ("momentum",)):
        if key in values:
            out[key] = tuple(values[key])[:2] if key == "betas" else values[key]
    shown = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in values.items())
    why = _missing_package(scope)
    if package:
        note = (f"optimizer {opt_cfg['type']} ({package}'s) is not registered here ({why}): scheduled as "
                f"torch's {out['type']} with its {shown} ({kind}'s defaults where the config gives none); the "
                f"values drawn are the same")
    else:
        unknown = [k for k in (("betas",) if adam else ("momentum",)) + ("weight_decay",) if k not in values]
        note = (f"optimizer {opt_cfg['type']} is not registered here ({why}): scheduled as torch's {out['type']} "
                f"with the config's {shown or 'settings'}"
                + (f"; {' and '.join(unknown)} shown as {out['type']}'s default, which {kind}'s may not be"
                   if unknown else ""))
    return out, note


def _default_constructor_note(constructor: str, paramwise: Mapping | None, why: str) -> str:
    """What building ``constructor``'s groups with mmengine's DefaultOptimWrapperConstructor leaves out."""
    ignored = {k: v for k, v in (paramwise or {}).items() if k not in _DEFAULT_PARAMWISE_KEYS}
    note = (f"optim_wrapper constructor {constructor} is not available ({why}): param groups built by mmengine's "
            "DefaultOptimWrapperConstructor from the same paramwise_cfg")
    decay = {k: ignored[k] for k in _LAYER_DECAY_KEYS if k in ignored}
    if decay:
        (key, rate), = list(decay.items())[:1]
        note += (f", without its layer-wise lr decay ({key}={rate}): every group here has the base lr, where "
                 f"{constructor} gives each layer's parameters their own group with lr x {rate}^(layers above it); "
                 "weight decay follows mmengine's custom_keys / norm / bias rules")
    rest = {k: v for k, v in ignored.items() if k not in decay}
    if rest:
        note += f"; paramwise_cfg keys mmengine does not read: {', '.join(f'{k}={v}' for k, v in rest.items())}"
    return note


def _names(module: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in module.named_parameters()}


def _group_label(names: list[str], layer: Any = None, extra: str = "") -> str:
    """A column label that names the model's parameters in a group: the one name, or their common module path
    with the next parts of the names under it, ``backbone.layers.2.{attn|ffn} (4 params)``; prefixed by
    ``layer N:`` when a layer-decay constructor put them all in layer N; ``extra`` joins the parenthesis
    (``wd 0``). No commas: it is a CSV header."""
    prefix = f"layer {layer}: " if layer is not None else ""
    if not names:
        return prefix + "(no parameters)" + (f" ({extra})" if extra else "")
    if len(names) == 1:
        return prefix + names[0] + (f" ({extra})" if extra else "")
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    common = common[:min(len(p) for p in parts) - 1]  # keep one part below it in every name
    below = list(dict.fromkeys(p[len(common)] for p in parts))
    shown = below if len(below) <= 4 else below[:3] + ["..."]
    inner = shown[0] if len(shown) == 1 else "{" + "|".join(shown) + "}"
    head = ".".join(common)
    return f"{prefix}{head + '.' if head else ''}{inner} ({len(names)} params{'; ' + extra if extra else ''})"


def _unique_labels(labels: list[str], groups: list[dict]) -> list[str]:
    """Labels made distinct by the hyperparameters that tell equal-looking groups apart."""
    out = list(labels)
    for label in set(labels):
        same = [i for i, lab in enumerate(labels) if lab == label]
        if len(same) < 2:
            continue
        keys = [k for k in ("lr", "weight_decay", "momentum", "betas") if len({str(groups[i].get(k)) for i in same}) > 1]
        for n, i in enumerate(same):
            extra = " ".join(f"{'wd' if k == 'weight_decay' else k}={groups[i].get(k):.4g}" if isinstance(
                groups[i].get(k), float) else f"{k}={groups[i].get(k)}" for k in keys) or f"#{n + 1}"
            out[i] = f"{label} [{extra}]".replace(",", " ")
    return out


def _build_one(optim_cfg: Mapping, module: nn.Module, merge: bool, scope: str | None = None,
               stand_in: bool = False) -> tuple[Any, list[str], list[list[str]], list[str]]:
    import logging

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
    if isinstance(opt_cfg["type"], str) and registered(OPTIMIZERS, opt_cfg["type"], scope) is None:
        # LARS, Lamb, ... of a package that is not installed; the schedule only needs the group hyperparameters
        opt_cfg, note = _stand_in_optimizer(opt_cfg, scope)
        notes.append(note)
    cfg["optimizer"] = opt_cfg
    constructor = cfg.get("constructor")
    if constructor is not None and not isinstance(constructor, str):
        raise ConfigError(f"optim_wrapper constructor {constructor!r} is not a registered name",
                          hint=f"known: {', '.join(sorted(OPTIM_WRAPPER_CONSTRUCTORS.module_dict))}")
    if constructor is not None and registered(OPTIM_WRAPPER_CONSTRUCTORS, constructor, scope) is None:
        # a dotted name the registries do not hold would be imported and called by mmengine's Registry.get:
        # only registered constructors are built
        if "." in constructor and not constructor.startswith(f"{scope}."):
            raise ConfigError(f"unknown optim_wrapper constructor {constructor!r}",
                              hint=f"known: {', '.join(sorted(OPTIM_WRAPPER_CONSTRUCTORS.module_dict))}")
        notes.append(_default_constructor_note(constructor, cfg.get("paramwise_cfg"), _missing_package(scope)))
        cfg.pop("constructor")
    try:
        with quiet_mmengine(logging.ERROR), in_scope(scope):  # one note below instead of a warning per frozen one
            wrapper = build_optim_wrapper(module, dict(type="OptimWrapper", **cfg))
    except Exception as exc:
        if not (stand_in and "constructor" in cfg):
            if isinstance(exc, (TypeError, ValueError, KeyError, AssertionError)):
                raise ConfigError(f"cannot build the optimizer {opt_cfg}: {exc}") from exc
            if isinstance(exc, NotImplementedError):
                raise ConfigError(f"optim_wrapper constructor {constructor} cannot group the model's parameters: "
                                  f"{exc}", hint="check the config's model and optim_wrapper") from exc
            raise
        # a package's constructor reads what only the config's model has (a layer-decay one: get_layer_depth)
        cfg.pop("constructor")
        notes.append(_default_constructor_note(str(constructor), cfg.get("paramwise_cfg"),
                                               "it needs the config's model, and lr has only stand-in parameters "
                                               "(the note on them says why)"))
        with quiet_mmengine(logging.ERROR), in_scope(scope):
            wrapper = build_optim_wrapper(module, dict(type="OptimWrapper", **cfg))
    optimizer = wrapper.optimizer
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    if frozen and not stand_in:
        notes.append(f"{len(frozen)} frozen parameter(s) (requires_grad=False) are in no param group, as mmengine "
                     f"skips them: {_group_label(frozen)}")
    names = _names(module)
    kept: dict[Any, dict] = {}
    members: dict[Any, list[str]] = {}
    layers: dict[Any, set] = {}
    for i, group in enumerate(optimizer.param_groups):
        # groups with the same hyperparameters evolve identically under any scheduler, so one of each is
        # kept (a ResNet-50 with paramwise_cfg has 161 groups and a handful of distinct ones; a ViT-B with
        # mmpretrain's layer-wise decay 152, of 28 distinct ones)
        sig = _signature(group) if merge else i
        kept.setdefault(sig, group)
        members.setdefault(sig, []).extend(names.get(id(p), "?") for p in group["params"])
        layers.setdefault(sig, set()).add(group.get("layer_id"))
    optimizer.param_groups[:] = list(kept.values())
    labels = []
    base_wd = optimizer.defaults.get("weight_decay")
    for sig, group in kept.items():
        layer = next(iter(layers[sig])) if len(layers[sig]) == 1 else None
        wd = group.get("weight_decay", base_wd)
        # what sets a group apart when its weight decay is not the optimizer's (no decay on norms, say)
        extra = f"wd {wd:.4g}" if len(kept) > 1 and isinstance(base_wd, (int, float)) and wd != base_wd else ""
        labels.append(_group_label(members[sig], layer, extra))
    return wrapper, _unique_labels(labels, list(kept.values())), list(members.values()), notes


def build_optim_wrappers(optim_cfg: Mapping, model: nn.Module | None = None, merge: bool = True,
                         scope: str | None = None
                         ) -> tuple[list[tuple[str | None, Any]], list[str], list[list[str]], list[str]]:
    """The optimizer wrapper(s) ``Runner.build_optim_wrapper`` builds, one group per distinct set of values.

    One ``optimizer`` gives one wrapper (name None). Without one, each sub-dict holding an ``optimizer`` is the
    wrapper of the model's submodule of that name, as OpenMMLab's MultiOptimWrapperConstructor builds an
    OptimWrapperDict for GANs. Constructors and optimizers are looked up under ``scope`` (the config's
    ``default_scope``) as the Runner looks them up: mmpretrain's layer-decay constructor and Lamb are found.

    Returns:
        [(name, wrapper)], a label per kept group, the parameter names of each, notes.
    """
    subs = _sub_optimizers(optim_cfg)
    if "optimizer" not in optim_cfg and not subs:
        raise ConfigError("the config has no optim_wrapper.optimizer",
                          hint="add optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))")
    if not subs:
        wrapper, labels, members, notes = _build_one(optim_cfg, model or _dummy_model(), merge, scope, model is None)
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
        wrapper, labels, members, notes = _build_one(sub, module, merge, scope, module is not getattr(
            model, "_modules", {}).get(name))
        wrappers.append((name, wrapper))
        all_labels += [name] if len(labels) == 1 else [f"{name}: {label}" for label in labels]
        all_members += [[f"{name}.{n}" for n in m] for m in members]
        all_notes += [f"{name}: {n}" for n in notes]
    return wrappers, all_labels, all_members, all_notes


def _known_schedulers(scope: str | None = None) -> list[str]:
    import mmengine.optim  # noqa: F401  (registers the schedulers)
    from mmengine.registry import PARAM_SCHEDULERS

    names = set(PARAM_SCHEDULERS.module_dict)
    with openmmlab.registry(PARAM_SCHEDULERS, _scope_name(scope)) as scoped:
        scoped.import_from_location()
        names |= set(scoped.module_dict)
    return sorted(names)


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


def _build_list(sched_cfg: Any, wrapper: Any, loop: TrainLoop, scope: str | None = None) -> list[Any]:
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
        if not isinstance(kind, str) or registered(PARAM_SCHEDULERS, kind, scope) is None:
            missing = f" ({_missing_package(scope)})" if scope and scope != "mmengine" else ""
            raise ConfigError(f"unknown scheduler type {kind!r}{missing}",
                              hint=f"known: {', '.join(_known_schedulers(scope))}")
        c.setdefault("end", loop.max_epochs if c.get("by_epoch", True) else loop.max_iters)
        if c.get("convert_to_iter_based") and not loop.epoch_length:
            raise ConfigError(f"{kind} has convert_to_iter_based=True, which needs the iterations per epoch",
                              hint="pass dataset_size=N (the training set's size)")
        try:
            with in_scope(scope):
                out.append(PARAM_SCHEDULERS.build(c, default_args=dict(optimizer=wrapper,
                                                                       epoch_length=loop.epoch_length)))
        except (TypeError, ValueError, KeyError, AssertionError) as exc:
            length = f"{loop.max_epochs} epochs of {loop.epoch_length} iterations" if loop.by_epoch else \
                f"{loop.max_iters} iterations"
            raise ConfigError(f"cannot build scheduler {c}: {exc}",
                              hint=f"the training has {length}, and a scheduler's begin and end count "
                                   f"{'epochs' if c.get('by_epoch', True) else 'iterations'}: check them, or "
                                   "dataset_size=") from exc
    return out


def build_schedulers(sched_cfg: Any, wrappers: list[tuple[str | None, Any]], loop: TrainLoop,
                     scope: str | None = None) -> list[list[Any]]:
    """The schedulers of each wrapper, as ``Runner.build_param_scheduler`` builds them.

    With several optimizers, a dict without ``type`` gives each optimizer its own entry; anything else is
    built once per optimizer.
    """
    if sched_cfg is None:
        return [[] for _ in wrappers]
    if len(wrappers) == 1 and wrappers[0][0] is None:
        return [_build_list(sched_cfg, wrappers[0][1], loop, scope)]
    out = []
    for name, wrapper in wrappers:
        if isinstance(sched_cfg, Mapping) and "type" not in sched_cfg:
            if name not in sched_cfg:
                raise ConfigError(f"param_scheduler has no entry for the optimizer {name!r}",
                                  hint=f"give one for each of {', '.join(str(n) for n, _ in wrappers)}")
            out.append(_build_list(sched_cfg[name], wrapper, loop, scope))
        else:
            out.append(_build_list(sched_cfg, wrapper, loop, scope))
    return out


def simulate(optim_cfg: Mapping, sched_cfg: Any, loop: TrainLoop, *, rule: str = "", model: nn.Module | None = None,
             lr_scale: float = 1.0, per_iteration: bool = False, scope: str | None = None,
             hooks: Sequence[Any] = ()) -> Schedule:
    """Step the schedulers over the whole training and record each distinct group's values per iteration.

    The value recorded for an iteration is the one its optimizer step uses (read where ``before_train_iter``
    would). Stretches in which no iteration-based scheduler is inside its ``[begin, end)`` window are recorded
    in one slice, since its step() only counts there (1.5 M ImageNet iterations take seconds, not
    minutes); ``per_iteration`` forces a step() per iteration throughout, which gives the same values.

    Args:
        lr_scale: ``Runner.scale_lr``'s factor (``auto_scale_lr``), applied before the schedulers are built.
        scope: the config's ``default_scope``: its package's registries come first, as in the Runner.
        hooks: Runner hooks that set param-group values (:func:`group_hooks`), called where the Runner calls
            their ``before_train_epoch`` / ``before_train_iter``, with a stand-in runner that holds the one
            optimizer wrapper, the epoch and the iteration.
    """
    import types
    import warnings

    import numpy as np

    # OneCycle's eta_max and ReduceOnPlateau's min_value may hold one value per param group: keep every group
    merge = not any(isinstance(c.get(k), (list, tuple)) for c in _scheduler_dicts(sched_cfg)
                    for k in ("eta_max", "min_value"))
    wrappers, labels, members, notes = build_optim_wrappers(optim_cfg, model, merge, scope)
    groups = [g for _, w in wrappers for g in w.optimizer.param_groups]
    if lr_scale != 1.0:
        for group in groups:
            group["lr"] = group["lr"] * lr_scale
    with warnings.catch_warnings():
        # mmengine warns that scheduler.step() runs before optimizer.step(); no optimizer step happens here
        warnings.filterwarnings("ignore", message="Detected call of `scheduler.step")
        per_wrapper = build_schedulers(sched_cfg, wrappers, loop, scope)
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
        epoch_hooks, iter_hooks = _hook_calls(hooks, wrappers, notes)
        runner = types.SimpleNamespace(optim_wrapper=wrappers[0][1], epoch=0, iter=0, max_epochs=loop.max_epochs,
                                       max_iters=loop.max_iters)
        # EpochBasedTrainLoop: max_epochs epochs of len(train_dataloader) iterations; IterBasedTrainLoop: one
        # epoch of max_iters iterations whose after_train_epoch comes after the last one (mmengine.runner.loops)
        epoch_iters = (loop.epoch_length or 0) if loop.by_epoch else loop.max_iters
        for epoch in range(loop.max_epochs):
            runner.epoch = epoch
            for hook in epoch_hooks:  # before_train_epoch, e.g. SimSiamHook fixing the predictor's lr
                hook.before_train_epoch(runner)
            j = 0
            while j < epoch_iters:
                n = 0
                if not per_iteration and not iter_hooks and len(plain) == len(iter_based):
                    n = min([epoch_iters - j] + [_idle_steps(s) for s in iter_based])
                if n > 0:  # no iteration scheduler acts: the values stay, and each step() would only count
                    record(n)
                    for s in iter_based:
                        _advance_idle(s, n)
                else:
                    n = 1
                    runner.iter = epoch * epoch_iters + j
                    for hook in iter_hooks:
                        hook.before_train_iter(runner, j, None)
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


def _hook_calls(hooks: Sequence[Any], wrappers: list[tuple[str | None, Any]], notes: list[str]
                ) -> tuple[list[Any], list[Any]]:
    """The hooks whose before_train_epoch and before_train_iter do something (mmengine's Hook's do nothing)."""
    if not hooks:
        return [], []
    if len(wrappers) != 1:
        notes.append(f"{', '.join(type(h).__name__ for h in hooks)} not run: they set the values of one optimizer, "
                     f"and the config has {len(wrappers)}")
        return [], []
    from mmengine.hooks import Hook

    return ([h for h in hooks if type(h).before_train_epoch is not Hook.before_train_epoch],
            [h for h in hooks if type(h).before_train_iter is not Hook.before_train_iter])


#: Runner hooks of OpenMMLab packages that set param-group values as training runs; visctl runs them
GROUP_HOOKS = frozenset({"SimSiamHook"})  # mmpretrain: fixes the predictor's lr each epoch (or iteration)
#: custom_hooks known to leave the optimizer's values alone (EMA weights, BN statistics, pipelines, losses,
#: visualisation, checks)
INERT_HOOKS = frozenset({
    "EMAHook", "PreciseBNHook", "SyncBuffersHook", "SwAVHook", "DenseCLHook", "PrepareProtoBeforeValLoopHook",
    "WarmupParamHook", "SwitchRecipeHook", "VisualizationHook", "ClassNumCheckHook", "EmptyCacheHook",
    "NumClassCheckHook", "CheckInvalidLossHook", "MeanTeacherHook", "YOLOXModeSwitchHook", "PipelineSwitchHook",
    "SetEpochInfoHook", "MemoryProfilerHook", "DetVisualizationHook", "SegVisualizationHook", "ProfilerHook",
    "NaiveVisualizationHook", "IterTimerHook", "LoggerHook", "CheckpointHook", "DistSamplerSeedHook",
    "RuntimeInfoHook", "EarlyStoppingHook"})


def group_hooks(cfg: Mapping, scope: str | None) -> tuple[list[Any], list[str]]:
    """The config's hooks that set param-group values, built as the Runner builds them, and notes on what is
    not run: a ``default_hooks.param_scheduler`` that is not mmengine's ParamSchedulerHook, custom_hooks that
    visctl does not know to leave the values alone."""
    from mmengine.registry import HOOKS

    hooks: list[Any] = []
    notes: list[str] = []
    stepper = (cfg.get("default_hooks") or {}).get("param_scheduler")
    kind = _type_name(stepper.get("type", "")) if isinstance(stepper, Mapping) else ""
    if kind and kind.rsplit(".", 1)[-1] != "ParamSchedulerHook":
        notes.append(f"default_hooks.param_scheduler is {kind}, not mmengine's ParamSchedulerHook: param_scheduler "
                     f"is stepped as ParamSchedulerHook steps it, and what {kind} sets itself is not drawn")
    for entry in cfg.get("custom_hooks") or []:
        kind = _type_name(entry.get("type", "")) if isinstance(entry, Mapping) else type(entry).__name__
        short = kind.rsplit(".", 1)[-1]
        if short in INERT_HOOKS:
            continue
        found = registered(HOOKS, kind, scope) if short in GROUP_HOOKS and isinstance(entry, Mapping) else None
        if found is not None:
            with in_scope(scope):
                hooks.append(found(**{k: v for k, v in entry.items() if k not in ("type", "priority")}))
        elif short in GROUP_HOOKS:
            notes.append(f"custom_hooks {kind} sets param-group values during training and is not available "
                         f"({_missing_package(scope)}): what it sets is not drawn")
        else:
            notes.append(f"custom_hooks {kind} is not run (visctl runs the hooks known to set param groups: "
                         f"{', '.join(sorted(GROUP_HOOKS))}); if it changes the optimizer's lr, momentum or weight "
                         "decay, training's values differ from these")
    return hooks, notes


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
        raise ConfigError("no batch size: train_dataloader.batch_size is not set", hint="pass batch_size=")
    drop = bool(loader.get("drop_last", False)) if drop_last is None else drop_last
    sampler = _type_name((loader.get("sampler") or {}).get("type", "DefaultSampler"))
    sched_cfg = cfg.get("param_scheduler")
    converts = any(c.get("convert_to_iter_based") for c in _scheduler_dicts(sched_cfg))
    if dataset_size is None:
        if by_epoch or converts:
            raise ConfigError("cannot tell the training set's size from the config",
                              hint="pass dataset_size=N (e.g. 1281167 for ImageNet-1k)")
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
    scope = cfg.get("default_scope")
    hooks, hook_notes = group_hooks(cfg, scope)
    sched = simulate(optim_cfg, sched_cfg, loop, rule=rule, model=model, lr_scale=scale, per_iteration=per_iteration,
                     scope=scope, hooks=hooks)
    sched.notes[:0] = notes
    sched.notes += hook_notes
    sched.params = dict(dataset_size=dataset_size, batch_size=int(batch), ngpus=ngpus, drop_last=drop,
                        sampler=sampler, rule=rule, by_epoch=by_epoch, max_epochs=loop.max_epochs if by_epoch else None,
                        total_iters=loop.max_iters, epoch_length=epoch_length, lr_scale=scale, groups=sched.groups,
                        # the full list behind each label: which of the model's parameters a column is about
                        group_params=dict(zip(sched.groups, sched.members)))
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
    import matplotlib
    import matplotlib.style
    import numpy as np
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
        n = len(schedule.groups)
        # more groups than the colour cycle (layer-wise decay: 28 for a ViT-B): one colour per group along a
        # colormap, in the groups' order (by layer), and the legend beside the panels
        many = n > 10
        colors = list(matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, n))) if many else [None] * n
        for ax, (name, values) in zip(axes, rows):
            for g, label in enumerate(schedule.groups):
                x = plot_points(values[:, g], max_points)
                ax.plot(x, values[x, g], label=label, drawstyle="steps-post", linewidth=1.4, color=colors[g])
            ax.set_ylabel(name)
            ax.grid(True, alpha=0.3)
        if log_scale:
            axes[0].set_yscale("log")
        if many:
            fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", title="param groups",
                       fontsize="xx-small", title_fontsize="x-small", ncols=math.ceil(n / 50))
        elif n > 1:
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


def dataset_sources(dataset_cfg: Mapping | None) -> list[Any]:
    """The files and folders :func:`dataset_size_from_config` reads to count a config's training set (its
    annotation files, its image folders): the run's inputs, never written over (``lr --save-path``)."""
    from pathlib import Path

    if not isinstance(dataset_cfg, Mapping):
        return []
    ds = dict(dataset_cfg)
    if isinstance(ds.get("dataset"), Mapping):
        return dataset_sources(ds["dataset"])
    if isinstance(ds.get("datasets"), Sequence) and not isinstance(ds.get("datasets"), (str, bytes)):
        return [p for d in ds["datasets"] for p in dataset_sources(d)]
    root = Path(str(ds.get("data_root") or ds.get("root") or ""))
    found = []
    ann = ds.get("ann_file")
    if isinstance(ann, (str, Path)) and str(ann):
        found.append(Path(ann) if Path(ann).is_absolute() else root / ann)
    prefix = ds.get("data_prefix")
    prefix = prefix.get("img_path", prefix.get("img", "")) if isinstance(prefix, dict) else (prefix or "")
    folder = root / str(prefix)
    if str(folder) not in ("", "."):
        found.append(folder)
    return found


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
