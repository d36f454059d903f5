"""Class activation maps through pytorch-grad-cam, with its traps designed around.

* one target per image, always (grad-cam zips targets with the batch and silently zeroes the rest);
* class indices validated against the model's output size before any work (grad-cam's ``with`` block
  swallows an out-of-range index);
* gradient methods start the autograd graph at the earliest target layer with frozen parameters, so the
  backward runs from the score down to the target layer only — the same maps as plain grad-cam, a
  fraction of its time; this also makes frozen models and no-grad code paths work;
* token (N, L, C) and channels-last (N, H, W, C) outputs are reshaped to the model's patch grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from visctl.errors import LayerError, ModelError, VisctlError, closest

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


class Method(str, Enum):
    """The CAM methods of pytorch-grad-cam that take a classifier target."""

    gradcam = "gradcam"
    gradcamplusplus = "gradcam++"
    xgradcam = "xgradcam"
    eigencam = "eigencam"
    eigengradcam = "eigengradcam"
    layercam = "layercam"
    hirescam = "hirescam"
    gradcamelementwise = "gradcamelementwise"
    scorecam = "scorecam"
    ablationcam = "ablationcam"
    fullgrad = "fullgrad"
    shapleycam = "shapleycam"
    kpcacam = "kpca_cam"
    fem = "fem"
    randomcam = "randomcam"


# method -> (grad-cam class name, how the graph is built): 'layer' = gradient from the target layer only,
# 'none' = forward only, 'full' = grad-cam's own full backward (needs input or parameter gradients)
METHODS: dict[Method, tuple[str, str]] = {
    Method.gradcam: ("GradCAM", "layer"),
    Method.gradcamplusplus: ("GradCAMPlusPlus", "layer"),
    Method.xgradcam: ("XGradCAM", "layer"),
    Method.eigencam: ("EigenCAM", "none"),
    Method.eigengradcam: ("EigenGradCAM", "layer"),
    Method.layercam: ("LayerCAM", "layer"),
    Method.hirescam: ("HiResCAM", "layer"),
    Method.gradcamelementwise: ("GradCAMElementWise", "layer"),
    Method.scorecam: ("ScoreCAM", "none"),
    Method.ablationcam: ("AblationCAM", "none"),
    Method.fullgrad: ("FullGrad", "full"),
    Method.shapleycam: ("ShapleyCAM", "full"),
    Method.kpcacam: ("KPCA_CAM", "none"),
    Method.fem: ("FEM", "none"),
    Method.randomcam: ("RandomCAM", "layer"),
}

# other spellings users bring from the seeds and grad-cam's class names
_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "kpcacam": "kpca_cam",
            "kpca-cam": "kpca_cam", "grad-cam": "gradcam", "layer-cam": "layercam", "score-cam": "scorecam"}


def parse_method(name: str) -> list[Method]:
    """Resolve a method name (case-insensitive, seed spellings accepted); ``all`` gives every method."""
    if "," in name:
        return [m for part in name.split(",") if part.strip() for m in parse_method(part)]
    key = name.strip().lower()
    if key == "all":
        return list(Method)
    key = _ALIASES.get(key, key)
    for m in Method:
        if m.value == key:
            return [m]
    valid = [m.value for m in Method]
    near = closest(key, valid, n=3)
    raise VisctlError(f"unknown CAM method {name!r}",
                      hint=(f"did you mean {', '.join(near)}? " if near else "")
                      + f"valid: {', '.join(valid)}, all")


def forwards_per_image(method: Method, channels: int, ratio_channels_to_ablate: float = 1.0) -> int:
    """How many image forwards a method costs (the perturbation methods run one per channel)."""
    if method is Method.scorecam:
        return 1 + channels
    if method is Method.ablationcam:
        return 2 + (channels if ratio_channels_to_ablate >= 1.0 else 2 * int(channels * ratio_channels_to_ablate))
    return 1


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
                             hint="set --num-extra-tokens to the number of class/distillation tokens")
        return Layout("tokens", found[0], found[1])
    raise LayerError(f"layer {layer!r} gives a {len(shape)}-D output {tuple(shape)}; a CAM needs a spatial "
                     "map (N, C, H, W), tokens (N, L, C) or channels-last (N, H, W, C)",
                     hint="pick an earlier layer; --preview-model shows every layer's output shape")


def make_reshape(layout: Layout, max_shape: tuple[int, int] | None = None
                 ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The reshape_transform grad-cam applies to activations and gradients.

    ``max_shape`` (h, w) caps the map's size: a larger map is resized bilinearly to ``(min(H, h), min(W, w))``
    before the CAM is computed, as mmyolo's boxam ``reshape_transform`` does (which also takes ``|x|``;
    visctl keeps the sign, so gradients keep their meaning).
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


def probe(model: nn.Module, example: torch.Tensor, logits: bool = True) -> Probe:
    """Run ``example`` once under no_grad and record every module's output shape in execution order.

    With ``logits`` the model must return class scores (N, classes); otherwise any output is accepted
    and ``num_classes`` is 0.
    """
    import torch

    from visctl.models import output_tensor, trace

    fired, out = trace(model, example)
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


def _last_block(model: nn.Module) -> tuple[str, nn.Module] | None:
    # the last child of the last container whose children are all of one class and hold a norm layer
    from torch import nn

    best = None
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Sequential, nn.ModuleList)):
            continue
        children = list(module.named_children())
        if len(children) < 2 or len({type(c) for _, c in children}) != 1:
            continue
        last_name, last = children[-1]
        if any(_is_norm(m) for m in last.modules()):
            best = (f"{name}.{last_name}" if name else last_name, last)
    return best


def default_target_layers(model: nn.Module, pr: Probe, in_hw: tuple[int, int], vit_like: bool) -> list[str]:
    """A sensible target layer: the first norm of the last block for ViT-like models, else the last
    spatial (N, C, H, W) output with H, W > 1 in execution order."""
    if vit_like:
        block = _last_block(model)
        if block is not None:
            for sub, m in block[1].named_modules():
                if sub and _is_norm(m):
                    return [f"{block[0]}.{sub}"]
        norms = [n for n, m in model.named_modules() if _is_norm(m)]
        if norms:
            return [norms[-1]]
    from torch import nn

    order = list(reversed(pr.order))
    modules = dict(model.named_modules())
    for i, (name, shape) in enumerate(order):
        if not name or not isinstance(shape, tuple) or len(shape) != 4:
            continue
        layout = detect_layout(shape, in_hw, False, None, name)
        h, w = (shape[2], shape[3]) if layout.kind == "nchw" else (shape[1], shape[2])
        if h > 1 and w > 1:
            # a container fires after its children with the same output: name its last stage instead
            # ('backbone' -> 'backbone.layer4'), stopping at blocks ('layer4', not 'layer4.1')
            for child, child_shape in order[i + 1:]:
                if (child_shape != shape or child.rpartition(".")[0] != name
                        or not isinstance(modules[child], (nn.Sequential, nn.ModuleList))):
                    break
                name = child
            return [name]
    raise LayerError("cannot choose a default target layer: no layer gives a spatial map",
                     hint="name one with --target-layers; --preview-model lists them")


def stage_layers(model: nn.Module, default: str) -> list[str]:
    """The default layer and its siblings of the same kind, in order (layer1..layer4, blocks.0..N)."""
    parent, _, _ = default.rpartition(".")
    modules = dict(model.named_modules())
    kind = type(modules[default])
    container = modules[parent] if parent else model
    out = [f"{parent}.{n}" if parent else n for n, m in container.named_children() if type(m) is kind]
    return out or [default]


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


# ---- targets -------------------------------------------------------------------------------------------

class ClassTarget:
    """The logit of a fixed class (grad-cam's ClassifierOutputTarget, kept picklable and explicit)."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., self.category]


class RankTarget:
    """The logit of the image's ``rank``-th highest class (0 = top-1); remembers which class it chose."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.category: int | None = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim == 1:
            idx = int(output.detach().topk(self.rank + 1).indices[self.rank])
            if self.category is None:
                self.category = idx
            return output[self.category]
        # ScoreCAM/AblationCAM score a batch of perturbed copies with the class chosen on the clean image
        return output[..., self.category]


# ---- the engine ----------------------------------------------------------------------------------------

def build_cam_model(model: nn.Module, grad_mode: str, raw: bool = False) -> nn.Module:
    """Wrap ``model`` so a forward returns logits and builds only the graph the method needs.

    'layer': parameters frozen, forward under no_grad until the first target layer fires, whose hook
    (installed by :class:`CamEngine`) switches grad on and makes its output a graph leaf. 'none': the
    whole forward under no_grad. 'full': the model as it is.
    """
    import torch
    from torch import nn

    from visctl.models import output_tensor

    class Logits(nn.Module):
        def __init__(self, inner: nn.Module, no_grad: bool) -> None:
            super().__init__()
            self.inner = inner
            self.no_grad = no_grad

        def forward(self, x: torch.Tensor) -> Any:
            # raw: a detector's list of dicts, for box targets; else the logits tensor
            pick = (lambda out: out) if raw else output_tensor
            if self.no_grad:
                with torch.no_grad():
                    return pick(self.inner(x))
            return pick(self.inner(x))

    if grad_mode == "layer":
        for p in model.parameters():
            p.requires_grad_(False)
    elif grad_mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    return Logits(model, no_grad=grad_mode in ("layer", "none"))


class CamEngine:
    """A CAM method bound to a model and its target layers; hooks live only during a call.

    grad-cam hooks its target layers for as long as its object lives, so several methods on one model
    would each see every forward; building the (cheap) grad-cam object per call keeps them apart.
    """

    def __init__(self, model: nn.Module, method: Method, layer_names: list[str], layouts: list[Layout],
                 batch_size: int = 32, ratio_channels_to_ablate: float = 1.0, detection: bool = False,
                 max_shape: tuple[int, int] | None = None) -> None:
        from visctl.models import find_layer

        self.cls_name, self.grad_mode = METHODS[method]
        self.method = method
        self.model = model
        self.layers = [find_layer(model, n)[1] for n in layer_names]
        if len({(lay.kind, lay.grid, lay.extra_tokens) for lay in layouts}) > 1:
            raise LayerError("the target layers have different layouts "
                             f"({', '.join(f'{n}: {lay.describe()}' for n, lay in zip(layer_names, layouts))})",
                             hint="pick target layers of one kind (all spatial maps or all tokens)")
        self.layout = layouts[0]
        self.batch_size = batch_size
        self.ratio = ratio_channels_to_ablate
        self.detection = detection
        if max_shape is not None and method is Method.ablationcam:
            raise VisctlError(f"--max-shape cannot shrink the maps {method.value} perturbs: the model's next layer "
                              "needs them at full size", hint="use it with a gradient method or eigencam")
        self.max_shape = max_shape

    def __call__(self, batch: torch.Tensor, targets: list[Any], aug_smooth: bool = False,
                 eigen_smooth: bool = False) -> tuple[np.ndarray, torch.Tensor]:
        """Maps (B, H, W) in [0, 1] at the input's size, and the logits (B, classes)."""
        import pytorch_grad_cam as gc
        import torch

        if len(targets) != batch.shape[0]:
            raise ValueError("one target per image")  # a bug, not a user error: grad-cam would zip silently
        self.model.eval()
        trainable = [p.requires_grad for p in self.model.parameters()]
        wrapped = build_cam_model(self.model, self.grad_mode, raw=self.detection)
        handles = []
        if self.grad_mode == "layer":
            handles = [layer.register_forward_hook(_start_graph, prepend=True) for layer in self.layers]
        kwargs: dict[str, Any] = {}
        if self.method is Method.ablationcam:
            kwargs = dict(batch_size=self.batch_size, ratio_channels_to_ablate=self.ratio)
            if self.layout.kind == "tokens":
                kwargs["ablation_layer"] = gc.AblationLayerVit()
        cam = getattr(gc, self.cls_name)(wrapped, self.layers, reshape_transform=make_reshape(self.layout, self.max_shape),
                                           **kwargs)
        if self.method is Method.scorecam:
            cam.batch_size = self.batch_size
        try:
            with torch.enable_grad(), _quiet_tqdm():  # the targets' scores are computed outside the forward
                maps = cam(batch, targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
            logits = cam.outputs if self.detection else cam.outputs.detach()
        finally:
            cam.activations_and_grads.release()
            for h in handles:
                h.remove()
            for p, flag in zip(self.model.parameters(), trainable):  # leave the caller's model as it was
                p.requires_grad_(flag)
        for i, t in enumerate(targets if not self.detection else []):
            if isinstance(t, RankTarget) and t.category is None:  # activation-only methods never call targets
                t.category = int(logits[i].topk(t.rank + 1).indices[t.rank])
        return maps, logits


@contextmanager
def _quiet_tqdm() -> Iterator[None]:
    """ScoreCAM/AblationCAM draw tqdm bars on stderr; ours is the only progress display."""
    from functools import partialmethod

    import tqdm

    original = tqdm.tqdm.__init__
    tqdm.tqdm.__init__ = partialmethod(original, disable=True)  # type: ignore[method-assign]
    try:
        yield
    finally:
        tqdm.tqdm.__init__ = original  # type: ignore[method-assign]


def _start_graph(_module: Any, _inputs: Any, output: Any) -> Any:
    """Forward hook: at the first target layer reached under no_grad, start the autograd graph here."""
    import torch

    if torch.is_grad_enabled():
        return None
    if not isinstance(output, torch.Tensor):
        return None
    torch.set_grad_enabled(True)  # restored when the wrapper's no_grad block exits
    # a clone, so in-place ops downstream (ResNet's `out += identity`) act on a non-leaf, as in plain grad-cam
    return output.detach().requires_grad_(True).clone()


def validate_layer_output(name: str, shape: Any) -> None:
    """A target layer must return one tensor; grad-cam cannot hook tuples or dicts."""
    if shape is None:
        raise LayerError(f"layer {name!r} is not called by the model's forward",
                         hint="pick a layer that runs; --preview-model marks layers that are not called")
    if not isinstance(shape, tuple):
        raise LayerError(f"layer {name!r} returns a {shape}, not a tensor; CAM methods need one tensor",
                         hint="pick one of its sub-layers (see --preview-model), e.g. the last block inside it")


def nonfinite_rows(logits: Any, maps: Any) -> set[int]:
    """Batch rows whose logits (B, K) or maps (B, H, W) hold NaN or infinite values."""
    import numpy as np
    import torch

    bad = ~torch.isfinite(logits.detach().float()).reshape(len(logits), -1).all(1)
    arr = np.asarray(maps)
    bad_maps = ~np.isfinite(arr.reshape(len(arr), -1)).all(1) if arr.size else np.zeros(len(logits), bool)
    return {i for i in range(len(logits)) if bool(bad[i]) or (i < len(bad_maps) and bool(bad_maps[i]))}


def check_topk(topk: int, num_classes: int | None) -> None:
    """``--topk`` must not ask for more classes than the model scores."""
    from visctl.errors import VisctlError

    if num_classes and topk > num_classes:
        raise VisctlError(f"--topk {topk}: the model scores {num_classes} classes",
                          hint=f"use --topk 1 .. {num_classes}, or name classes with --target-category")


def resolve_categories(specs: list[str], names: list[str] | None, num_classes: int) -> list[int]:
    """Class indices from ``--target-category`` values: indices or class names (case-insensitive)."""
    out: list[int] = []
    for spec in specs:
        for item in str(spec).split(","):
            item = item.strip()
            if not item:
                continue
            if item.lstrip("-").isdigit():
                idx = int(item)
                if not 0 <= idx < num_classes:
                    raise VisctlError(f"--target-category {idx} is out of range: the model has {num_classes} classes",
                                      hint=f"use 0 .. {num_classes - 1}" + (" or a class name" if names else ""))
                out.append(idx)
                continue
            lowered = [n.lower() for n in names or []]
            if item.lower() in lowered:
                out.append(lowered.index(item.lower()))
                continue
            if not names:
                raise VisctlError(f"--target-category {item!r}: the config names no classes",
                                  hint="give class indices, or add classes = [...] to the config")
            near = closest(item, names, n=3)
            raise VisctlError(f"--target-category {item!r} is not a class of this model",
                              hint=f"did you mean {', '.join(near)}?" if near else
                              f"classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
    return out


@dataclass
class CamSetup:
    """Everything decided before the first batch: layers, their layout, the classes and the targets."""

    layers: list[str]
    layouts: list[Layout]
    num_classes: int
    vit_like: bool
    layer_channels: int
    notes: list[str]


def plan(model: nn.Module, example: torch.Tensor, target_layers: list[str] | None, vit_like: bool | None,
         num_extra_tokens: int | None, default_layers: list[str] | None = None) -> CamSetup:
    """Probe the model once and decide target layers and their layouts.

    Args:
        model: the model in eval mode.
        example: one input (1, 3, H, W) as the pipeline produces it.
        target_layers: user layer paths, or None for the default.
        vit_like: force (True) or forbid (False) token handling; None detects it.
        num_extra_tokens: extra tokens before the patch tokens; None infers them from the patch grid.
        default_layers: a config's ``visctl.target_layers``.
    """
    from visctl.models import find_layer

    in_hw = (int(example.shape[2]), int(example.shape[3]))
    pr = probe(model, example)
    detected = is_vit_like(pr, in_hw)
    vit = detected if vit_like is None else vit_like
    notes = []
    if target_layers:
        names = [find_layer(model, n)[0] for n in target_layers]
    elif default_layers:
        names = [find_layer(model, n)[0] for n in default_layers]
        notes.append(f"target layers from the config: {', '.join(names)}")
    else:
        names = default_target_layers(model, pr, in_hw, vit)
        notes.append(f"default target layer: {', '.join(names)} (set --target-layers to change it)")
    if num_extra_tokens is None:
        for attr in ("num_extra_tokens", "num_prefix_tokens"):
            holder = getattr(model, "backbone", model)
            if isinstance(getattr(holder, attr, None), int):
                num_extra_tokens = getattr(holder, attr)
                break
    layouts = []
    channels = 0
    for name in names:
        shape = pr.shape_of(name)
        validate_layer_output(name, shape)
        layout = detect_layout(shape, in_hw, vit, num_extra_tokens, name)
        layouts.append(layout)
        channels = shape[1] if layout.kind == "nchw" else shape[-1]
        if layout.kind != "nchw":
            notes.append(f"{name}: {layout.describe()}")
    return CamSetup(layers=names, layouts=layouts, num_classes=pr.num_classes, vit_like=vit,
                    layer_channels=int(channels), notes=notes)
