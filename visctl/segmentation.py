"""CAMs for semantic segmentation models: a class over a region, as grad-cam's SemanticSegmentationTarget.

A segmentation model returns per-pixel logits (N, C, H, W), or a dict with them under ``out`` (torchvision's
FCN / DeepLabV3 / LRASPP, whose ``aux`` head is ignored). The target of a class is the sum of its logits over a
region: by default the pixels the model predicts as that class, else a mask file or a box the user gives
(grad-cam's ``SemanticSegmentationTarget(category, mask)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from visctl.errors import InputError
from visctl.images import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from visctl.layers import Probe
    from visctl.transforms import ImageState

BACKGROUND_NAMES = ("background", "_background_", "bg", "__background__")
# heads whose outputs are the logits themselves: never a default target layer
_HEAD_PREFIXES = ("classifier", "aux_classifier", "head", "decode_head", "auxiliary_head", "seg_head")


def is_segmentation_output(out: Any) -> bool:
    """Whether a model output is per-pixel logits (N, C, H, W) with C > 1, or a dict with them under ``out``."""
    import torch

    if isinstance(out, dict):
        out = out.get("out")
    return isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[1] > 1 and min(out.shape[2:]) > 1


def logits(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) logits under no_grad."""
    import torch

    from visctl.layers import output_tensor

    with torch.no_grad():
        return output_tensor(model(batch)).detach()


def background_index(names: list[str] | None, model: nn.Module) -> int | None:
    """The background class: named so in the class list, else 0 for torchvision's VOC-style models."""
    if names:
        for i, n in enumerate(names):
            if n.lower() in BACKGROUND_NAMES:
                return i
        return None
    return 0 if type(model).__module__.startswith("torchvision.models.segmentation") else None


def default_layer(pr: Probe, num_classes: int, inferred: bool = False) -> str:
    """The last spatial feature map before the segmentation head (``backbone.layer4`` on torchvision's FCN and
    DeepLabV3, as grad-cam's segmentation tutorial uses), never the logits layer itself. ``inferred``: the
    task was taken from the per-pixel output (not given), so the error says what is known, not "segmentation"."""
    from visctl.errors import LayerError

    spatial = [(n, s) for n, s in pr.order if n and isinstance(s, tuple) and len(s) == 4 and min(s[2:]) > 1]
    backbone = [n for n, s in spatial if n.startswith("backbone.") and s[1] != num_classes]
    if backbone:
        return _stage(backbone[-1], spatial)
    for name, shape in reversed(spatial):
        if shape[1] != num_classes and not name.startswith(_HEAD_PREFIXES):
            return name
    out = pr.shape_of("")
    output = f" {tuple(out)}" if isinstance(out, tuple) else ""
    raise LayerError(f"cannot choose a default target layer: the model's output is per pixel{output} "
                     f"({num_classes} values at each position) and no layer before it gives another spatial map"
                     + (", so visctl took the model for segmentation" if inferred else ""),
                     hint="name one with target_layers= (visctl cam --preview-model lists them)"
                     + ("; give task= to say what the model does" if inferred else ""))


def _stage(name: str, spatial: list[tuple[str, Any]]) -> str:
    """``backbone.layer4.2.relu`` -> ``backbone.layer4`` when the stage gives the same output."""
    shapes = dict(spatial)
    parts = name.split(".")
    for k in range(2, len(parts) + 1):
        if shapes.get(".".join(parts[:k])) == shapes[name]:
            return ".".join(parts[:k])
    return name


def region_from_box(box: list[float], state: ImageState, hw: tuple[int, int]) -> np.ndarray:
    """A box (x0, y0, x1, y1) in original pixels -> a (H, W) float mask in the model input's pixels."""
    import numpy as np

    sx, sy = state.scale
    tx, ty = state.shift
    x0, x1 = sorted((box[0] * sx + tx, box[2] * sx + tx))
    y0, y1 = sorted((box[1] * sy + ty, box[3] * sy + ty))
    mask = np.zeros(hw, np.float32)
    mask[max(0, int(np.floor(y0))):max(0, int(np.ceil(y1))), max(0, int(np.floor(x0))):max(0, int(np.ceil(x1)))] = 1
    return mask


def read_region_mask(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A ``--target-mask`` file (image or .npy) as a (H, W) float32 array, 1 inside the region: nonzero pixels;
    an image with an alpha channel, nonzero alpha (:func:`visctl.images.read_mask`). Read once per run."""
    import numpy as np

    from visctl.images import read_mask

    if not path.is_file():
        raise InputError(f"mask file not found: {path}", hint="a .npy or an image, nonzero inside the region")
    return (read_mask(path, max_pixels) != 0).astype(np.float32)


def region_from_mask(m: np.ndarray, state: ImageState, hw: tuple[int, int]) -> np.ndarray:
    """A region mask at the original's size (:func:`read_region_mask`) -> the model input's pixels."""
    import cv2
    import numpy as np

    # the forward geometry of the pipeline: input pixel = original * scale + shift
    sx, sy = state.scale
    tx, ty = state.shift
    affine = np.array([[sx, 0, tx], [0, sy, ty]], dtype=np.float32)
    return np.asarray(cv2.warpAffine(m, affine, (hw[1], hw[0]), flags=cv2.INTER_NEAREST))


def outlines(image: np.ndarray, pred: np.ndarray, classes: list[int], colors: list[tuple[float, float, float]]
             ) -> np.ndarray:
    """The predicted mask's outline of each class in ``classes`` drawn on ``image`` (same size as ``pred``)."""
    import cv2
    import numpy as np

    out = np.ascontiguousarray(image.copy())
    t = max(1, round(max(image.shape[:2]) / 300))
    for c in classes:
        contours, _ = cv2.findContours((pred == c).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        color = tuple(int(v * 255) for v in colors[c % len(colors)])
        cv2.drawContours(out, contours, -1, color, t, cv2.LINE_AA)
    return out


def predicted_on_original(pred: np.ndarray, state: ImageState, orig_hw: tuple[int, int]) -> np.ndarray:
    """The predicted class map (input pixels) carried back onto the original image (nearest, -1 = unseen)."""
    import numpy as np

    from visctl.transforms import to_original

    onehot = [to_original((pred == c).astype(np.float32), state, orig_hw) for c in range(int(pred.max()) + 1)]
    stack = np.stack(onehot)
    out = np.nan_to_num(stack, nan=-1.0).argmax(0)
    out[np.isnan(stack).all(0)] = -1
    return out


def prediction_on_original(model: Any, logits: torch.Tensor, pred: np.ndarray, state: ImageState,
                           orig_hw: tuple[int, int]) -> np.ndarray:
    """The predicted class of each original pixel: for an mmseg segmentor, the argmax of its logits resized to
    the original as mmseg's ``postprocess_result`` does (:func:`logits_on_original`: its ``pred_sem_seg``),
    else (or after a crop or flip) ``pred`` carried back by :func:`predicted_on_original`."""
    if hasattr(model, "segmentor"):
        full = logits_on_original(logits, state, orig_hw, bool(getattr(model, "align_corners", False)))
        if full is not None:
            return full.argmax(0).cpu().numpy()
    return predicted_on_original(pred, state, orig_hw)


def predicts_masks(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether ``model`` returns per-pixel logits for ``example`` (one forward under no_grad)."""
    import torch

    with torch.no_grad():
        return is_segmentation_output(model(example))


def region_score(model: nn.Module) -> nn.Module:
    """The model as a classifier for faithfulness scores: the mean logit of each class over ``.region`` (set
    before each call), so a class's "probability" is the softmax of the mean logits over its region."""
    from torch import nn

    class RegionScore(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.region: Any = None

        def forward(self, x: Any) -> Any:
            import torch

            from visctl.layers import output_tensor

            out = output_tensor(self.inner(x))  # (N, C, H, W)
            region = torch.as_tensor(self.region, dtype=out.dtype, device=out.device)
            return (out * region).sum((2, 3)) / region.sum().clamp(min=1)

    return RegionScore(model)


# ---- mmsegmentation segmentors (EncoderDecoder and its kin) -----------------------------------------------


def is_mmseg_segmentor(model: Any) -> bool:
    """Whether ``model`` is an mmsegmentation segmentor (a subclass of ``mmseg``'s ``BaseSegmentor`` with an
    ``inference`` method), told from its classes' modules without importing mmseg."""
    return callable(getattr(model, "inference", None)) and any(
        c.__module__.startswith("mmseg.models.segmentors") for c in type(model).__mro__)


def mmseg_logits(model: Any, whole: bool = False) -> nn.Module:
    """An mmseg segmentor as a model that maps a normalised batch (N, 3, H, W) to its seg logits (N, C, H, W) at
    the input's size, computed as mmseg's ``predict`` computes them before its last resize to the original:
    the data_preprocessor's test-time padding (``test_cfg`` size / size_divisor, ``pad_val``), the segmentor's
    ``inference`` (whole or slide, per its ``test_cfg.mode``; the decode head resizes its logits with its own
    ``align_corners``), then the padding removed as ``postprocess_result`` removes it.

    The wrapper holds the segmentor's own submodules under their own names (``backbone.layer4`` stays
    ``backbone.layer4``), so layer paths, checkpoints and previews read as the config's model. ``whole``: one
    whole-image forward (``whole_inference``) whatever ``test_cfg.mode`` says (see :func:`cam_model`).
    """
    from torch import nn

    class SegLogits(nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            object.__setattr__(self, "segmentor", inner)  # not a child: its children are ours
            for name, child in inner.named_children():
                self.add_module(name, child)
            self.align_corners = bool(getattr(inner, "align_corners", False))
            self.training = inner.training

        def train(self, mode: bool = True) -> SegLogits:
            segmentor: Any = self.__dict__["segmentor"]
            segmentor.train(mode)
            return super().train(mode)

        def forward(self, x: Any) -> Any:
            import torch
            import torch.nn.functional as F

            h, w = int(x.shape[2]), int(x.shape[3])
            segmentor: Any = self.__dict__["segmentor"]
            pre = getattr(segmentor, "data_preprocessor", None)
            test_cfg = getattr(pre, "test_cfg", None) or {}
            size, divisor = test_cfg.get("size"), test_cfg.get("size_divisor")
            padding = [0, 0, 0, 0]  # (left, right, top, bottom), mmseg's stack_batch
            meta: dict[str, Any] = dict(ori_shape=(h, w), img_shape=(h, w))
            if size is not None or divisor is not None:
                if size is not None:
                    ph, pw = max(int(size[-2]) - h, 0), max(int(size[-1]) - w, 0)
                else:
                    d = int(divisor or 1)
                    ph, pw = (-h) % d if d > 1 else 0, (-w) % d if d > 1 else 0
                padding = [0, pw, 0, ph]
                x = F.pad(x, padding, value=float(getattr(pre, "pad_val", 0)))
                # what SegDataPreProcessor's test-time stack_batch adds to the samples' metainfo: the decode
                # head gives logits at pad_shape, postprocess_result cuts img_padding_size off again
                meta.update(pad_shape=torch.Size((h + padding[3], w + padding[1])), img_padding_size=padding)
            metas = [dict(meta) for _ in range(x.shape[0])]
            if whole:
                logits = segmentor.whole_inference(x, metas)
            else:
                logits = segmentor.inference(x, metas)
            hh, ww = logits.shape[2:]
            logits = logits[:, :, padding[2]:hh - padding[3], padding[0]:ww - padding[1]]
            if tuple(logits.shape[2:]) != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=self.align_corners)
            return logits

    return SegLogits(model)


def cam_model(model: Any) -> tuple[Any, str | None]:
    """The model the CAMs run on, and a note when it is not ``model`` itself: an mmseg segmentor whose
    ``test_cfg.mode`` is ``slide`` runs every layer once per window, and a CAM needs one activation per layer,
    so its maps come from one whole-image forward (its predictions stay the sliding window's)."""
    segmentor = getattr(model, "segmentor", None)
    test_cfg = getattr(segmentor, "test_cfg", None) or {}
    if segmentor is None or test_cfg.get("mode", "whole") != "slide" or not hasattr(segmentor, "whole_inference"):
        return model, None
    return mmseg_logits(segmentor, whole=True), (
        "the config's slide inference runs each layer once per window; the maps come from one whole-image "
        "forward (the predicted classes and regions from the sliding windows)")


def mmseg_default_layer(model: Any, example: torch.Tensor) -> tuple[str, str] | None:
    """The default target layer of an mmseg segmentor (wrapped by :func:`mmseg_logits`) and why: the module
    that gives the backbone's last feature map (``backbone.layer4`` of a ResNet, which equals mmseg's
    ``visualization_cam.py`` default ``backbone.layer4[2]``), else -- a backbone whose last map is no module's
    output, as MiT's token stages reshaped in its forward -- the module that gives the decode head's features
    before its classifier ``conv_seg`` (``decode_head.fusion_conv`` of SegFormer's head). None for others."""
    import torch
    from torch import nn

    from visctl.layers import trace

    if not hasattr(model, "segmentor") or not hasattr(model, "backbone"):
        return None
    seen: list[Any] = []
    conv_seg = getattr(getattr(model, "decode_head", None), "conv_seg", None)
    handle = conv_seg.register_forward_pre_hook(lambda _m, args: seen.append(args[0])) if conv_seg is not None else None
    try:
        fired, _ = trace(model, example)
    finally:
        if handle is not None:
            handle.remove()
    outputs = dict(fired)
    modules = dict(model.named_modules())

    def producer(tensor: Any, prefix: str) -> str | None:
        # the outermost module under prefix whose output is this very tensor (not a Dropout passing it on)
        names = [n for n, o in fired if o is tensor and n.startswith(prefix + ".")
                 and not isinstance(modules.get(n), nn.Dropout)]
        return min(names, key=lambda n: n.count(".")) if names else None

    last = outputs.get("backbone")
    if isinstance(last, (list, tuple)) and last:
        last = last[-1]
    if isinstance(last, torch.Tensor) and last.ndim == 4:
        name = producer(last, "backbone")
        if name:
            return name, "the backbone's last feature map"
    if seen and isinstance(seen[0], torch.Tensor) and seen[0].ndim == 4:
        name = producer(seen[0], "decode_head")
        if name:
            return name, "the decode head's features before its classifier conv_seg"
    return None


def logits_on_original(logits: torch.Tensor, state: ImageState, orig_hw: tuple[int, int],
                       align_corners: bool) -> torch.Tensor | None:
    """(C, h, w) logits at the model input's size resized onto the original as mmseg's ``postprocess_result``
    does (bilinear to ``ori_shape`` with the segmentor's ``align_corners``), when the pipeline only resized
    the image (and padded it at the bottom/right: cut off first); None for any other geometry (a crop, a
    flip), which :func:`visctl.transforms.to_original` carries back instead."""
    import torch.nn.functional as F

    if not state.geometry_known or tuple(state.shift) != (0, 0) or min(state.scale) <= 0:
        return None
    sx, sy = state.scale
    h0, w0 = orig_hw
    # the resized image's own pixels: the rest is padding (a Pad step, or size_divisor)
    hh, ww = round(h0 * sy), round(w0 * sx)
    if hh > logits.shape[1] or ww > logits.shape[2]:
        return None
    inner = logits[None, :, :hh, :ww]
    return F.interpolate(inner, size=(h0, w0), mode="bilinear", align_corners=align_corners)[0]
