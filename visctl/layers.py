"""Model layers: one probing forward, how a layer's output lies on the image, and the default layers.

* :func:`probe` records every module's output shape in execution order (one dummy forward);
* :class:`Layout` / :func:`detect_layout` say how a layer's output becomes (N, C, H, W): NCHW maps,
  channels-last maps, or tokens on the patch grid (:func:`token_grid`); :func:`make_reshape` is that reshape;
* :func:`default_layers` chooses, with one logic for every command (cam, featmap, tsne, boxam), the layer a
  CAM targets, the feature layer and the stage outputs;
* :func:`find_layer` finds a module by its path (``backbone.layer4[-1]``), :func:`trace` runs the hooked forward,
  :func:`preview_lines` prints the module tree, :func:`output_tensor` takes the logits from a model's output.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visctl.errors import LayerError, ModelError, closest

if TYPE_CHECKING:
    import torch
    from torch import nn


# ---- layouts -------------------------------------------------------------------------------------------

@dataclass
class Layout:
    """How a target layer's output becomes (N, C, H, W): kind 'nchw', 'nhwc' or 'tokens'."""

    kind: str
    grid: tuple[int, int] | None = None
    extra_tokens: int = 0

    def describe(self) -> str:
        if self.kind == "tokens" and self.grid is not None:
            return f"tokens -> {self.grid[0]}x{self.grid[1]} grid, {self.extra_tokens} extra token(s) dropped"
        return "channels-last" if self.kind == "nhwc" else "NCHW"


def token_grid(length: int, in_hw: tuple[int, int], extra: int | None) -> tuple[tuple[int, int], int] | None:
    """The (rows, cols) patch grid and extra-token count for ``length`` tokens of an ``in_hw`` input."""
    H, W = in_hw
    options = [extra] if extra is not None else range(0, 9)
    for e in options:
        n = length - e
        if n <= 0:
            continue
        patch = math.sqrt(H * W / n)
        for p in {math.floor(patch), math.ceil(patch), patch}:
            if p <= 0:
                continue
            gh, gw = round(H / p), round(W / p)
            if gh * gw == n:
                return (gh, gw), e
        # a grid with the input's aspect ratio that is not an exact patch division (e.g. padded inputs)
        for gh in range(1, n + 1):
            if n % gh == 0 and abs((n // gh) / gh - W / H) < 0.05:
                return (gh, n // gh), e
    return None


def detect_layout(shape: tuple[int, ...], in_hw: tuple[int, int], vit_like: bool,
                  extra_tokens: int | None, layer: str) -> Layout:
    """Decide how a layer's output tensor maps onto the image."""
    H, W = in_hw
    if len(shape) == 4:
        _, a, b, c = shape
        nchw_ok = abs(b / c - H / W) < 0.05 * (H / W) and b > 0
        nhwc_ok = abs(a / b - H / W) < 0.05 * (H / W)
        if nhwc_ok and not nchw_ok:
            return Layout("nhwc")
        return Layout("nchw")
    if len(shape) == 3:
        found = token_grid(shape[1], in_hw, extra_tokens)
        if found is None:
            raise LayerError(f"layer {layer!r} gives {shape[1]} tokens, which fit no patch grid of the "
                             f"{H}x{W} input" + (f" after {extra_tokens} extra tokens" if extra_tokens else ""),
                             hint="set num_extra_tokens= to the number of class/distillation tokens")
        return Layout("tokens", found[0], found[1])
    raise LayerError(f"layer {layer!r} gives a {len(shape)}-D output {tuple(shape)}; a CAM needs a spatial "
                     "map (N, C, H, W), tokens (N, L, C) or channels-last (N, H, W, C)",
                     hint="pick an earlier layer; --preview-model shows every layer's output shape")


def make_reshape(layout: Layout, max_shape: tuple[int, int] | None = None, absolute: bool = False
                 ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The reshape_transform grad-cam applies to activations and gradients.

    ``max_shape`` (h, w) caps the map's size: a larger map is resized bilinearly to ``(min(H, h), min(W, w))``
    before the CAM is computed, as mmyolo's boxam ``reshape_transform`` does (which also takes ``|x|``;
    visctl keeps the sign, so gradients keep their meaning, except with ``absolute``: mmyolo's own box AM on
    an OpenMMLab detector, see :mod:`visctl.mmdet_adapter`).
    """
    base: Callable[[torch.Tensor], torch.Tensor] | None = None
    if layout.kind == "nhwc":
        def nhwc(t: torch.Tensor) -> torch.Tensor:
            return t.permute(0, 3, 1, 2)
        base = nhwc
    elif layout.kind == "tokens":
        gh, gw = layout.grid  # type: ignore[misc]
        e = layout.extra_tokens

        def tokens(t: torch.Tensor) -> torch.Tensor:
            # (N, L, C) -> drop extra tokens -> (N, gh, gw, C) -> (N, C, gh, gw)
            return t[:, e:, :].reshape(t.shape[0], gh, gw, t.shape[2]).permute(0, 3, 1, 2)
        base = tokens
    if absolute:  # mmyolo's boxam reshape_transform: |x| of activations and gradients, capped as below
        def absolute_capped(t: torch.Tensor) -> torch.Tensor:
            import torch.nn.functional as F

            t = (base(t) if base is not None else t).abs()
            if max_shape is None:
                return t
            size = (min(t.shape[2], max_shape[0]), min(t.shape[3], max_shape[1]))
            return F.interpolate(t, size, mode="bilinear")
        return absolute_capped
    if max_shape is None:
        return base
    cap_h, cap_w = max_shape

    def capped(t: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        t = base(t) if base is not None else t
        size = (min(t.shape[2], cap_h), min(t.shape[3], cap_w))
        if size == tuple(t.shape[2:]):
            return t
        return F.interpolate(t, size, mode="bilinear")  # mmyolo: interpolate(|feat|, max_shape, mode='bilinear')
    return capped


# ---- model probing and default layers ------------------------------------------------------------------

@dataclass
class Probe:
    """What one dummy forward tells: output shapes in execution order and the number of classes."""

    order: list[tuple[str, Any]]  # (module name, output shape or type name), in the order hooks fired
    num_classes: int

    def shape_of(self, name: str) -> Any:
        for n, s in self.order:
            if n == name:
                return s
        return None


def probe(model: nn.Module, example: torch.Tensor, logits: bool = True, traced: Any = None) -> Probe:
    """Run ``example`` once under no_grad and record every module's output shape in execution order.

    With ``logits`` the model must return class scores (N, classes); otherwise any output is accepted
    and ``num_classes`` is 0. ``traced``: :func:`visctl.layers.trace` of this model and example, already run.
    """
    import torch

    fired, out = traced if traced is not None else trace(model, example)
    order = [(name, tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__) for name, o in fired]
    if not logits:
        return Probe(order=order, num_classes=0)
    out = output_tensor(out)
    if out.ndim != 2:
        raise ModelError(f"the model's output has shape {tuple(out.shape)}; a classifier CAM needs (N, classes)",
                         hint="for detectors use `visctl boxam`")
    return Probe(order=order, num_classes=int(out.shape[1]))


def _is_norm(module: nn.Module) -> bool:
    from torch import nn

    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)) or \
        type(module).__name__.lower().startswith(("layernorm", "rmsnorm", "batchnorm", "groupnorm"))


# name parts that mark attention internals (never a map of the image), and the stem / patch embedding
_ATTENTION_PARTS = {"attn", "attention", "self_attention", "qkv", "q", "k", "v", "q_norm", "k_norm", "attn_drop",
                    "proj_drop", "rel_pos", "relative_position_bias_table", "attn_pool"}
_STEM_PARTS = {"stem", "patch_embed", "conv_proj", "embeddings", "patch_embeddings", "conv_stem", "_conv_stem",
               "_bn0", "pos_drop", "patch_drop", "norm_pre"}
# the classifier head: a map there (SqueezeNet's class-score convolution) is a score, not a feature
_HEAD_PARTS = {"head", "classifier", "fc", "last_linear", "head_drop", "fc_norm"}
_ACTIVATIONS = ("relu", "relu6", "gelu", "silu", "swish", "hardswish", "hswish", "mish", "elu", "leakyrelu",
                "prelu", "sigmoid", "hardsigmoid", "tanh", "softplus", "selu", "celu", "gelutanh", "quickgelu",
                "memoryefficientswish")


def _kind(module: nn.Module) -> str:
    """What a module's output is: 'skip' (dropout, identity, global pooling, flatten), 'act' (after an
    activation: an activation, a norm+activation layer, a local pooling), 'norm' (a plain norm: before its
    activation), 'linear' (a conv or linear: before its norm), 'container' (a module with children), 'other'."""
    from torch import nn

    name = type(module).__name__.lower()
    if isinstance(module, (nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten, nn.AdaptiveAvgPool1d,
                           nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)) \
            or name in ("droppath", "dropblock2d", "selectadaptivepool2d", "identity", "permute", "transpose",
                        "reshape", "view", "flatten") or "dropout" in name:
        return "skip"
    if name.endswith(_ACTIVATIONS) or "act" in name and _is_norm(module) or "normact" in name \
            or isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return "act"
    if _is_norm(module):
        return "norm"
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return "linear"
    if next(iter(module.children()), None) is not None:
        return "container"
    return "other"


@dataclass
class Spatial:
    """A fired module whose output is a map of the image: its layout and grid (rows, cols)."""

    index: int  # position in the execution order
    name: str
    layout: str  # 'nchw', 'nhwc' or 'tokens'
    grid: tuple[int, int]
    numel: int


def _spatial(pr: Probe, in_hw: tuple[int, int]) -> dict[str, Spatial]:
    """The fired modules whose output is a map of the image (aspect ratio of the input, more than 1x1)."""
    H, W = in_hw
    out: dict[str, Spatial] = {}
    for i, (name, shape) in enumerate(pr.order):
        if not name or not isinstance(shape, tuple) or name in out:
            continue
        numel = int(math.prod(shape[1:]))
        if len(shape) == 4:
            _, a, b, c = shape
            if b > 0 and c > 0 and abs(b / c - H / W) < 0.05 * (H / W) and b * c > 1:
                out[name] = Spatial(i, name, "nchw", (b, c), numel)
            elif b > 0 and abs(a / b - H / W) < 0.05 * (H / W) and a * b > 1:
                out[name] = Spatial(i, name, "nhwc", (a, b), numel)
        elif len(shape) == 3 and shape[1] > 1:
            found = token_grid(shape[1], in_hw, None)
            if found is not None and found[0][0] * found[0][1] > 1:
                out[name] = Spatial(i, name, "tokens", found[0], numel)
    return out


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _is_ancestor(a: str, b: str) -> bool:
    return a == "" or b.startswith(a + ".")


@dataclass
class DefaultLayers:
    """The default layers of a model, from one logic for every command.

    Attributes:
        cam: the CAM target (``cam``): a CNN's last feature map after its activation; a token model's first
            norm of its last block (where the class score's gradient reaches every patch token), else the block.
        features: the feature layer (``featmap``, ``tsne``): the same map for a CNN; the last block's (or
            stage's) output for a token model.
        stages: the stage outputs ending at ``features`` (``tsne --all-stages``).
        tokens: whether the model computes on tokens or channels-last maps.
        why: one line saying how they were chosen.
    """

    cam: str
    features: str
    stages: list[str]
    tokens: bool
    why: str


class _Tree:
    """The module tree and one forward's spatial outputs, to reason about what each layer's output is."""

    def __init__(self, model: nn.Module, pr: Probe, in_hw: tuple[int, int]) -> None:
        self.modules = dict(model.named_modules())
        self.sp = _spatial(pr, in_hw)
        self.order = pr.order
        self.children: dict[str, list[str]] = {}
        for n in self.modules:
            if n:
                self.children.setdefault(_parent(n), []).append(n)

    def excluded(self, name: str) -> bool:
        parts = set(name.split("."))
        return bool(parts & _ATTENTION_PARTS) or bool(parts & _STEM_PARTS) or bool(parts & _HEAD_PARTS) or \
            any(p.startswith(("attn", "attention")) for p in parts) or _kind(self.modules[name]) == "skip"

    def homogeneous(self, name: str) -> bool:
        kids = [self.modules[c] for c in self.children.get(name, [])]
        return len(kids) >= 2 and len({type(k) for k in kids}) == 1

    def is_block(self, name: str) -> bool:
        """A child of a container of several modules of one class (ResNet layer4.1, ViT blocks.11)."""
        return bool(name) and self.homogeneous(_parent(name)) and _kind(self.modules[name]) == "container"

    def spans(self, name: str) -> bool:
        """Whether a container's children give maps of more than one resolution (a container of stages)."""
        grids = {self.sp[c].grid for c in self.children.get(name, []) if c in self.sp}
        return len(grids) > 1

    def chain(self, name: str) -> list[str]:
        """``name`` and the descendants whose output it passes on: the modules that fired just before it,
        inside it, with an output of the same size (a container -> its last stage -> its last block ...)."""
        out = [name]
        i = self.sp[name].index
        while i > 0:
            prev, shape = self.order[i - 1]
            if not _is_ancestor(out[-1], prev) or prev not in self.sp or \
                    self.sp[prev].numel != self.sp[out[-1]].numel:
                break
            out.append(prev)
            i -= 1
        return out

    def produced_by(self, name: str) -> str:
        """What made a module's output: 'act', 'block', 'norm', 'linear', 'other' (a function, e.g. a concat)."""
        chain = self.chain(name)
        for i, n in enumerate(chain):
            kind = _kind(self.modules[n])
            if i + 1 < len(chain) and self.sp[chain[i + 1]].layout != self.sp[n].layout:
                continue  # a re-layout of what is inside (PVT's stage: its last norm's tokens as a map)
            if self.is_block(n):
                return "block"
            if kind == "act":
                return "act"
            if kind in ("norm", "linear"):
                return kind
        return "other"

    def accepted(self, name: str) -> bool:
        return name in self.sp and not self.excluded(name) and self.produced_by(name) in ("act", "block", "other")

    def stage_name(self, name: str) -> str:
        """The clearest name for ``name``'s output: the lowest module of its chain that is one of several
        stages of its parent (``layer4``, ``features.8``, ``layers.3``), else its outermost block."""
        chain = list(reversed(self.chain(name)))  # innermost first
        for n in chain:
            parent = _parent(n)
            same = [c for c in self.children.get(parent, []) if c != n and type(self.modules[c]) is type(self.modules[n])]
            if same and self.spans(parent) and not self.excluded(n) and _kind(self.modules[n]) in ("container", "act"):
                return n
        blocks = [n for n in chain if self.is_block(n)]
        return blocks[-1] if blocks else name

    def first_norm(self, block: str) -> str | None:
        """The norm a block applies first to its input (norm1, ln_1, layernorm_before), not one inside its
        attention or MLP."""
        for child in self.children.get(block, []):
            if _is_norm(self.modules[child]) and child in self.sp and not self.excluded(child):
                return child
        return None

    def stages(self, features: str) -> list[str]:
        parent = _parent(features)
        if self.homogeneous(parent):
            return [c for c in self.children[parent] if c in self.sp]
        cands: list[str] = []
        for c in self.children.get(parent, []):
            if c in self.sp and self.homogeneous(c) and self.spans(c):  # timm's `blocks` = a list of stages
                cands += [g for g in self.children[c] if g in self.sp]
            elif c in self.sp and not self.excluded(c) and (
                    self.accepted(c) or _kind(self.modules[c]) == "container"):
                cands.append(c)  # a stage's output (MobileNetV2's linear bottlenecks included)
        cands.sort(key=lambda n: self.sp[n].index)
        containers = [c for c in cands if _kind(self.modules[c]) == "container"]
        if containers:  # stages are containers; leaves beside them are the stem (conv1, bn1, relu, maxpool)
            cands = containers
        if features in self.sp and features not in cands:
            cands.append(features)
        cands = [c for c in cands if self.sp[c].index <= self.sp[features].index]
        last: dict[tuple[int, int], str] = {}
        for c in cands:  # one per resolution: the last module that gives it
            last.pop(self.sp[c].grid, None)
            last[self.sp[c].grid] = c
        out = list(last.values())
        if len(out) >= 3 and out[0] == self.children[parent][0]:
            out = out[1:]  # the first module of the container is its stem (MobileNet's features.0)
        return out or [features]


def default_layers(model: nn.Module, pr: Probe, in_hw: tuple[int, int]) -> DefaultLayers:
    """Choose the default layers by what each layer's output is (see :class:`DefaultLayers`).

    Walking back from the model's last output, a layer qualifies when its output is a map of the image
    (spatial, tokens on the patch grid or channels-last) made by an activation, a block or a function (a
    concat); never attention internals, dropouts, global pooling, the stem or patch embedding, a plain norm
    or a conv before its activation (EfficientNet-Lite's ``_bn1``, DenseNet's ``norm5``: the activation after
    them is a function or a module shared with other layers, so the last block before them is taken).
    """
    tree = _Tree(model, pr, in_hw)
    for name in sorted(tree.sp, key=lambda n: tree.sp[n].index, reverse=True):
        if not tree.accepted(name):
            continue
        chain = tree.chain(name)
        tokens = tree.sp[name].layout != "nchw"
        features = tree.stage_name(name)
        cam = features
        why = f"{features}: the last map of the image after an activation or block"
        if tokens:
            blocks = [n for n in chain if tree.is_block(n)]
            inner = blocks[-1] if blocks else features
            norm = tree.first_norm(inner)
            if norm is not None:
                cam = norm
                why = (f"{features}: the last block's output; CAM at {norm}, the first norm of the last block, "
                       "where the class score's gradient reaches every token")
            elif blocks:
                cam = inner
                why = f"{features}: the last block's output (tokens on the patch grid)"
            else:  # no block in the chain (MViT's last map is its last MLP's activation): say what it is
                cam = inner
                why = f"{features}: the last map of the image on the patch grid (tokens), after an activation"
        return DefaultLayers(cam=cam, features=features, stages=tree.stages(features), tokens=tokens, why=why)
    raise LayerError("cannot choose a default layer: no layer gives a map of the image",
                     hint="name one with target_layers= (the command's --preview-model lists every layer's output "
                     "shape)")


def default_target_layers(model: nn.Module, pr: Probe, in_hw: tuple[int, int], vit_like: bool = False
                          ) -> list[str]:
    """The default CAM target layer (:func:`default_layers`); ``vit_like`` is kept for callers and unused:
    the layer's output decides."""
    return [default_layers(model, pr, in_hw).cam]


def stage_layers(model: nn.Module, pr: Probe, in_hw: tuple[int, int]) -> list[str]:
    """The stage outputs of :func:`default_layers` (``tsne --all-stages``)."""
    return default_layers(model, pr, in_hw).stages


def is_vit_like(pr: Probe, in_hw: tuple[int, int]) -> bool:
    """Whether the model computes on tokens or channels-last maps (ViT, DeiT, Swin, ...)."""
    # only the main stream counts (stages, at most two levels deep): ConvNeXt permutes to channels-last
    # inside its blocks, yet it is a CNN
    for name, shape in pr.order:
        if not name or not isinstance(shape, tuple) or name.count(".") > 1:
            continue
        if len(shape) == 3 and shape[1] > 1 and token_grid(shape[1], in_hw, None) is not None:
            return True
        if len(shape) == 4 and detect_layout(shape, in_hw, False, None, name).kind == "nhwc":
            return True
    return False


def validate_layer_output(name: str, shape: Any) -> None:
    """A target layer must return one tensor; grad-cam cannot hook tuples or dicts."""
    if shape is None:
        raise LayerError(f"layer {name!r} is not called by the model's forward",
                         hint="pick a layer that runs; --preview-model marks layers that are not called")
    if not isinstance(shape, tuple):
        raise LayerError(f"layer {name!r} returns a {shape}, not a tensor; CAM methods need one tensor",
                         hint="pick one of its sub-layers (see --preview-model), e.g. the last block inside it")


# ---- finding and tracing layers ---------------------------------------------------------------------

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
    except TypeError as exc:  # a forward that takes more than the images (an MAE's mask): no model to explain
        if not re.search(r"forward\(\) (missing \d+ required|takes \d+ positional|got an unexpected keyword)", str(exc)):
            raise
        raise ModelError(f"{type(model).__name__} does not run on images alone: {exc}",
                         hint="this explains a model whose forward takes a batch of images (a classifier, a "
                         "detector, a segmenter); a masked-image model (MAE, SimMIM, ...) is drawn by recon "
                         "(`visctl recon`, `visctl.recon`)") from exc
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
