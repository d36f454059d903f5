"""Image pipelines from config transform lists, tracking geometry so maps can go back to the original.

Each step records its name and parameters. Geometric steps compose an axis-aligned affine map from the
original image's continuous pixel coordinates to the current image's (``u' = s * u + t``, pixel edges
at integers), which :func:`to_original` inverts to carry a CAM or feature map back onto the original.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visctl.errors import ConfigError, pixels
from visctl.generators import frozen_key, generator_lock, randint

if TYPE_CHECKING:
    import numpy as np

# one transform: (state, the step's parameters without "type", rng) -> None, changing ``state`` in place
Transform = Callable[["ImageState", dict, Any], None]

# steps that only change the container (tensor packing, key selection): nothing to do on an RGB array
FORMAT_STEPS = {"LoadImageFromFile", "LoadImage", "PackInputs", "PackClsInputs", "PackSelfSupInputs",
                "PackDetInputs", "ToTensor", "ToImage", "ToImageTensor", "ToDtype", "ConvertImageDtype",
                "ImageToTensor", "Collect", "ToPILImage", "PILToTensor", "ToNumpy", "LoadAnnotations",
                "PackSegInputs", "LoadImageFromNDArray"}


@dataclass
class ImageState:
    """An image going through a pipeline: pixels, the affine from the original, and what was done."""

    img: Any  # (H, W, 3) RGB uint8
    scale: tuple[float, float] = (1.0, 1.0)  # (sx, sy)
    shift: tuple[float, float] = (0.0, 0.0)  # (tx, ty), in current pixels
    geometry_known: bool = True
    steps: list[str] = field(default_factory=list)
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # 0-255 mean/std from a Normalize
    mask: Any = None  # (h, w) bool patch mask from a masking step (SimMIM, BEiT), True = masked
    snapshots: list[tuple[str, Any]] | None = None  # (step label, image) after each step, when recording
    meta: Any = None  # what an OpenMMLab package's pipeline recorded (img_shape, scale_factor, pad_param, ...)
    max_pixels: int | None = None  # the pixel budget (--max-pixels) of every image a step makes; None: none

    def copy(self) -> ImageState:
        """An independent copy (for multi-view pipelines)."""
        import copy

        new = copy.copy(self)
        new.img = self.img.copy()
        new.steps = list(self.steps)
        new.snapshots = list(self.snapshots) if self.snapshots is not None else None
        return new

    def then(self, sx: float, sy: float, tx: float, ty: float) -> None:
        """Compose another affine step ``u'' = s * u' + t`` after the current one."""
        self.scale = (self.scale[0] * sx, self.scale[1] * sy)
        self.shift = (self.shift[0] * sx + tx, self.shift[1] * sy + ty)


class PipelineTooLarge(ConfigError):
    """A pipeline step would make an image over the pixel budget (``--max-pixels``); ``step`` is its index."""

    step: int | None = None


def check_budget(state: ImageState, w: int, h: int) -> None:
    """Refuse, before it is allocated, a ``w`` x ``h`` image over ``state``'s pixel budget: the budget that
    bounds every image visctl reads bounds every image its pipelines make from them (the model's input)."""
    budget = state.max_pixels
    if budget is not None and int(w) * int(h) > budget:
        raise PipelineTooLarge(f"it would make a {int(w)} x {int(h)} image ({pixels(int(w) * int(h))}), over "
                               f"the budget of {pixels(budget, 1)} (max_pixels=)",
                               hint="make the step's size smaller (its scale, size or scale_factor in the config's "
                               "test pipeline, e.g. with cfg_options=[...]), or raise max_pixels=")


def _wh(value: Any, order: str) -> tuple[int, int]:
    """An int or a pair as (w, h); ``order`` says how the pair is written ('wh' mmcv, 'hw' torchvision)."""
    if isinstance(value, (int, float)):
        return int(value), int(value)
    a, b = (int(v) for v in value)
    return (a, b) if order == "wh" else (b, a)


# mmcv.image.geometric: cv2_interp_codes and pillow_interp_codes (mmcv 2.2.0)
_CV2_INTERP = {"nearest": "INTER_NEAREST", "bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC",
               "area": "INTER_AREA", "lanczos": "INTER_LANCZOS4"}
_PIL_INTERP = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC", "box": "BOX",
               "lanczos": "LANCZOS", "hamming": "HAMMING"}


def _resize(state: ImageState, w: int, h: int, interpolation: str = "bilinear", backend: str = "cv2") -> None:
    """``mmcv.imresize(img, (w, h), interpolation=..., backend=...)``, and the affine it makes."""
    import numpy as np

    h0, w0 = state.img.shape[:2]
    if w < 1 or h < 1:
        raise ConfigError(f"resizing a {w0}x{h0} image to {w}x{h} (W x H): sizes must be at least 1",
                          hint="check the sizes (scale=, size=, scale_factor=) of the pipeline's resize steps")
    check_budget(state, w, h)
    backend = backend or "cv2"  # mmcv: None means the global imread backend, 'cv2' unless changed
    if backend == "pillow":
        from PIL import Image

        if interpolation not in _PIL_INTERP:
            raise ConfigError(f"interpolation={interpolation!r} with backend='pillow'",
                              hint=f"use one of {', '.join(_PIL_INTERP)}")
        resample = getattr(Image.Resampling, _PIL_INTERP[interpolation])
        state.img = np.array(Image.fromarray(np.ascontiguousarray(state.img)).resize((w, h), resample))
    elif backend == "cv2":
        import cv2

        if interpolation not in _CV2_INTERP:
            raise ConfigError(f"interpolation={interpolation!r} with backend='cv2'",
                              hint=f"use one of {', '.join(_CV2_INTERP)}")
        # mmcv calls cv2.resize even at the same size (a copy for every interpolation)
        state.img = cv2.resize(state.img, (w, h), interpolation=getattr(cv2, _CV2_INTERP[interpolation]))
    else:
        raise ConfigError(f"backend={backend!r} is not supported for resize", hint="use backend='cv2' or 'pillow'")
    state.then(w / w0, h / h0, 0.0, 0.0)


def _resize_args(step: dict, interpolation: str = "bilinear") -> tuple[str, str]:
    return str(step.get("interpolation", interpolation)), str(step.get("backend") or "cv2")


def _scale_size(w: int, h: int, sx: float, sy: float) -> tuple[int, int]:
    # mmcv.image.geometric._scale_size: int(w * scale + 0.5)
    return int(w * float(sx) + 0.5), int(h * float(sy) + 0.5)


def _rescale_size(w0: int, h0: int, scale: Any) -> tuple[int, int]:
    """``mmcv.rescale_size``: a number scales by that factor, a pair is the largest size that fits it."""
    if isinstance(scale, (int, float)):
        if scale <= 0:
            raise ConfigError(f"invalid scale {scale}, must be positive")
        factor = float(scale)
    else:
        factor = min(max(scale) / max(h0, w0), min(scale) / min(h0, w0))
    return _scale_size(w0, h0, factor, factor)


def _imcrop(state: ImageState, x1: Any, y1: Any, x2: Any, y2: Any) -> None:
    """``mmcv.imcrop(img, np.array([x1, y1, x2, y2]))`` without padding: int32 truncation, clipped to the
    image, both ends inclusive."""
    H, W = state.img.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in (x1, y1, x2, y2))  # .astype(np.int32) truncates toward zero
    x1, x2 = (max(0, min(v, W - 1)) for v in (x1, x2))
    y1, y2 = (max(0, min(v, H - 1)) for v in (y1, y2))
    state.img = state.img[y1:y2 + 1, x1:x2 + 1]
    state.then(1, 1, -x1, -y1)


def _crop(state: ImageState, x0: int, y0: int, w: int, h: int) -> None:
    import cv2

    if w < 1 or h < 1:
        raise ConfigError(f"cropping {w}x{h} (W x H) pixels: sizes must be at least 1",
                          hint="check the sizes (crop_size=, size=) of the pipeline's crop steps")
    H, W = state.img.shape[:2]
    if x0 < 0 or y0 < 0 or x0 + w > W or y0 + h > H:  # crop larger than the image: pad with zeros
        left, top = max(0, -x0), max(0, -y0)
        right, bottom = max(0, x0 + w - W), max(0, y0 + h - H)
        state.img = cv2.copyMakeBorder(state.img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
        state.then(1, 1, left, top)
        x0, y0 = x0 + left, y0 + top
    state.img = state.img[y0:y0 + h, x0:x0 + w]
    state.then(1, 1, -x0, -y0)


# mmcv.impad's padding modes (cv2 border types)
_PAD_MODES = {"constant": "BORDER_CONSTANT", "edge": "BORDER_REPLICATE", "reflect": "BORDER_REFLECT_101",
              "symmetric": "BORDER_REFLECT"}


def _bgr(pad_val: Any) -> Any:
    """An mmcv ``pad_val`` (a number, per-channel values or ``dict(img=...)``) for visctl's RGB image:
    OpenMMLab images are BGR, so per-channel values are given in B, G, R order."""
    pad_val = pad_val.get("img", 0) if isinstance(pad_val, dict) else pad_val
    return pad_val if isinstance(pad_val, (int, float)) else tuple(pad_val)[::-1]


def _impad(state: ImageState, left: int, top: int, right: int, bottom: int, fill: Any = 0,
           mode: str = "constant") -> None:
    """``mmcv.impad(img, padding=(left, top, right, bottom), pad_val=..., padding_mode=...)``; ``fill`` in
    the image's (RGB) channel order."""
    import cv2

    if mode not in _PAD_MODES:
        raise ConfigError(f"padding_mode={mode!r}", hint=f"use one of {', '.join(_PAD_MODES)}")
    value = (fill,) * 3 if isinstance(fill, (int, float)) else tuple(fill)
    h0, w0 = state.img.shape[:2]
    check_budget(state, w0 + int(left) + int(right), h0 + int(top) + int(bottom))
    state.img = cv2.copyMakeBorder(state.img, int(top), int(bottom), int(left), int(right),
                                   getattr(cv2, _PAD_MODES[mode]), value=value)
    state.then(1, 1, left, top)


def _padding4(padding: Any) -> tuple[int, int, int, int]:
    """mmcv/torchvision padding: an int for all sides, (left/right, top/bottom) or (left, top, right, bottom)."""
    p = [padding] * 4 if isinstance(padding, (int, float)) else list(padding)
    if len(p) == 2:
        p = p * 2
    if len(p) != 4:
        raise ConfigError(f"padding {padding!r}", hint="an int, (left/right, top/bottom) or (left, top, right, bottom)")
    left, top, right, bottom = (int(v) for v in p)
    return left, top, right, bottom


def _uniform(rng: Any, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _sample_crop(rng: Any, w: int, h: int, area_range: Any, ratio_range: Any,
                 max_attempts: int = 10) -> tuple[int, int, int, int]:
    """mmpretrain ``RandomResizedCrop.rand_crop_params`` (the same draws in the same order).

    ``max_attempts`` tries at a random area and log-uniform aspect ratio, then the largest central crop
    within the ratio range. Returns ``(x0, y0, w, h)``.
    """
    area = h * w
    for _ in range(int(max_attempts)):
        target_area = _uniform(rng, *area_range) * area
        log_ratio = (math.log(ratio_range[0]), math.log(ratio_range[1]))
        aspect_ratio = math.exp(_uniform(rng, *log_ratio))
        cw = int(round(math.sqrt(target_area * aspect_ratio)))
        ch = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            y0 = randint(rng, 0, h - ch + 1)
            x0 = randint(rng, 0, w - cw + 1)
            return x0, y0, cw, ch
    in_ratio = float(w) / float(h)
    if in_ratio < min(ratio_range):
        cw, ch = w, int(round(w / min(ratio_range)))
    elif in_ratio > max(ratio_range):
        cw, ch = int(round(h * max(ratio_range))), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def _mask(name: str, step: dict, rng: Any) -> Any:
    """A masked-image-modelling patch mask, True = masked, on the model's patch grid."""
    import numpy as np

    if name == "SimMIMMaskGenerator":
        size, mpatch = int(step.get("input_size", 192)), int(step.get("mask_patch_size", 32))
        model_patch, ratio = int(step.get("model_patch_size", 4)), float(step.get("mask_ratio", 0.6))
        side = size // mpatch
        count = side * side
        idx = rng.permutation(count)[: int(np.ceil(count * ratio))]
        coarse = np.zeros(count, bool)
        coarse[idx] = True
        scale = mpatch // model_patch
        return coarse.reshape(side, side).repeat(scale, 0).repeat(scale, 1)
    # BEiT block-wise masking: random rectangles until the requested number of patches is masked
    gh, gw = _wh(step.get("input_size", 14), "hw")
    want = int(step.get("num_masking_patches", 75))
    lo, hi = int(step.get("min_num_patches", 4)), step.get("max_num_patches") or want
    mask = np.zeros((gh, gw), bool)
    for _ in range(100):
        if mask.sum() >= want:
            break
        target = rng.uniform(lo, max(lo, min(hi, want - mask.sum())))
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        bh, bw = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < bh < gh and 0 < bw < gw:
            y, x = int(rng.integers(0, gh - bh + 1)), int(rng.integers(0, gw - bw + 1))
            mask[y:y + bh, x:x + bw] = True
    return mask


def step_label(step: dict) -> str:
    """``Name(arg=value, ...)`` for a transform dict, as shown in pipeline mode."""
    name = str(step["type"]).split(".")[-1]
    if name == "Compose" and isinstance(step.get("transforms"), (list, tuple)):  # the package's PIL round trip
        return f"Compose({', '.join(str(t.get('type', '')).split('.')[-1] for t in step['transforms'])})"
    args = ", ".join(f"{k}={v}" for k, v in step.items() if k != "type" and k != "transforms")
    return f"{name}({args})"


def run_views(img: np.ndarray, steps: list[dict], rng: Any = None, record: bool = False,
              state: ImageState | None = None, max_pixels: int | None = None) -> list[ImageState]:
    """Run ``img`` through ``steps``, following multi-view steps (MultiView) into one state per view.

    With ``record`` every state keeps a snapshot (label, image) after each step that changes the image.
    ``max_pixels``: no step may make an image larger (:class:`PipelineTooLarge`; OpenMMLab resizes and pads are
    refused before they allocate, any other step as soon as it has run).
    """
    states = [state or ImageState(img=img, snapshots=[("original", img)] if record else None,
                                  max_pixels=max_pixels)]
    for index, step in enumerate(steps):
        if "type" not in step:
            raise ConfigError(f"pipeline step without a type: {step}")
        name = str(step["type"]).split(".")[-1]
        if name == "MultiView":
            counts = step.get("num_views", 2)
            branches = step.get("transforms") or [[]]
            counts = [counts] * len(branches) if isinstance(counts, int) else list(counts)
            if len(counts) != len(branches):
                raise ConfigError(f"MultiView: num_views {counts} and {len(branches)} transform lists differ")
            new_states = []
            for st in states:
                for n, branch in zip(counts, branches):
                    for _ in range(int(n)):
                        view = st.copy()
                        new_states.extend(run_views(view.img, list(branch), rng, record, state=view))
            states = new_states
            for i, st in enumerate(states):
                if st.snapshots is not None:
                    st.snapshots.append((f"MultiView: view {i + 1}/{len(states)}", st.img))
            continue
        for st in states:
            try:
                apply_step(st, step, rng)
                check_budget(st, st.img.shape[1], st.img.shape[0])  # a step whose size is known only after it
            except PipelineTooLarge as err:
                wrapped = PipelineTooLarge(f"pipeline step {index + 1}, {step_label(step)}: {err.message}",
                                           hint=err.hint)
                wrapped.step = index
                raise wrapped from err
            except ConfigError as err:
                raise ConfigError(f"pipeline step {step_label(step)}: {err.message}", hint=err.hint) from err
            except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, RuntimeError) as exc:
                # the step's parameters come from the config: a missing key or a value of the wrong kind, or one
                # torch refuses (RandomErasing's scale=(2, 1)); a failed allocation is no parameter's fault
                from visctl.errors import out_of_memory

                if out_of_memory(exc) is not None:
                    raise
                raise ConfigError(f"pipeline step {step_label(step)}: {_reason(exc)}",
                                  hint="check this step's parameters against the transform's documentation"
                                  ) from exc
            if st.snapshots is not None and name not in FORMAT_STEPS:
                st.snapshots.append((step_label(step), st.img))
    return states


def _rng(rng: Any) -> Any:
    """``rng``, or a fixed generator so an unseeded random step still repeats."""
    import numpy as np

    return rng if rng is not None else np.random.default_rng(0)


def _format_step(state: ImageState, step: dict, rng: Any) -> None:
    """A container step (loading, packing, tensor conversion): nothing to do on an RGB array."""


def _resize_step(state: ImageState, step: dict, rng: Any) -> None:
    # mmcv.transforms.Resize: scale (w, h) or int, else scale_factor; keep_ratio -> mmcv.imrescale
    h0, w0 = state.img.shape[:2]
    scale = step.get("scale")
    if scale is not None:
        scale = (int(scale), int(scale)) if isinstance(scale, (int, float)) else tuple(int(v) for v in scale)
    elif step.get("scale_factor") is not None:
        f = step["scale_factor"]
        fx, fy = (f, f) if isinstance(f, (int, float)) else tuple(f)
        scale = _scale_size(w0, h0, fx, fy)
    else:
        raise ConfigError("Resize needs scale= or scale_factor= (OpenMMLab) or size= (torchvision)",
                          hint=str(step))
    w, h = _rescale_size(w0, h0, scale) if step.get("keep_ratio", False) else scale
    _resize(state, w, h, *_resize_args(step))


def _resize_edge_step(state: ImageState, step: dict, rng: Any) -> None:
    # mmpretrain ResizeEdge.transform: the other edge is int(scale * other / edge), truncated
    h0, w0 = state.img.shape[:2]
    edge, target = step.get("edge", "short"), int(step["scale"])
    if edge not in ("short", "long", "width", "height"):
        raise ConfigError(f"ResizeEdge edge={edge!r}", hint="edge is short, long, width or height")
    if (edge == "short" and w0 < h0) or (edge == "long" and w0 > h0) or edge == "width":
        w, h = target, int(target * h0 / w0)
    else:
        w, h = int(target * w0 / h0), target
    _resize(state, w, h, *_resize_args(step))


def _center_crop_step(state: ImageState, step: dict, rng: Any) -> None:
    # mmcv.transforms.CenterCrop: crop_size (w, h); larger than the image -> clipped, or padded
    # bottom/right first with auto_pad=True (pad_cfg's Pad)
    h0, w0 = state.img.shape[:2]
    cw, ch = _wh(step["crop_size"], "wh")
    if ch > h0 or cw > w0:
        if step.get("auto_pad", False):
            pad_cfg = dict(step.get("pad_cfg") or {"type": "Pad"})
            h0, w0 = max(h0, ch), max(w0, cw)
            apply_step(state, {**pad_cfg, "type": "Pad", "size": (w0, h0)}, rng)
            state.steps.pop()
        else:
            ch, cw = min(ch, h0), min(cw, w0)
    y1 = max(0, int(round((h0 - ch) / 2.0)))
    x1 = max(0, int(round((w0 - cw) / 2.0)))
    _imcrop(state, x1, y1, min(w0, x1 + cw) - 1, min(h0, y1 + ch) - 1)


def _efficientnet_center_crop_step(state: ImageState, step: dict, rng: Any) -> None:
    # mmpretrain EfficientNetCenterCrop: crop crop_size/(crop_size+crop_padding) of the short edge
    h0, w0 = state.img.shape[:2]
    size, padding = int(step["crop_size"]), int(step.get("crop_padding", 32))
    crop = size / (size + padding) * min(h0, w0)
    y1 = max(0, int(round((h0 - crop) / 2.0)))
    x1 = max(0, int(round((w0 - crop) / 2.0)))
    _imcrop(state, x1, y1, x1 + crop - 1, y1 + crop - 1)
    _resize(state, size, size, *_resize_args(step, "bicubic"))


def _pad_step(state: ImageState, step: dict, rng: Any) -> None:
    if "padding" in step:  # torchvision Pad(padding, fill, padding_mode)
        _impad(state, *_padding4(step["padding"]), step.get("fill", 0), step.get("padding_mode", "constant"))
        return
    # mmcv.transforms.Pad: size (w, h) | size_divisor | pad_to_square; pads bottom and right
    h0, w0 = state.img.shape[:2]
    th, tw = (max(h0, w0),) * 2 if step.get("pad_to_square", False) else (h0, w0)
    if step.get("size_divisor") is not None:
        d = int(step["size_divisor"])
        th, tw = int(math.ceil(th / d)) * d, int(math.ceil(tw / d)) * d
    elif step.get("size") is not None:
        tw, th = _wh(step["size"], "wh")
    _impad(state, 0, 0, max(tw - w0, 0), max(th - h0, 0), _bgr(step.get("pad_val", 0)),
           step.get("padding_mode", "constant"))


def _flipped(img: np.ndarray, axis: int) -> np.ndarray:
    """A flipped copy of ``img`` (``axis`` 1: left-right, 0: upside down), the bytes of ``np.flip(img, axis)``.

    OpenCV's flip, where it takes the array as it is (uint8 pixels next to each other): numpy's copy of a
    reversed row of 3-byte pixels goes byte by byte, 0.46 ms for 224 x 224 RGB against cv2.flip's 0.02 ms.
    """
    import cv2
    import numpy as np

    channels = img.shape[2] if img.ndim == 3 else 1
    # rows of packed pixels (a crop's view is one too); cv2 would return (H, W, 1) as (H, W)
    packed = (img.dtype == np.uint8 and img.size > 0 and (img.ndim == 2 or (img.ndim == 3 and 2 <= channels <= 4
              and img.strides[2] == 1)) and img.strides[1] == channels and img.strides[0] >= channels * img.shape[1])
    return cv2.flip(img, axis) if packed else np.flip(img, axis).copy()


def _flip(state: ImageState, chosen: str | None) -> None:
    h0, w0 = state.img.shape[:2]
    if chosen not in (None, "horizontal", "vertical", "diagonal"):
        raise ConfigError(f"RandomFlip direction={chosen!r}", hint="horizontal, vertical or diagonal")
    if chosen in ("horizontal", "diagonal"):
        state.img = _flipped(state.img, 1)
        state.then(-1, 1, w0, 0)
    if chosen in ("vertical", "diagonal"):
        state.img = _flipped(state.img, 0)
        state.then(1, -1, 0, h0)


def _random_flip_step(state: ImageState, step: dict, rng: Any) -> None:
    # mmcv RandomFlip._choose_direction: one draw over the directions and "no flip"
    prob = step.get("prob", 0.5)
    direction = step.get("direction", "horizontal")
    directions = [direction] if isinstance(direction, str) else list(direction)
    if isinstance(prob, (list, tuple)):
        probs = [float(p) for p in prob] + [1.0 - sum(float(p) for p in prob)]
    else:
        probs = [float(prob) / len(directions)] * len(directions) + [1.0 - float(prob)]
    if len(probs) != len(directions) + 1:
        raise ConfigError(f"RandomFlip: {len(probs) - 1} probabilities for {len(directions)} directions")
    pick = int(_rng(rng).choice(len(probs), p=probs))
    _flip(state, directions[pick] if pick < len(directions) else None)


def _torchvision_flip(direction: str) -> Transform:
    def flip(state: ImageState, step: dict, rng: Any) -> None:
        # torchvision RandomHorizontalFlip / RandomVerticalFlip: flip when a uniform draw is below p
        hit = _uniform(_rng(rng), 0.0, 1.0) < float(step.get("p", 0.5))
        _flip(state, direction if hit else None)

    return flip


def _random_resized_crop_step(state: ImageState, step: dict, rng: Any) -> None:
    if "size" in step and ("backend" in step or "max_attempts" in step):
        # mmselfsup 1.x's own RandomResizedCrop(size, scale, ratio, max_attempts, interpolation, backend): the
        # torchvision names with mmcv's backends; its draws are mmpretrain's, so it runs as that one
        size, area = step.pop("size"), step.pop("scale", (0.08, 1.0))
        step["scale"] = (size, size) if isinstance(size, (int, float)) else tuple(size)
        step["crop_ratio_range"] = tuple(area)
        if "ratio" in step:
            step["aspect_ratio_range"] = tuple(step.pop("ratio"))
    if "size" in step:
        _torchvision_step(state, "RandomResizedCrop", step, rng, geometry=True)
        return
    # mmpretrain RandomResizedCrop: scale is the output (h, w) or an int
    h0, w0 = state.img.shape[:2]
    h, w = (int(step["scale"]),) * 2 if isinstance(step["scale"], (int, float)) else tuple(step["scale"])
    area_range = step.get("crop_ratio_range", (0.08, 1.0))
    ratio_range = step.get("aspect_ratio_range", (3 / 4, 4 / 3))
    if area_range[0] > area_range[1] or ratio_range[0] > ratio_range[1]:
        raise ConfigError(f"RandomResizedCrop: ranges must be (min, max), got crop_ratio_range={area_range} "
                          f"and aspect_ratio_range={ratio_range}")
    x0, y0, cw, ch = _sample_crop(_rng(rng), w0, h0, area_range, ratio_range, int(step.get("max_attempts", 10)))
    _imcrop(state, x0, y0, x0 + cw - 1, y0 + ch - 1)
    _resize(state, int(w), int(h), *_resize_args(step))


def _random_crop_step(state: ImageState, step: dict, rng: Any) -> None:
    # mmpretrain RandomCrop: crop_size (h, w) or int; padding (constant pad_val), pad_if_needed
    rng = _rng(rng)
    size = step["crop_size"]
    th, tw = (int(size),) * 2 if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
    fill = _bgr(step.get("pad_val", 0))
    if step.get("padding") is not None:
        _impad(state, *_padding4(step["padding"]), fill, "constant")
    if step.get("pad_if_needed", False):
        H, W = state.img.shape[:2]
        hp, wp = math.ceil(max(0, th - H) / 2), math.ceil(max(0, tw - W) / 2)
        _impad(state, wp, hp, wp, hp, fill, step.get("padding_mode", "constant"))
    H, W = state.img.shape[:2]
    if (W, H) == (tw, th):
        return
    th, tw = min(th, H), min(tw, W)
    y0 = randint(rng, 0, H - th + 1)
    x0 = randint(rng, 0, W - tw + 1)
    _imcrop(state, x0, y0, x0 + tw - 1, y0 + th - 1)


def _mask_step(name: str) -> Transform:
    def mask(state: ImageState, step: dict, rng: Any) -> None:
        state.mask = _mask(name, step, _rng(rng))

    return mask


def _normalize_step(state: ImageState, step: dict, rng: Any) -> None:
    mean, std = step.get("mean"), step.get("std")
    if mean is not None and std is not None:
        from visctl.config import check_mean_std

        mean, std = check_mean_std(mean, std, "Normalize")
        # torchvision's Normalize works on 0-1 tensors; mmcv's on 0-255
        scale = 255.0 if max(mean) <= 1.0 else 1.0
        state.normalize = (tuple(m * scale for m in mean), tuple(s * scale for s in std))


def _package_step(state: ImageState, step: dict, rng: Any) -> None:
    # an OpenMMLab package's own pipeline (visctl.mmdet_adapter.PackagePipeline): it sets the image, the affine
    # from what its transforms recorded, and state.meta
    step["pipeline"](state)


def _or_torchvision(name: str, openmmlab: Transform) -> Transform:
    """``openmmlab``, unless the step uses torchvision's ``size=`` (then torchvision's transform of that name)."""
    def step_fn(state: ImageState, step: dict, rng: Any) -> None:
        if "size" in step:  # torchvision's own names and arguments: Resize(size), CenterCrop(size), ...
            _torchvision_step(state, name, step, rng, geometry=True)
        else:
            openmmlab(state, step, rng)

    step_fn.__name__ = openmmlab.__name__
    return step_fn


# name -> transform; OpenMMLab names follow mmcv 2.x / mmpretrain 1.x exactly (sizes, rounding,
# ``interpolation``, ``backend``, random draws); their keyword arguments tell them from torchvision's names of
# the same transform (``Resize(size=...)``, ``CenterCrop(size=...)``, ``Pad(padding=...)``). Any other name
# runs torchvision.transforms.v2's class of that name.
TRANSFORMS: dict[str, Transform] = {
    **dict.fromkeys(sorted(FORMAT_STEPS), _format_step),
    "Resize": _or_torchvision("Resize", _resize_step),
    "ResizeEdge": _resize_edge_step,
    "CenterCrop": _or_torchvision("CenterCrop", _center_crop_step),
    "EfficientNetCenterCrop": _efficientnet_center_crop_step,
    "Pad": _pad_step,
    "RandomFlip": _random_flip_step,
    "RandomHorizontalFlip": _torchvision_flip("horizontal"),
    "RandomVerticalFlip": _torchvision_flip("vertical"),
    "RandomResizedCrop": _random_resized_crop_step,
    "RandomCrop": _or_torchvision("RandomCrop", _random_crop_step),
    "SimMIMMaskGenerator": _mask_step("SimMIMMaskGenerator"),
    "BEiTMaskGenerator": _mask_step("BEiTMaskGenerator"),
    "Normalize": _normalize_step,
    "OpenMMLabPipeline": _package_step,
}


def apply_step(state: ImageState, step: dict, rng: Any = None) -> None:
    """Apply one transform dict to ``state`` in place: :data:`TRANSFORMS`' function for its name.

    A name not in the table runs torchvision.transforms.v2's class of that name; an unknown name is a
    ``ConfigError``. A ``scope.Name`` whose scope is an installed OpenMMLab package runs that package's transform
    through its registry (:mod:`visctl.package_transforms`) where visctl has no such name, or the scope is not
    mmcv's or mmpretrain's (``mmdet.RandomCrop``); :func:`qualify` writes a config's
    unqualified names so. ``rng``: a ``numpy.random.Generator``, or a ``RandomState`` to draw exactly as
    mmpretrain's global ``np.random`` does.
    """
    step = dict(step)
    scope, _, name = str(step.pop("type")).rpartition(".")
    state.steps.append(name)
    fn = TRANSFORMS.get(name)
    if scope and (fn is None or scope not in ("mmcv", "mmpretrain", "mmcls", "mmselfsup", "mmengine")):
        from visctl import package_transforms  # `mmpretrain.RandAugment`: the installed package's own

        if package_transforms.runs_in_package(scope, name, own=fn is not None):
            package_transforms.apply(state, scope, name, step, rng)
            return
        if fn is None and scope != "torchvision":  # never torchvision's class of the same name in its place
            raise package_transforms.not_found(scope, name)
    if fn is None:
        _torchvision_step(state, name, step, rng)
    else:
        fn(state, step, rng)


def _torchvision_step(state: ImageState, name: str, kwargs: dict, rng: Any = None, geometry: bool = False) -> None:
    """Run torchvision.transforms.v2's ``name`` on the image.

    ``geometry``: the step is a resize or a centred/offset crop whose affine is read off torchvision's
    own parameters (Resize, CenterCrop); other size-changing steps become an approximate stretch.
    """
    import torch
    from torchvision.transforms import v2

    cls = getattr(v2, name, None)
    # a transform class of v2, nothing else it holds (not its abstract base Transform, which only raises)
    if not (isinstance(cls, type) and issubclass(cls, v2.Transform) and cls is not v2.Transform):
        raise ConfigError(f"unknown transform {name!r}",
                          hint="use a torchvision.transforms.v2 name or one of the OpenMMLab names "
                          "LoadImageFromFile, Resize, ResizeEdge, CenterCrop, RandomResizedCrop, RandomCrop, "
                          "EfficientNetCenterCrop, Pad, RandomFlip, PackInputs")
    transform = _torchvision_transform(cls, name, kwargs)
    if rng is None:
        _torchvision_apply(state, name, transform, geometry)
        return
    # torchvision draws from torch's global CPU generator: seed it from ours so --seed repeats, and put its state
    # back after, so the caller's torch random state is the same after the step as before it (what
    # torch.random.fork_rng(devices=[]) does, without its Python overhead). Only the CPU generator: the draws are
    # the same as torch.manual_seed's, without its queued seeding of every CUDA/XPU/MTIA generator (which a fork
    # would not undo, and which formats a stack trace each: ~2 ms per image)
    # one thread at a time: the generator is global (a reader thread's seeded step must not draw another's)
    with generator_lock():
        generator = torch.default_generator
        saved = generator.get_state()
        try:
            generator.manual_seed(randint(rng, 0, 2**31))
            _torchvision_apply(state, name, transform, geometry)
        finally:
            generator.set_state(saved)


#: torchvision v2 transforms built, by class and arguments (see :func:`_torchvision_transform`)
_BUILT: dict[Any, Any] = {}


def _torchvision_transform(cls: type, name: str, kwargs: dict) -> Any:
    """``cls(**kwargs)``, built once per class and arguments (a pipeline's step is the same for every sample).

    A v2 transform keeps only its arguments: each call draws its parameters anew (``make_params``) from torch's
    generator and changes nothing on the object, so one object gives the draws and pixels of a new one per
    sample, in any thread. Building one per sample cost up to 0.08 ms (RandomResizedCrop).
    """
    try:
        key: Any = (cls, frozen_key(kwargs))
    except TypeError:  # an argument that cannot be a key: built each time
        key = None
    transform = _BUILT.get(key) if key is not None else None
    if transform is None:
        try:
            transform = cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"cannot build transform {name}({kwargs}): {exc}") from exc
        if key is not None:
            if len(_BUILT) >= 256:  # configs have a few such steps; a long-lived process does not grow
                _BUILT.clear()
            _BUILT[key] = transform
    return transform


def _torchvision_apply(state: ImageState, name: str, transform: Any, geometry: bool) -> None:
    import numpy as np
    import torch
    from torchvision.transforms import v2

    h0, w0 = state.img.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(state.img)).permute(2, 0, 1)
    if name in ("RandomCrop", "RandomResizedCrop") and geometry:
        # draw torchvision's own parameters, then apply them here so the offset is known
        if name == "RandomResizedCrop":
            params = transform.make_params([x])
            top, left, ch, cw = params["top"], params["left"], params["height"], params["width"]
            crop, t, s = x, top, left
            if 0 <= top and 0 <= left and top + ch <= h0 and left + cw <= w0:  # always, from make_params
                # resized_crop crops by slicing (crop_image), then resizes: the crop copied into one block here
                # gives the same pixels, and its resize reads and writes channels-last (HWC) memory, no repacking
                # of the output to CHW and back (0.33 ms against 0.90 ms for a 224 px crop)
                crop = torch.from_numpy(np.ascontiguousarray(state.img[top:top + ch, left:left + cw])).permute(2, 0, 1)
                t, s = 0, 0
            out = v2.functional.resized_crop(crop, t, s, ch, cw, transform.size,
                                             interpolation=transform.interpolation, antialias=transform.antialias)
            state.then(1, 1, -left, -top)
            state.then(out.shape[2] / cw, out.shape[1] / ch, 0, 0)
            state.img = np.ascontiguousarray(out.permute(1, 2, 0).numpy())
            return
        geometry = False  # RandomCrop: padding + offset are not exposed; approximate
    out = transform(x)
    arr = out.permute(1, 2, 0).numpy()
    if arr.dtype != np.uint8:
        arr = (arr.clip(0, 1) * 255).round().astype(np.uint8) if arr.dtype.kind == "f" else arr.astype(np.uint8)
    h1, w1 = arr.shape[:2]
    if name == "CenterCrop" and geometry:
        # torchvision center_crop: pad (crop - size) // 2 before, the rest after; crop at round((size - crop) / 2)
        pl, pt = max(0, (w1 - w0) // 2), max(0, (h1 - h0) // 2)
        pw, ph = max(w0, w1), max(h0, h1)
        state.then(1, 1, pl - int(round((pw - w1) / 2.0)), pt - int(round((ph - h1) / 2.0)))
    elif (h1, w1) != (h0, w0):
        # a resize is an exact stretch; an unknown geometric step is taken as one so maps still cover the image
        state.geometry_known = state.geometry_known and geometry and name == "Resize"
        state.then(w1 / w0, h1 / h0, 0, 0)
    state.img = np.ascontiguousarray(arr)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError):
        return f"missing parameter {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_pipeline(img: np.ndarray, steps: list[dict], rng: Any = None, max_pixels: int | None = None) -> ImageState:
    """Run ``img`` (RGB uint8) through ``steps``; return the final state (``max_pixels``: see :func:`run_views`)."""
    states = run_views(img, steps, rng, max_pixels=max_pixels)
    if len(states) != 1:
        raise ConfigError(f"this pipeline makes {len(states)} views of an image; a model command needs one",
                          hint="use the test pipeline (no MultiView) for model commands")
    return states[0]


def to_original(fmap: np.ndarray, state: ImageState, orig_hw: tuple[int, int]) -> np.ndarray:
    """Carry a map at the pipeline output's resolution back onto the original image.

    ``fmap`` may have any (h, w): it is taken to cover the pipeline output exactly. Pixels of the original
    that the pipeline cropped away are NaN: the model never saw them (0 would read as a value, and as the
    hottest one when every value is negative).
    """
    import cv2
    import numpy as np

    out_h, out_w = state.img.shape[:2]
    fh, fw = fmap.shape[:2]
    # original pixel centre (x + 0.5) -> output coordinate -> map index
    sx, sy = state.scale
    tx, ty = state.shift
    kx, ky = fw / out_w, fh / out_h
    m = np.array([[sx * kx, 0, (0.5 * sx + tx) * kx - 0.5],
                  [0, sy * ky, (0.5 * sy + ty) * ky - 0.5]], dtype=np.float64)
    size = (orig_hw[1], orig_hw[0])
    # replicate at the map's edges so the last row/column is not blended with zeros ...
    out = cv2.warpAffine(fmap.astype(np.float32), m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    # ... and mark "no data" where the pipeline cropped away (or padded in)
    inside = cv2.warpAffine(np.ones((fh, fw), np.uint8), m, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out[inside == 0] = np.nan
    return out


def to_tensor(states: list[ImageState], mean: tuple[float, ...], std: tuple[float, ...], rgb: bool,
              channels_last: bool = False) -> Any:
    """Stack same-size pipeline outputs into a normalised float batch (B, 3, H, W); ``channels_last``: in
    that memory format (the (B, H, W, 3) array as it is, no copy to NCHW and back)."""
    import numpy as np
    import torch

    arr = np.stack([s.img for s in states]).astype(np.float32)  # (B, H, W, 3) 0-255 RGB
    if not rgb:
        arr = arr[..., ::-1]
    norm = states[0].normalize or (mean, std)
    scaled = (arr - np.asarray(norm[0], np.float32)) / np.asarray(norm[1], np.float32)
    if channels_last:
        return torch.from_numpy(np.ascontiguousarray(scaled)).permute(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(0, 3, 1, 2)))


def default_pipeline(input_size: Any) -> list[dict]:
    """The pipeline used when a config has none: stretch to the model's input size (maps are carried back)."""
    w, h = _wh(input_size, "wh")
    return [dict(type="Resize", scale=(w, h), keep_ratio=False)]


def prepared_batches(paths: list[Any], steps: list[dict], batch_size: int,
                     max_pixels: int | None = None, workers: int = 0,
                     stack: Callable[[list], Any] | None = None) -> Iterator[tuple[list, list]]:
    """Read and transform images ``batch_size`` at a time; an image over ``max_pixels`` is a failure.

    ``workers`` > 0: the next batch is read (decoded and run through ``steps``) in that many threads while
    the caller works on this one -- OpenCV's decoders and resizes release the GIL, so reading overlaps the
    model -- and at most two batches are in memory. The images and failures come in the order of ``paths``
    whatever the number of workers; 0 reads in the calling thread. ``stack``: a function of a group (e.g.
    :func:`to_tensor` of its states), called in the readers' threads too when there are some.

    Yields:
        ``(groups, failures)``: groups of ``(path, original RGB, ImageState)`` whose pipeline outputs share
        one size (so each group stacks into one batch) -- with ``stack``, ``(group, stack(group))`` pairs --
        and ``(path, message)`` for unreadable inputs.
    """
    from visctl.errors import VisctlError
    from visctl.images import read_image

    def load(p: Any) -> tuple[Any, Any, str | None]:
        try:
            img = read_image(p, max_pixels)
            return img, run_pipeline(img, steps, max_pixels=max_pixels), None
        except VisctlError as err:
            return None, None, err.message

    def assemble(chunk: list[Any], loaded: Iterator[tuple[Any, Any, str | None]]) -> tuple[list, list]:
        groups: dict[tuple, list] = {}
        failures = []
        for p, (img, state, message) in zip(chunk, loaded):
            if message is not None:
                failures.append((p, message))
                continue
            groups.setdefault(state.img.shape, []).append((p, img, state))
        if stack is not None:
            return [(g, stack(g)) for g in groups.values()], failures
        return list(groups.values()), failures

    chunks = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    if workers <= 0:
        for chunk in chunks:
            yield assemble(chunk, (load(p) for p in chunk))
        return
    if not chunks:
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="visctl-read")
    try:
        def read(chunk: list[Any]) -> Any:
            loads = [pool.submit(load, p) for p in chunk]
            # grouped (and stacked) in a reader too, after the loads it waits for (queued first: no deadlock)
            return pool.submit(lambda: assemble(chunk, (f.result() for f in loads)))

        ahead = read(chunks[0])
        for k in range(len(chunks)):
            current = ahead
            if k + 1 < len(chunks):  # the next batch is read while the caller works on this one
                ahead = read(chunks[k + 1])
            yield current.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a stopped run leaves no reader behind


def qualify(steps: list[dict], scope: str | None) -> list[dict]:
    """``steps`` with each name visctl does not implement (:data:`TRANSFORMS`) written ``scope.Name`` where the
    ``default_scope`` package's registry holds it (:func:`visctl.package_transforms.qualify`)."""
    from visctl import package_transforms

    return package_transforms.qualify(steps, scope, own=TRANSFORMS)
