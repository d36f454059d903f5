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

    from visctl.models import output_tensor

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


def default_layer(pr: Probe, num_classes: int) -> str:
    """The last spatial feature map before the segmentation head (``backbone.layer4`` on torchvision's FCN and
    DeepLabV3, as grad-cam's segmentation tutorial uses), never the logits layer itself."""
    from visctl.errors import LayerError

    spatial = [(n, s) for n, s in pr.order if n and isinstance(s, tuple) and len(s) == 4 and min(s[2:]) > 1]
    backbone = [n for n, s in spatial if n.startswith("backbone.") and s[1] != num_classes]
    if backbone:
        return _stage(backbone[-1], spatial)
    for name, shape in reversed(spatial):
        if shape[1] != num_classes and not name.startswith(_HEAD_PREFIXES):
            return name
    raise LayerError("cannot choose a default target layer of this segmentation model",
                     hint="name one with --target-layers (--preview-model lists them)")


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


def region_from_file(path: Path, state: ImageState, orig_hw: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
    """A mask file (image or .npy, nonzero = region) at the original's size -> the model input's pixels."""
    import cv2
    import numpy as np

    if not path.is_file():
        raise InputError(f"mask file not found: {path}", hint="a .npy or an image, nonzero inside the region")
    if path.suffix.lower() == ".npy":
        m = np.load(path, allow_pickle=False)
    else:
        m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise InputError(f"cannot read mask {path}", hint="a .npy or an image file")
    m = (np.asarray(m) != 0).astype(np.float32)
    if m.ndim != 2 or m.shape != tuple(orig_hw):
        raise InputError(f"mask {path} is {m.shape}, the image is {tuple(orig_hw)}",
                         hint="give a mask of the original image's size")
    # the forward geometry of the pipeline: input pixel = original * scale + shift
    sx, sy = state.scale
    tx, ty = state.shift
    affine = np.float32([[sx, 0, tx], [0, sy, ty]])
    return cv2.warpAffine(m, affine, (hw[1], hw[0]), flags=cv2.INTER_NEAREST)


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

            from visctl.models import output_tensor

            out = output_tensor(self.inner(x))  # (N, C, H, W)
            region = torch.as_tensor(self.region, dtype=out.dtype, device=out.device)
            return (out * region).sum((2, 3)) / region.sum().clamp(min=1)

    return RegionScore(model)
