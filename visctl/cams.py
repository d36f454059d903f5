"""Class activation maps through pytorch-grad-cam, with its traps designed around.

* one target per image, always (grad-cam zips targets with the batch and silently zeroes the rest);
* class indices validated against the model's output size before any work (grad-cam's ``with`` block
  swallows an out-of-range index);
* gradient methods start the autograd graph at the earliest target layer with frozen parameters, so the
  backward runs from the score down to the target layer only — the same maps as plain grad-cam, a
  fraction of its time; this also makes frozen models and no-grad code paths work;
* token (N, L, C) and channels-last (N, H, W, C) outputs are reshaped to the model's patch grid;
* a rank target ("top-1") is fixed on the clean image before any method scores perturbed copies;
* first-principal-component maps (EigenCAM, EigenGradCAM, KPCA-CAM, eigen_smooth) get a sign that lights
  the evidence for the target, not an arbitrary one (:func:`orient`, :func:`orient_by`); library prints go to
  stderr (:func:`library_calls`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visctl.choices import Amp, Method
from visctl.errors import LayerError, VisctlError, closest
from visctl.layers import (
    Layout,
    default_target_layers,
    detect_layout,
    is_vit_like,
    make_reshape,
    probe,
    validate_layer_output,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn



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

# methods that decompose the activations alone: nothing in what they decompose says which end of the component
# is evidence for the target (at a linear layer, such as a MobileNetV2/EfficientNet projection conv + BN, the
# channel mean's sign is arbitrary too), so :class:`CamEngine` runs one backward per batch from the target's
# score and orients the component by the layer's gradient-weighted map (:func:`orient_by`)
GRADIENT_ORIENTED = frozenset({Method.eigencam, Method.kpcacam})

# methods whose maps visctl computes itself, with grad-cam's formulas and in its order of float32 numpy
# operations (:func:`native_cam`), so a default cam run never imports grad-cam (seconds: matplotlib, scipy,
# sklearn); boxam still imports grad-cam's box-score target
NATIVE = frozenset({Method.gradcam, Method.hirescam, Method.gradcamelementwise, Method.xgradcam, Method.layercam,
                    Method.gradcamplusplus})

# other spellings users bring from the seeds and grad-cam's class names
_ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "kpcacam": "kpca_cam",
            "kpca-cam": "kpca_cam", "grad-cam": "gradcam", "layer-cam": "layercam", "score-cam": "scorecam"}


def parse_method(name: str) -> list[Method]:
    """Resolve a method name (case-insensitive, seed spellings accepted); ``all`` gives every method."""
    if "," in name:
        return [m for part in name.split(",") if part.strip() for m in parse_method(part)]
    key = name.strip().lower()
    if key == "all":  # every method the installed grad-cam has
        from visctl import _gradcam

        return [m for m in Method if _gradcam.available(METHODS[m][0])]
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


# ---- targets -------------------------------------------------------------------------------------------

class ClassTarget:
    """The logit of a fixed class (grad-cam's ClassifierOutputTarget, kept picklable and explicit)."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., self.category]


class RankTarget:
    """The image's ``rank``-th highest class (0 = top-1) on the clean input; :class:`CamEngine` resolves it
    to a class index (``category``) on the clean batch before any target is evaluated."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.category: int | None = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.category is None:
            raise RuntimeError("RankTarget evaluated before it was resolved on the clean batch")  # a bug
        return output[..., self.category]


# ---- the engine ----------------------------------------------------------------------------------------

def build_cam_model(model: nn.Module, grad_mode: str, raw: bool = False,
                    first_output: Callable[[Any], None] | None = None) -> nn.Module:
    """Wrap ``model`` so a forward returns logits and builds only the graph the method needs.

    'layer': parameters frozen, forward under no_grad until the first target layer fires, whose hook
    (installed by :class:`CamEngine`) switches grad on and makes its output a graph leaf. 'none': the
    whole forward under no_grad. 'full': the model as it is. ``first_output`` sees the output of the
    first forward only: grad-cam's BaseCAM.forward always starts with the unperturbed batch.
    """
    import torch
    from torch import nn

    from visctl.layers import output_tensor

    class Logits(nn.Module):
        def __init__(self, inner: nn.Module, no_grad: bool) -> None:
            super().__init__()
            self.inner = inner
            self.no_grad = no_grad
            self.first_output = first_output

        def forward(self, x: torch.Tensor) -> Any:
            # raw: a detector's list of dicts, for box targets; else the logits tensor
            pick = (lambda out: out) if raw else output_tensor
            if self.no_grad:
                with torch.no_grad():
                    out = pick(self.inner(x))
            else:
                out = pick(self.inner(x))
            if self.first_output is not None:
                see, self.first_output = self.first_output, None
                see(out)
            return out

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
                 max_shape: tuple[int, int] | None = None, autocast: tuple[str, Any] | None = None,
                 native: bool = True, spatial: bool = False, absolute: bool | None = None) -> None:
        from visctl.layers import find_layer

        # the methods of NATIVE compute in visctl (same numbers, no grad-cam import) where :meth:`_native_for`
        # allows; native=False always goes through grad-cam's own class (the reference tests compare both)
        self.native = native and method in NATIVE

        # (device type, dtype) of torch.autocast for the forward (--amp: see autocast_dtype), or None
        self.autocast = autocast
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
            raise VisctlError(f"max_shape= cannot shrink the maps {method.value} perturbs: the model's next layer "
                              "needs them at full size", hint="use it with a gradient method or eigencam")
        self.max_shape = max_shape
        # mmyolo's box AM (mmyolo/utils/boxam_utils.py): GradCAM / GradCAM++ weights kept per position
        # (SpatialBaseCAM), not averaged; ``absolute`` (default: ``spatial``): activations and gradients as |x|
        # (its reshape_transform, which it gives every method, AblationCAM's ablated maps included)
        self.spatial = spatial
        self.absolute = spatial if absolute is None else absolute
        if spatial and method not in (Method.gradcam, Method.gradcamplusplus):
            raise ValueError("spatial weights are mmyolo's GradCAM and GradCAM++ only")  # a bug, not a user error
        # EigenCAM / KPCA-CAM: the graph from the target layer, one backward per batch, the component oriented
        # by the layer's gradient-weighted map (not on |x|, mmyolo's boxam: there every channel is >= 0, so the
        # channel mean already points to more activation); the images of the last call where it gave no sign
        self.orient_by_gradient = method in GRADIENT_ORIENTED and not self.absolute
        if self.orient_by_gradient:
            self.grad_mode = "layer"
        self.unoriented: list[int] = []

    def __call__(self, batch: torch.Tensor, targets: list[Any], aug_smooth: bool = False,
                 eigen_smooth: bool = False, on_output: Callable[[Any], None] | None = None,
                 ) -> tuple[np.ndarray, Any]:
        """Maps (B, H, W) in [0, 1] at the input's size, and the logits (B, classes) of the clean batch (a
        detector: its outputs, one dict per image).

        ``on_output`` (a detector) sees the outputs of the method's first forward, the clean batch, before
        any target is evaluated: it may fill the targets in place from them (boxam's boxes come from the very
        forward whose gradients make their maps: one forward, not a detection pass and a CAM pass), or raise
        :class:`NoTargets`, which ends the call there with all-zero maps.

        A :class:`RankTarget` is resolved to a class index on the clean batch before any target is
        evaluated: by the method's own first forward, which is the clean batch in every grad-cam method,
        or, with ``aug_smooth`` (whose first forward is augmented), by one extra clean forward. ScoreCAM and
        AblationCAM evaluate their targets only on perturbed copies, where "the top class" is another.
        """
        import functools

        import torch

        if len(targets) != batch.shape[0]:
            raise ValueError("one target per image")  # a bug, not a user error: grad-cam would zip silently
        self.model.eval()
        clean = predict(self.model, batch) if aug_smooth and not self.detection else None
        if clean is not None:
            resolve_ranks(targets, clean)
        trainable = [p.requires_grad for p in self.model.parameters()]
        handles = []
        cam = None
        self.unoriented = []
        try:
            wrapped = build_cam_model(self.model, self.grad_mode, raw=self.detection,
                                      first_output=on_output if self.detection
                                      else lambda out: resolve_ranks(targets, out))
            if self.grad_mode == "layer":
                hook = functools.partial(_start_graph, as_float=self.autocast is not None)
                handles = [layer.register_forward_hook(hook, prepend=True) for layer in self.layers]
            autocast = (torch.autocast(self.autocast[0], dtype=self.autocast[1]) if self.autocast is not None
                        else contextlib.nullcontext())
            if self._native_for(targets, aug_smooth, eigen_smooth):
                captured = _Captured(self.layers, make_reshape(self.layout, self.max_shape, self.absolute))
                handles += captured.handles
                # the targets' scores are computed outside the forward, hence enable_grad (as below)
                with torch.enable_grad(), autocast:
                    maps, out = native_cam(self.method, wrapped, captured, batch, targets, self.spatial)
                return maps, out if self.detection else out.detach()
            import pytorch_grad_cam as gc

            from visctl import _gradcam

            kwargs: dict[str, Any] = {}
            if self.method is Method.ablationcam:
                kwargs = dict(batch_size=self.batch_size, ratio_channels_to_ablate=self.ratio)
                if self.layout.kind != "nchw":
                    # the ablation layer replaces the target layer, so it sees the raw (N, L, C) / (N, H, W, C)
                    # output: AblationLayerVit moves channels to dim 1 (grad-cam's ViT and Swin examples use it)
                    kwargs["ablation_layer"] = gc.AblationLayerVit()
            # the targets' scores are computed outside the forward, hence enable_grad
            with torch.enable_grad(), library_calls(), autocast:
                reshape = make_reshape(self.layout, self.max_shape, self.absolute)
                # FullGrad prints "Warning: target_layers is ignored in FullGrad..." as it is built: visctl says
                # so itself, once, in its own words (visctl.library.cam's _say_layerless)
                with contextlib.redirect_stdout(io.StringIO()) if self.method is Method.fullgrad \
                        else contextlib.nullcontext():
                    cam = _gradcam.build(_gradcam.cam_class(self.cls_name), wrapped, self.layers,
                                         reshape_transform=reshape, **kwargs)
                if self.method is Method.scorecam:
                    cam.batch_size = self.batch_size
                unsure: set[int] = set()
                if self.orient_by_gradient:
                    _orient_by_gradient(cam, targets, unsure)
                maps = cam(batch, targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
            self.unoriented = sorted(unsure)
            out = _gradcam.outputs(cam)
            logits = out if self.detection else out.detach() if clean is None else clean
        except NoTargets:
            import numpy as np

            return np.zeros((batch.shape[0], *batch.shape[2:]), np.float32), []
        finally:
            if cam is not None:
                _release(cam)
            for h in handles:
                h.remove()
            for p, flag in zip(self.model.parameters(), trainable):  # leave the caller's model as it was
                p.requires_grad_(flag)
        return maps, logits


    def _native_for(self, targets: list[Any], aug_smooth: bool, eigen_smooth: bool) -> bool:
        """Whether this call computes its maps natively: a :data:`NATIVE` method on class targets, or on a
        detector's box targets (scores of its output dicts: grad-cam's BaseCAM.forward sums them the same way
        whatever they are); a segmentation target, test-time augmentation (ttach) and eigen smoothing (an SVD)
        stay grad-cam's."""
        return ((self.native or self.spatial) and not aug_smooth and not eigen_smooth
                and (self.detection or all(isinstance(t, (ClassTarget, RankTarget)) for t in targets)))


class NoTargets(Exception):
    """Raised by :class:`CamEngine`'s ``on_output`` when the batch has nothing to explain (no box kept): the
    call stops after the forward and its maps are all zeros."""


class _Captured:
    """The target layers' activations and gradients, kept as grad-cam's ActivationsAndGradients keeps them
    (pytorch_grad_cam/activations_and_gradients.py, grad-cam 1.5.x): the reshape_transform applied to both, each
    moved to the CPU and detached, one activation per call of a layer, gradients *prepended* as the backward
    reaches them (so in forward order), and a gradient only for outputs that require grad."""

    def __init__(self, layers: list[nn.Module], reshape: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.reshape = reshape
        self.activations: list[torch.Tensor] = []
        self.gradients: list[torch.Tensor] = []
        # registered after _start_graph's prepended hook: they see its graph leaf, as grad-cam's hooks do
        self.handles = [layer.register_forward_hook(self._save) for layer in layers]

    def _save(self, _module: Any, _inputs: Any, output: Any) -> None:
        # save_activation (detach=True): reshape, then .cpu().detach()
        activation = self.reshape(output) if self.reshape is not None else output
        self.activations.append(activation.cpu().detach())
        # save_gradient: "You can only register hooks on tensor requires grad."
        if not hasattr(output, "requires_grad") or not output.requires_grad:
            return

        def store(grad: torch.Tensor) -> None:
            if self.reshape is not None:
                grad = self.reshape(grad)
            self.gradients = [grad.cpu().detach()] + self.gradients  # "Gradients are computed in reverse order"

        output.register_hook(store)


def native_cam(method: Method, model: nn.Module, captured: _Captured, batch: torch.Tensor,
               targets: list[Any], spatial: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """A :data:`NATIVE` method's maps (B, H, W) and the model's output, as grad-cam 1.5.x computes them.

    Follows pytorch_grad_cam/base_cam.py: ``forward`` (one forward, the targets' scores summed, one backward),
    ``compute_cam_per_layer`` (per layer: the method's ``get_cam_image``, ReLU, ``scale_cam_image`` to the
    input's (W, H)) and ``aggregate_multi_layers`` (ReLU, mean over layers, ``scale_cam_image``), all in float32
    numpy with the same operations in the same order. grad-cam's ``model.zero_grad()`` is left out: the
    parameters are frozen (no gradient reaches them) and the caller's ``.grad`` stays as it was.
    """
    import numpy as np

    outputs = model(batch)  # base_cam.py forward: self.outputs = outputs = self.activations_and_grads(input_tensor)
    loss = sum([target(output) for target, output in zip(targets, outputs)])  # the same sum, starting at 0
    loss.backward()  # type: ignore[union-attr]
    activations_list = [a.cpu().data.numpy() for a in captured.activations]
    grads_list = [g.cpu().data.numpy() for g in captured.gradients]
    target_size = (batch.size(-1), batch.size(-2))  # get_target_width_height: (width, height)
    cam_per_target_layer = []
    for i in range(len(captured.handles)):
        if i >= len(activations_list) or i >= len(grads_list):
            raise RuntimeError(f"target layer {i} gave no activation or no gradient for the score")
        cam = _cam_image(method, activations_list[i], grads_list[i], spatial)
        cam = np.maximum(cam, 0)
        scaled = _scale_cam_image(cam, target_size)
        cam_per_target_layer.append(scaled[:, None, :])
    # aggregate_multi_layers
    stacked = np.concatenate(cam_per_target_layer, axis=1)
    stacked = np.maximum(stacked, 0)
    result = np.mean(stacked, axis=1)
    return _scale_cam_image(result), outputs


def _cam_image(method: Method, activations: np.ndarray, grads: np.ndarray, spatial: bool = False) -> np.ndarray:
    """One layer's map (B, h, w) before the ReLU: each method's ``get_cam_image`` (its own, or BaseCAM's
    weights[:, :, None, None] * activations summed over channels with its ``get_cam_weights``)."""
    import numpy as np

    if activations.ndim != 4:  # 3D-conv (5-D) maps are scaled with scipy's zoom in grad-cam: not here
        raise ValueError(f"Invalid activation shape. Get {len(activations.shape)}.")
    if method is Method.hirescam or (spatial and method is Method.gradcam):
        # hirescam.py get_cam_image; mmyolo's GradCAM (SpatialBaseCAM, get_cam_weights = grads) is the same sum
        return (grads * activations).sum(axis=1)
    if method is Method.gradcamelementwise:  # grad_cam_elementwise.py get_cam_image
        return np.maximum(grads * activations, 0).sum(axis=1)
    if method is Method.layercam:  # layer_cam.py get_cam_image
        return (np.maximum(grads, 0) * activations).sum(axis=1)
    if method is Method.gradcam:  # grad_cam.py get_cam_weights (2D image)
        weights = np.mean(grads, axis=(2, 3))
    elif method is Method.xgradcam:  # xgrad_cam.py get_cam_weights
        spatial_axes = tuple(range(2, activations.ndim))
        sum_activations = np.sum(activations, axis=spatial_axes)
        sum_activations = sum_activations.reshape(sum_activations.shape + (1,) * len(spatial_axes))
        eps = 1e-7
        weights = grads * activations / (sum_activations + eps)
        weights = weights.sum(axis=spatial_axes)
    elif method is Method.gradcamplusplus:  # grad_cam_plusplus.py get_cam_weights (equation 19 of 1710.11063)
        grads_power_2 = grads**2
        grads_power_3 = grads_power_2 * grads
        spatial_axes = tuple(range(2, activations.ndim))
        sum_activations = np.sum(activations, axis=spatial_axes)
        sum_activations = sum_activations.reshape(sum_activations.shape + (1,) * len(spatial_axes))
        eps = 0.000001
        aij = grads_power_2 / (2 * grads_power_2 + sum_activations * grads_power_3 + eps)
        aij = np.where(grads != 0, aij, 0)
        weights = np.maximum(grads, 0) * aij
        if spatial:  # mmyolo's GradCAMPlusPlus: the weights per position, SpatialBaseCAM's sum over channels
            return (weights * activations).sum(axis=1)  # type: ignore[no-any-return]
        weights = np.sum(weights, axis=spatial_axes)
    else:
        raise ValueError(f"{method.value} has no native implementation")  # a bug: NATIVE lists the methods above
    # base_cam.py get_cam_image (2D conv, eigen_smooth=False)
    weighted_activations = weights[:, :, None, None] * activations
    return weighted_activations.sum(axis=1)  # type: ignore[no-any-return]


def _scale_cam_image(cam: np.ndarray, target_size: tuple[int, int] | None = None) -> np.ndarray:
    """pytorch_grad_cam/utils/image.py scale_cam_image, 2-D maps: min-max per map (1e-7 in the denominator),
    then cv2.resize to ``target_size`` (width, height)."""
    import cv2
    import numpy as np

    result = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if target_size is not None:
            img = cv2.resize(img.astype(np.float32), target_size)  # np.float32(img) in grad-cam
        result.append(img)
    return np.array(result, dtype=np.float32)  # np.float32(result) in grad-cam


def _release(cam: Any) -> None:
    """Remove grad-cam's hooks and drop its tensors, also after a failed call."""
    held = cam.activations_and_grads
    try:
        held.release()
    except RuntimeError:  # ShapleyCAM keeps gradient views, which cannot be detached in place
        held.activations.clear()
        held.gradients.clear()
        for handle in held.handles:
            handle.remove()
        held.handles.clear()


def unsupported(method: Method, layouts: list[Layout]) -> str | None:
    """Why grad-cam's ``method`` cannot run with target layers of these layouts, or None when it can."""
    if all(lay.kind == "nchw" for lay in layouts):
        return None
    if method is Method.fullgrad:
        # fullgrad_cam.py: target_layers are replaced by every Conv2d/BatchNorm2d with a bias, and the
        # reshape_transform meant for the target layers is applied to those (N, C, H, W) outputs
        return ("FullGrad ignores the target layers and hooks every Conv2d/BatchNorm2d bias, whose outputs "
                "cannot take the token/channels-last reshape of a ViT-like model")
    if method is Method.shapleycam:
        # shapley_cam.py: with detach=False the activations reach BaseCAM.get_cam_image un-reshaped; on
        # ViTs the Hessian-vector product also needs a double backward through fused attention
        return ("ShapleyCAM weights the raw activations without the token/channels-last reshape (and needs a "
                "second-order gradient through attention); it runs only on (N, C, H, W) target layers")
    return None


def predict(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The logits (B, classes) of a clean forward, without gradients."""
    import torch

    from visctl.layers import output_tensor

    model.eval()
    with torch.no_grad():
        return output_tensor(model(batch)).detach()


def resolve_ranks(targets: list[Any], logits: torch.Tensor) -> None:
    """Fix every unresolved :class:`RankTarget` to its image's ``rank``-th class of ``logits`` (B, classes)."""
    for t, row in zip(targets, logits.detach()):
        if isinstance(t, RankTarget) and t.category is None:
            t.category = int(row.topk(t.rank + 1).indices[t.rank])


def orient(projection: np.ndarray, decomposed: Any) -> np.ndarray:
    """Give each first-principal-component map the sign that correlates positively with its reference.

    The sign of an SVD / kernel-PCA component is arbitrary (A = U S V^T = (-U) S (-V^T)), so grad-cam's
    EigenCAM lights the object or the background by chance. The reference is the channel mean of the very
    matrix that was decomposed: the activations (EigenCAM, KPCA-CAM), the gradient-weighted activations
    (EigenGradCAM), a method's weighted activations (``eigen_smooth``), i.e. the map the method draws
    without the projection.

    Args:
        projection: (B, H, W) projections onto the first component.
        decomposed: (B, C, H, W) the matrix they came from.
    """
    import numpy as np

    if not isinstance(decomposed, np.ndarray):  # ShapleyCAM keeps tensors
        decomposed = decomposed.detach().cpu().numpy()
    reference = np.nan_to_num(decomposed.reshape(*decomposed.shape[:2], -1)).mean(axis=1)  # (B, H*W)
    flat = projection.reshape(projection.shape[0], -1)
    corr = ((flat - flat.mean(1, keepdims=True)) * (reference - reference.mean(1, keepdims=True))).sum(1)
    sign = np.where(corr < 0, -1.0, 1.0).astype(projection.dtype)
    return projection * sign.reshape(-1, *([1] * (projection.ndim - 1)))


#: below this |Pearson r| between a component and the gradient-weighted map, the gradient gives no sign
NO_SIGN = 1e-2


def gradient_map(activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """The gradient-weighted map of a layer, (B, H, W): gradient x activation summed over the channels (HiResCAM's
    map before its ReLU), each position's first-order share of the target's score, positive where the layer's
    activations there raise it. Behind global average pooling it is Grad-CAM's map times H*W; on a detector it
    stays at the boxes, where Grad-CAM's averaged gradients wander (on the demo detector the components it
    oriented lit the boxes on 5 of 30 images, this map's on 26)."""
    import numpy as np

    return (np.nan_to_num(grads.astype(np.float64))  # type: ignore[no-any-return]
            * np.nan_to_num(activations.astype(np.float64))).sum(axis=1)


def orient_by(projection: np.ndarray, reference: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
    """Each map of ``projection`` (B, H, W) with the sign that correlates positively with ``reference``'s.

    The reference is the gradient-weighted map of the same layer and target (:func:`gradient_map`): positive
    where the layer's activations raise the target's score. Where it gives no sign (no reference; a constant or
    non-finite map: no gradient reached the layer, or a batch row with no target; or ``|r|`` below
    :data:`NO_SIGN`) the map is left as it came (:func:`orient`'s sign) and its index is returned in the list.
    """
    import numpy as np

    if reference is None:
        return projection, list(range(len(projection)))
    flat = projection.reshape(len(projection), -1).astype(np.float64)
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = projection.copy()
    unsure = []
    for i, (p, r) in enumerate(zip(flat, ref)):
        p, r = p - p.mean(), r - r.mean()
        norm = float(np.linalg.norm(p) * np.linalg.norm(r))
        corr = float(p @ r) / norm if norm > 0 and np.isfinite(norm) else 0.0
        if not np.isfinite(corr) or abs(corr) < NO_SIGN:
            unsure.append(i)
        elif corr < 0:
            out[i] = -out[i]
    return out, unsure


def _orient_by_gradient(cam: Any, targets: list[Any], unsure: set[int]) -> None:
    """Make grad-cam's ``cam`` (EigenCAM, KPCA-CAM: forward only) orient its component by the gradient.

    Its forward (each one: also every ``aug_smooth`` copy) is followed by one backward of the targets' summed
    scores, which grad-cam's hooks record as for its gradient methods; ``get_cam_image`` then flips each image's
    projection to correlate positively with the layer's gradient-weighted map (:func:`orient_by`). Images where
    that map gives no sign go into ``unsure`` and keep the channel-mean orientation of :func:`orient`.
    """
    import numpy as np
    import torch

    recorder = cam.activations_and_grads  # visctl._gradcam._Recording: its inner runs the model
    forward = recorder.inner

    class Backward:
        def __call__(self, x: Any) -> Any:
            outputs = forward(x)
            scores = [t(o) for t, o in zip(targets, outputs)]
            loss = sum(scores[1:], scores[0]) if scores else None
            # nothing to differentiate (a detector batch with no kept box): no gradient, orient()'s sign stays
            if isinstance(loss, torch.Tensor) and loss.requires_grad:
                loss.backward()
            return outputs

        def __getattr__(self, name: str) -> Any:  # activations, gradients, release(), ...
            return getattr(forward, name)

    recorder.inner = Backward()
    project = cam.get_cam_image

    def get_cam_image(input_tensor: Any, target_layer: Any, targets_: Any, activations: Any, grads: Any,
                      eigen_smooth: Any = False) -> np.ndarray:
        projection = project(input_tensor, target_layer, targets_, activations, grads, eigen_smooth)
        if grads is not None and not isinstance(grads, np.ndarray):
            grads = grads.detach().cpu().numpy()
        if isinstance(activations, torch.Tensor):
            activations = activations.detach().cpu().numpy()
        usable = grads is not None and getattr(grads, "shape", None) == getattr(activations, "shape", None)
        oriented, none = orient_by(projection, gradient_map(activations, grads) if usable else None)
        unsure.update(none)
        return oriented

    cam.get_cam_image = get_cam_image


#: KPCA-CAM's kernel matrix has (H*W)^2 entries per image (float64): above this many positions it would need
#: over 1.6 GB (a 100 x 100 map), and a 224 x 224 map 20 GB; the method is then skipped with the reason
KPCA_MAX_POSITIONS = 100 * 100


def first_component(activation_batch: Any) -> np.ndarray:
    """grad-cam's ``get_2d_projection`` without its (H*W) x (H*W) ``U``: each image's centred (H*W) x C activations
    projected onto their first right singular vector. grad-cam asks ``np.linalg.svd`` for the full ``U``
    (``full_matrices=True``) and never uses it: 20 GB for a 224 x 224 map. The reduced SVD has the same ``V^T``
    rows, so the projection is the same (its sign is :func:`orient`'s to set)."""
    import numpy as np

    activation_batch = np.array(activation_batch, copy=True)
    activation_batch[np.isnan(activation_batch)] = 0
    projections = []
    for activations in activation_batch:
        flat = activations.reshape(activations.shape[0], -1).transpose()
        flat = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
        projections.append((flat @ vt[0, :]).reshape(activations.shape[1:]))
    return np.asarray(projections, dtype=np.float32)


def _bounded_kernel(projector: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """grad-cam's ``get_2d_projection_kernel``, refused (the method is skipped, with the reason) where its kernel
    matrix would not fit: :data:`KPCA_MAX_POSITIONS`."""
    def project(activation_batch: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        h, w = activation_batch.shape[-2:]
        if h * w > KPCA_MAX_POSITIONS:
            gb = (h * w) ** 2 * 8 / 2**30
            raise ValueError(f"KPCA-CAM's kernel at this layer ({h} x {w} positions) needs {gb:,.1f} GB per image; "
                             f"it runs up to {KPCA_MAX_POSITIONS:,} positions: use a deeper layer or a smaller input")
        return projector(activation_batch, *args, **kwargs)
    return project


def _oriented(projector: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    compute = (first_component if projector.__name__ == "get_2d_projection"
               else _bounded_kernel(projector) if projector.__name__ == "get_2d_projection_kernel" else projector)

    def project(activation_batch: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        return orient(compute(activation_batch, *args, **kwargs), activation_batch)
    project.__wrapped__ = projector  # type: ignore[attr-defined]
    return project


@contextmanager
def library_calls() -> Iterator[None]:
    """Everything visctl changes around a grad-cam call, in one place.

    * its prints (FullGrad's "Warning: target_layers is ignored ...") go to stderr: stdout carries results
      only (the ``--json`` manifest);
    * ScoreCAM/AblationCAM's tqdm bars are off (grad-cam's own ``tqdm`` bindings are swapped, not the tqdm
      class): ours is the only progress display;
    * numpy's BLAS runs on one thread: grad-cam does one small SVD per image ((H*W) x C), where a
      multi-threaded OpenBLAS is 10-20x slower than one thread (measured on 2 busy cores); torch's own
      thread pool is not touched;
    * every first-principal-component projection (EigenCAM, EigenGradCAM, KPCA-CAM, ``eigen_smooth`` on any
      method) is oriented by :func:`orient`; grad-cam's modules import the projection functions by name,
      so each module's binding is swapped for the call and restored after it.
    """
    import contextlib
    import sys
    import types
    from functools import partial

    import pytorch_grad_cam  # noqa: F401  (loads the method modules whose bindings are swapped below)
    import tqdm
    from pytorch_grad_cam.utils import svd_on_activations as svd
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn, which grad-cam needs

    # get_2d_projection_kernel (KPCA-CAM) is new in grad-cam 1.5: 1.4.8 has only get_2d_projection
    originals: dict[str, Callable[..., np.ndarray]] = {
        name: getattr(svd, name) for name in ("get_2d_projection", "get_2d_projection_kernel") if hasattr(svd, name)}
    quiet_tqdm = types.SimpleNamespace(tqdm=partial(tqdm.tqdm, disable=True))
    swapped: list[tuple[Any, str, Any]] = []
    for mod_name, module in list(sys.modules.items()):
        if not mod_name.startswith("pytorch_grad_cam") or module is None:
            continue
        for name in originals:
            if getattr(module, name, None) is originals[name]:
                setattr(module, name, _oriented(originals[name]))
                swapped.append((module, name, originals[name]))
        # grad-cam calls `tqdm.tqdm(...)` through its own `tqdm` binding: give its modules one whose bars are
        # disabled, leaving the tqdm class (every other user's bars in the process) as it is
        if getattr(module, "tqdm", None) is tqdm:
            module.tqdm = quiet_tqdm  # type: ignore[attr-defined]
            swapped.append((module, "tqdm", tqdm))
    try:
        with contextlib.redirect_stdout(sys.stderr), threadpool_limits(1, user_api="blas"):
            yield
    finally:
        for module, name, fn in swapped:
            setattr(module, name, fn)


def _start_graph(_module: Any, _inputs: Any, output: Any, as_float: bool = False) -> Any:
    """Forward hook: at the first target layer reached under no_grad, start the autograd graph here.

    ``as_float`` (under ``--amp``): the graph starts from a float32 copy, and every later target layer's
    output is cast to float32 in the graph, so the activations and gradients turned into numpy arrays are
    float32 (numpy has no bfloat16); the layers after them still run in the autocast dtype.
    """
    import torch

    if not isinstance(output, torch.Tensor):
        return None
    if torch.is_grad_enabled():  # a later target layer, inside the graph: float32 there too under --amp
        if as_float and output.is_floating_point() and output.dtype != torch.float32:
            return output.float()
        return None
    torch.set_grad_enabled(True)  # restored when the wrapper's no_grad block exits
    leaf = output.detach().float() if as_float else output.detach()
    # a clone, so in-place ops downstream (ResNet's `out += identity`) act on a non-leaf, as in plain grad-cam
    return leaf.requires_grad_(True).clone()


#: --amp: the autocast dtype of the CAM forward, by name (off: float32)
AMP = tuple(a.value for a in Amp)


def autocast_dtype(amp: str, device: str, methods: list[Method]) -> Any:
    """The dtype to autocast the CAM forward to under ``--amp``, or None (``off``).

    Only on CUDA: on a CPU autocast makes a CAM slower and less exact, so it is refused rather than ignored.
    Only for methods whose graph starts at the target layer (:func:`_start_graph` hands grad-cam float32
    activations and gradients there); the others hand grad-cam the raw activations of every perturbed
    forward (ScoreCAM, AblationCAM, KPCA-CAM, FEM, EigenCAM) or differentiate the whole model (FullGrad,
    ShapleyCAM), where a half-precision tensor would reach numpy or a second-order gradient.

    Raises:
        VisctlError: an unknown value, ``amp`` on a device other than CUDA, or with a method that cannot take it.
    """
    amp = str(getattr(amp, "value", amp)).lower()
    if amp not in AMP:
        raise VisctlError(f"unknown amp={amp!r}", hint="use " + ", ".join(AMP))
    if amp == "off":
        return None
    if not str(device).startswith("cuda"):
        raise VisctlError(f"amp={amp} needs a CUDA device, and this run is on {device}",
                          hint="leave amp= out on a CPU (autocast there is slower and less exact), or use device=cuda")
    refused = [m.value for m in methods if METHODS[m][1] != "layer"]
    if refused:
        raise VisctlError(f"amp= cannot be used with {', '.join(refused)}",
                          hint="these methods read raw activations of perturbed forwards or whole-model gradients in "
                          "float32; leave amp= out, or use a gradient method (gradcam, gradcam++, xgradcam, "
                          "layercam, hirescam, ...)")
    import torch

    return torch.bfloat16 if amp == "bf16" else torch.float16


def nonfinite_rows(logits: Any, maps: Any) -> set[int]:
    """Batch rows whose logits (B, K) or maps (B, H, W) hold NaN or infinite values."""
    import numpy as np
    import torch

    bad = ~torch.isfinite(logits.detach().float()).reshape(len(logits), -1).all(1)
    arr = np.asarray(maps)
    bad_maps = ~np.isfinite(arr.reshape(len(arr), -1)).all(1) if arr.size else np.zeros(len(logits), bool)
    return {i for i in range(len(logits)) if bool(bad[i]) or (i < len(bad_maps) and bool(bad_maps[i]))}


def resolve_categories(specs: Sequence[str], names: list[str] | None, num_classes: int) -> list[int]:
    """Class indices from ``target_category`` values: indices or class names (case-insensitive).

    A value may list several, comma-separated; a class name that has commas in it (ImageNet's ``'goldfish,
    Carassius auratus'`` in mmpretrain) is found whole first, and one of its comma-separated synonyms
    (``goldfish``) names it when no other class has that synonym.
    """
    out: list[int] = []
    lowered = [n.lower() for n in names or []]
    for spec in specs:
        parts = [p.strip() for p in str(spec).split(",")]
        i = 0
        while i < len(parts):
            # the longest run of parts that is a whole class name
            whole = next((j for j in range(len(parts), i + 1, -1) if ", ".join(parts[i:j]).lower() in lowered), None)
            if whole is not None:
                out.append(lowered.index(", ".join(parts[i:whole]).lower()))
                i = whole
                continue
            item, i = parts[i], i + 1
            if not item:  # '' or 'a,,b': not "the predicted class" in silence
                from visctl.errors import ArgumentError

                raise ArgumentError(f"target_category={spec!r} names an empty class",
                                    hint="give class indices or names (comma-separated), or leave the option "
                                    "out for the predicted classes")
            out.append(_category(item, names, lowered, num_classes))
    return out


def _category(item: str, names: list[str] | None, lowered: list[str], num_classes: int) -> int:
    if item.lstrip("-").isdigit():
        idx = int(item)
        if not 0 <= idx < num_classes:
            raise VisctlError(f"target_category={idx} is out of range: the model has {num_classes} classes",
                              hint=f"use 0 .. {num_classes - 1}" + (" or a class name" if names else ""))
        return idx
    if item.lower() in lowered:
        return lowered.index(item.lower())
    if not names:
        raise VisctlError(f"target_category={item!r}: the config names no classes",
                          hint="give class indices, or add classes = [...] to the config")
    synonym = [k for k, n in enumerate(lowered) if item.lower() in (s.strip() for s in n.split(","))]
    if len(synonym) == 1:
        return synonym[0]
    if synonym:
        raise VisctlError(f"target_category={item!r} is a name of several classes: "
                          + "; ".join(f"{k} ({names[k]})" for k in synonym[:5]),
                          hint="give the class index, or its whole name in quotes")
    near = closest(item, names, n=3)
    raise VisctlError(f"target_category={item!r} is not a class of this model",
                      hint=f"did you mean {', '.join(near)}?" if near else
                      f"classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")


def check_topk(topk: int, num_classes: int) -> None:
    """``topk`` must not ask for more classes than the model has."""
    from visctl.errors import InputError

    if topk > num_classes:
        raise InputError(f"topk={topk} asks for more classes than the model has ({num_classes})",
                         hint=f"use topk=1 .. {num_classes}, or name classes with target_category=")


@dataclass
class CamSetup:
    """Everything decided before the first batch: layers, their layout, the classes and the targets."""

    layers: list[str]
    layouts: list[Layout]
    num_classes: int
    vit_like: bool
    layer_channels: int
    notes: list[str]
    warnings: list[str] = field(default_factory=list)  # options given that this model's layers do not use


def plan(model: nn.Module, example: torch.Tensor, target_layers: Sequence[str] | None, vit_like: bool | None,
         num_extra_tokens: int | None, default_layers: list[str] | None = None,  # noqa: F811 (a config's layers)
         traced: Any = None) -> CamSetup:
    """Probe the model once and decide target layers and their layouts.

    Args:
        model: the model in eval mode.
        example: one input (1, 3, H, W) as the pipeline produces it.
        target_layers: user layer paths, or None for the default.
        vit_like: force (True) or forbid (False) token handling; None detects it.
        num_extra_tokens: extra tokens before the patch tokens; None infers them from the patch grid.
        default_layers: a config's ``visctl.target_layers``.
        traced: :func:`visctl.layers.trace` of ``model`` on ``example`` when the caller already ran it.
    """
    from visctl.layers import find_layer

    in_hw = (int(example.shape[2]), int(example.shape[3]))
    pr = probe(model, example, traced=traced)
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
    given_extra = num_extra_tokens
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
    warnings = []
    if all(lay.kind == "nchw" for lay in layouts):
        # token handling applies to (N, L, C) and channels-last (Swin's N, H, W, C) outputs only: a forced
        # --vit-like or --num-extra-tokens on a layer that gives a channels-first map changes nothing, and the
        # run is not ViT-like
        spatial = ", ".join(f"{n} gives {tuple(pr.shape_of(n))}" for n in names)
        unused = [opt for opt, on in (("--vit-like", vit_like is True),
                                      (f"--num-extra-tokens {given_extra}", given_extra is not None)) if on]
        if unused:
            warnings.append(f"{' and '.join(unused)} had no effect: the target layer's output is a channels-first "
                            f"map, not a token sequence (N, L, C) ({spatial})")
        vit = False
    return CamSetup(layers=names, layouts=layouts, num_classes=pr.num_classes, vit_like=vit,
                    layer_channels=int(channels), notes=notes, warnings=warnings)
