"""Models: build from a config, load checkpoints, find layers by path, preview the module tree."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from visctl.errors import LayerError, ModelError, closest

if TYPE_CHECKING:
    import torch
    from torch import nn

# keys of the model dict that describe the tool's data handling, not the model's constructor
_NON_MODEL_KEYS = ("type", "data_preprocessor", "init_cfg", "_scope_")
_DETECTION_MODULE = "torchvision.models.detection"


def _torchvision_builder(name: str) -> Callable[..., Any] | None:
    import torchvision.models as tvm

    bare = name.removeprefix("torchvision.").removeprefix("models.")
    try:
        builder = tvm.get_model_builder(bare.lower())
    except ValueError:
        return None
    return builder


def _import_path(spec: str) -> Callable[..., Any]:
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import {module_name!r} for model {spec!r}: {exc}",
                         hint="install the package that provides it, or check the spelling "
                         "(import paths look like package.module:Class or package.module:factory)") from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            near = closest(part, names)
            raise ModelError(f"{module_name} has no attribute {part!r} (from model type {spec!r})",
                             hint=f"did you mean: {', '.join(near)}" if near else None)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(f"model type {spec!r} is not callable", hint="point at a class or a factory function")
    return obj


def build_model(model_cfg: dict, default_scope: str | None = None) -> nn.Module:
    """Build a model from ``model = dict(type=..., **kwargs)``, never downloading weights.

    Resolution order: a torchvision model name (bare or ``torchvision.``-prefixed), ``timm.<name>``, an
    import path ``package.module:attr[.attr]``, a name in an mmengine registry when ``default_scope`` is set.
    """
    if not model_cfg or "type" not in model_cfg:
        raise ModelError("the config has no model = dict(type=...)",
                         hint="add one, e.g. model = dict(type='resnet18', num_classes=10)")
    spec = str(model_cfg["type"])
    kwargs = {k: v for k, v in dict(model_cfg).items() if k not in _NON_MODEL_KEYS}
    builder = None
    if not spec.startswith("timm.") and ":" not in spec:
        builder = _torchvision_builder(spec)
    if builder is not None:
        kwargs.setdefault("weights", None)
        if builder.__module__.startswith(_DETECTION_MODULE):
            # detection builders fetch an ImageNet backbone unless told not to
            kwargs.setdefault("weights_backbone", None)
        return _call(builder, kwargs, spec)
    if spec.startswith("timm."):
        try:
            import timm
        except ImportError as exc:
            raise ModelError(f"model {spec!r} needs timm", hint="pip install timm") from exc
        name = spec.removeprefix("timm.")
        if not timm.is_model(name):
            raise ModelError(f"timm has no model {name!r}",
                             hint=f"did you mean: {', '.join(closest(name, timm.list_models()))}")
        kwargs.pop("pretrained", None)
        return _call(lambda **kw: timm.create_model(name, pretrained=False, **kw), kwargs, spec)
    if ":" in spec:
        return _call(_import_path(spec), kwargs, spec)
    if default_scope:
        return _build_from_registry(model_cfg, default_scope)
    import torchvision.models as tvm

    near = closest(spec, tvm.list_models())
    raise ModelError(f"unknown model type {spec!r}",
                     hint=(f"did you mean: {', '.join(near)}; " if near else "")
                     + "use a torchvision name, timm.<name>, or an import path package.module:attr")


def _call(builder: Callable[..., Any], kwargs: dict, spec: str) -> nn.Module:
    from torch import nn

    try:
        model = builder(**kwargs)
    except TypeError as exc:
        raise ModelError(f"cannot build {spec!r} with {kwargs}: {exc}",
                         hint="check the keyword arguments in the config's model dict") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model type {spec!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


def _build_from_registry(model_cfg: dict, scope: str) -> nn.Module:
    try:
        importlib.import_module(scope)
    except ImportError as exc:
        raise ModelError(f"model {model_cfg['type']!r} is an OpenMMLab {scope} model, and {scope} is not installed",
                         hint=f"pip install {scope}, or use a torchvision/timm model or an import path") from exc
    from mmengine.registry import MODELS, DefaultScope, init_default_scope

    init_default_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(dict(model_cfg))


def load_checkpoint(model: nn.Module, path: str, revise_keys: list | None = None,
                    min_match: float = 0.5) -> dict[str, Any]:
    """Load a checkpoint through mmengine's loader; return a summary of how well it matched.

    Accepts raw state dicts and ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers, applies
    ``revise_keys`` (``[(regex, replacement), ...]``), and raises :class:`ModelError` when fewer than
    ``min_match`` of the model's tensors are found in the checkpoint (a silently random model is worse
    than an error).

    Returns:
        ``{'path', 'loaded', 'total', 'missing', 'unexpected', 'mismatched'}``.
    """
    from mmengine.runner.checkpoint import _load_checkpoint

    if "://" not in path:
        from pathlib import Path

        if not Path(path).is_file():
            raise ModelError(f"checkpoint not found: {path}", hint="check the path, or leave it out to use "
                             "the config's load_from (or random weights)")
    try:
        ckpt = _load_checkpoint(path, map_location="cpu", logger="silent")
    except Exception as exc:  # torch.load raises many kinds
        raise ModelError(f"cannot read checkpoint {path}: {exc}",
                         hint="is it a PyTorch checkpoint (.pth/.pt)?") from exc
    state = ckpt
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if isinstance(ckpt.get(key), dict):
                state = ckpt[key]
                break
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    rules = list(revise_keys or []) + [(r"^module\.", "")]
    revised = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        revised[key] = value
    own = model.state_dict()
    fitting = {k: v for k, v in revised.items() if k in own and hasattr(v, "shape") and v.shape == own[k].shape}
    mismatched = [k for k, v in revised.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    missing = [k for k in own if k not in fitting]
    unexpected = [k for k in revised if k not in own]
    summary = dict(path=path, loaded=len(fitting), total=len(own), missing=missing, unexpected=unexpected,
                   mismatched=mismatched)
    if len(own) and len(fitting) / len(own) < min_match:
        example = f" (e.g. checkpoint key {unexpected[0]!r}, model key {missing[0]!r})" if unexpected and missing else ""
        raise ModelError(
            f"checkpoint {path} fits only {len(fitting)} of the model's {len(own)} tensors{example}",
            hint="is it the checkpoint of this config's model? Rename keys with "
            "checkpoint_revise_keys = [(r'^backbone\\.', '')] in the config, or check num_classes")
    model.load_state_dict(fitting, strict=False)
    return summary


def checkpoint_note(summary: dict[str, Any], verbose: bool = False) -> str:
    """One line on a checkpoint load (every key with ``verbose``)."""
    line = f"checkpoint {summary['path']}: loaded {summary['loaded']}/{summary['total']} tensors"
    parts = []
    for key in ("missing", "unexpected", "mismatched"):
        keys = summary[key]
        if keys:
            shown = keys if verbose else keys[:3]
            more = "" if verbose or len(keys) <= 3 else f", +{len(keys) - 3} more"
            parts.append(f"{len(keys)} {key} ({', '.join(shown)}{more})")
    return line + ("; " + "; ".join(parts) if parts else "")


_INDEX = re.compile(r"\[(-?\d+)\]")


def _split_path(path: str) -> list[str]:
    # 'encoder.layers[11].ln_1' -> ['encoder', 'layers', '11', 'ln_1']
    return [p for p in _INDEX.sub(r".\1", path).split(".") if p != ""]


def find_layer(model: nn.Module, path: str) -> tuple[str, nn.Module]:
    """Find a module by a path over ``named_modules()``.

    ``backbone.layer4.2``, ``backbone.layer4[-1]``, ``encoder.layers[11].ln_1`` and ``blocks.-1`` all work;
    negative numbers index the children of a container. A wrong path raises :class:`LayerError` naming
    the closest existing modules.

    Returns:
        The canonical dotted name and the module.
    """
    node = model
    parts = _split_path(path)
    canonical: list[str] = []
    for part in parts:
        children = dict(node.named_children())
        if part in children:
            node, name = children[part], part
        elif re.fullmatch(r"-?\d+", part) and children:
            names = list(children)
            idx = int(part)
            if not -len(names) <= idx < len(names):
                raise LayerError(f"layer {path!r}: index {idx} is out of range, "
                                 f"{'.'.join(canonical) or 'the model'} has {len(names)} children",
                                 hint=f"use an index from {-len(names)} to {len(names) - 1}")
            name = names[idx]
            node = children[name]
        else:
            all_names = [n for n, _ in model.named_modules() if n]
            near = closest(path, all_names)
            raise LayerError(f"the model has no layer {path!r}",
                             hint=(f"closest: {', '.join(near)}; " if near else "")
                             + "run with --preview-model to list every layer")
        canonical.append(name)
    if not parts:
        raise LayerError("empty layer path", hint="name a layer like layer4 or backbone.layer4[-1]")
    return ".".join(canonical), node


def trace(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, Any]], Any]:
    """One no-grad forward of ``example`` with a hook on every module.

    Returns:
        ``(name, output)`` of each module's first call, in the order the calls finished, and the model's output.
    """
    import torch

    fired: list[tuple[str, Any]] = []
    seen: set[str] = set()
    handles = []
    for name, module in model.named_modules():
        def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
            if name not in seen:  # a module called twice (a shared ReLU) keeps its first output
                seen.add(name)
                fired.append((name, out))
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            result = model(example)
    finally:
        for h in handles:
            h.remove()
    return fired, result


def describe_output(out: Any) -> str:
    """A module output's shape as text: ``1x64x16x16``, ``(1x8x8, 1x4x4)``, ``{p3: 1x8x8}``."""
    import torch

    if isinstance(out, torch.Tensor):
        return "x".join(str(s) for s in out.shape)
    if isinstance(out, (list, tuple)):
        return "(" + ", ".join(describe_output(o) for o in out) + ")"
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k}: {describe_output(v)}" for k, v in out.items()) + "}"
    return type(out).__name__


def preview_lines(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The module tree, one line per module: indented name, class and output shape."""
    shapes = {name: describe_output(out) for name, out in trace(model, example)[0]}
    lines = []
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        label = name or "(model)"
        lines.append(f"{'  ' * depth}{label}  {type(module).__name__}  -> {shapes.get(name, 'not called')}")
    return lines


def output_tensor(out: Any) -> torch.Tensor:
    """The logits tensor of a model output: the tensor itself, the first of a tuple, ``logits`` of a dict."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        for key in ("logits", "cls_score", "pred", "out"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return out.logits
    raise ModelError(f"the model returned {type(out).__name__}; visctl needs a logits tensor",
                     hint="wrap the model so that forward returns the class scores")


def load_model(cfg: Any, checkpoint: str | None, device: str = "cpu") -> tuple[nn.Module, dict[str, Any] | None]:
    """Build the config's model in eval mode on ``device`` and load ``checkpoint`` (else ``load_from``)."""
    model = build_model(dict(cfg.get("model") or {}), cfg.get("default_scope"))
    checkpoint = checkpoint or cfg.get("load_from")
    summary = None
    if checkpoint:
        summary = load_checkpoint(model, str(checkpoint), cfg.get("checkpoint_revise_keys"))
    return model.to(device).eval(), summary


def switch_to_deploy(model: nn.Module) -> list[str]:
    """Call ``switch_to_deploy()`` on every module that has one (RepVGG-style blocks fuse their branches into
    one convolution, as mmyolo's ``--deploy``); returns the names of the switched modules."""
    switched = []
    for name, module in list(model.named_modules()):
        fn = getattr(module, "switch_to_deploy", None)
        if callable(fn):
            fn()
            switched.append(name or type(module).__name__)
    return switched
