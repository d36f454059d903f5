"""Image pipelines from config transform lists, tracking geometry so maps can go back to the original.

Each step records its name and parameters. Geometric steps compose an axis-aligned affine map from the
original image's continuous pixel coordinates to the current image's (``u' = s * u + t``, pixel edges
at integers), which :func:`to_original` inverts to carry a CAM or feature map back onto the original.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from visctl.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

# steps that only change the container (tensor packing, key selection): nothing to do on an RGB array
FORMAT_STEPS = {"LoadImageFromFile", "LoadImage", "PackInputs", "PackClsInputs", "PackSelfSupInputs",
                "PackDetInputs", "ToTensor", "ToImage", "ToImageTensor", "ToDtype", "ConvertImageDtype",
                "ImageToTensor", "Collect", "ToPILImage", "PILToTensor", "ToNumpy", "LoadAnnotations"}


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


def _wh(value: Any, order: str) -> tuple[int, int]:
    """An int or a pair as (w, h); ``order`` says how the pair is written ('wh' mmcv, 'hw' torchvision)."""
    if isinstance(value, (int, float)):
        return int(value), int(value)
    a, b = (int(v) for v in value)
    return (a, b) if order == "wh" else (b, a)


def _resize(state: ImageState, w: int, h: int) -> None:
    import cv2

    h0, w0 = state.img.shape[:2]
    if w < 1 or h < 1:
        raise ConfigError(f"resizing a {w0}x{h0} image to {w}x{h} (W x H): sizes must be at least 1",
                          hint="check the sizes (scale=, size=, scale_factor=) of the pipeline's resize steps")
    if (w, h) == (w0, h0):
        return
    interp = cv2.INTER_AREA if w < w0 and h < h0 else cv2.INTER_LINEAR
    state.img = cv2.resize(state.img, (w, h), interpolation=interp)
    state.then(w / w0, h / h0, 0.0, 0.0)


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


def _keep_ratio_size(w0: int, h0: int, w: int, h: int) -> tuple[int, int]:
    # mmcv rescale: the largest size that fits the long and short edges of the target scale
    long_edge, short_edge = max(w, h), min(w, h)
    factor = min(long_edge / max(w0, h0), short_edge / min(w0, h0))
    return int(w0 * factor + 0.5), int(h0 * factor + 0.5)


def _pad_step(state: ImageState, padding: Any, fill: Any) -> None:
    import cv2

    p = [padding] * 4 if isinstance(padding, int) else list(padding)
    left, top, right, bottom = (p * 2 if len(p) == 2 else p)  # torchvision order: left, top, right, bottom
    fill = fill.get("img", 0) if isinstance(fill, dict) else fill
    state.img = cv2.copyMakeBorder(state.img, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                   value=(fill,) * 3 if isinstance(fill, (int, float)) else tuple(fill))
    state.then(1, 1, left, top)


def _sample_crop(rng: Any, w: int, h: int, area_range: Any, ratio_range: Any) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop sampling: ten tries at a random area and log-uniform aspect ratio,
    then the largest central crop within the ratio range."""
    area = w * h
    log_r = (math.log(ratio_range[0]), math.log(ratio_range[1]))
    for _ in range(10):
        target = area * rng.uniform(*area_range)
        ratio = math.exp(rng.uniform(*log_r))
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    in_ratio = w / h
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
    args = ", ".join(f"{k}={v}" for k, v in step.items() if k != "type" and k != "transforms")
    return f"{str(step['type']).split('.')[-1]}({args})"


def run_views(img: np.ndarray, steps: list[dict], rng: Any = None, record: bool = False,
              state: ImageState | None = None) -> list[ImageState]:
    """Run ``img`` through ``steps``, following multi-view steps (MultiView) into one state per view.

    With ``record`` every state keeps a snapshot (label, image) after each step that changes the image.
    """
    states = [state or ImageState(img=img, snapshots=[("original", img)] if record else None)]
    for step in steps:
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
            except ConfigError as err:
                raise ConfigError(f"pipeline step {step_label(step)}: {err.message}", hint=err.hint) from err
            except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
                # the step's parameters come from the config: a missing key or a value of the wrong kind
                raise ConfigError(f"pipeline step {step_label(step)}: {_reason(exc)}",
                                  hint="check this step's parameters against the transform's documentation"
                                  ) from exc
            if st.snapshots is not None and name not in FORMAT_STEPS:
                st.snapshots.append((step_label(step), st.img))
    return states


def apply_step(state: ImageState, step: dict, rng: Any = None) -> None:
    """Apply one transform dict to ``state`` in place."""
    step = dict(step)
    name = str(step.pop("type")).split(".")[-1]
    state.steps.append(name)
    h0, w0 = state.img.shape[:2]
    if name in FORMAT_STEPS:
        return
    if name == "Resize":
        if "size" in step:  # torchvision: int = shorter edge, [h, w] = exact
            size = step["size"]
            if isinstance(size, (list, tuple)) and len(size) == 2:
                _resize(state, int(size[1]), int(size[0]))
            else:
                s = int(size[0] if isinstance(size, (list, tuple)) else size)
                f = s / min(w0, h0)
                w, h = round(w0 * f), round(h0 * f)
                max_size = step.get("max_size")
                if max_size and max(w, h) > max_size:
                    f = max_size / max(w0, h0)
                    w, h = round(w0 * f), round(h0 * f)
                _resize(state, w, h)
        elif "scale" in step:
            w, h = _wh(step["scale"], "wh")
            if step.get("keep_ratio", False):
                w, h = _keep_ratio_size(w0, h0, w, h)
            _resize(state, w, h)
        elif "scale_factor" in step:
            fx, fy = _wh(step["scale_factor"], "wh") if not isinstance(step["scale_factor"], float) else (
                step["scale_factor"], step["scale_factor"])
            _resize(state, round(w0 * fx), round(h0 * fy))
        else:
            raise ConfigError("Resize needs scale= (OpenMMLab) or size= (torchvision)", hint=str(step))
    elif name == "ResizeEdge":
        edge = step.get("edge", "short")
        target = int(step["scale"])
        ref = {"short": min(w0, h0), "long": max(w0, h0), "width": w0, "height": h0}.get(edge)
        if ref is None:
            raise ConfigError(f"ResizeEdge edge={edge!r}", hint="edge is short, long, width or height")
        f = target / ref
        _resize(state, int(w0 * f + 0.5), int(h0 * f + 0.5))
    elif name == "CenterCrop":
        w, h = _wh(step["crop_size"], "wh") if "crop_size" in step else _wh(step["size"], "hw")
        x0, y0 = int(round((w0 - w) / 2.0)), int(round((h0 - h) / 2.0))
        _crop(state, x0, y0, w, h)
    elif name == "Pad":
        if "padding" in step:
            _pad_step(state, step["padding"], step.get("pad_val", step.get("fill", 0)))
        else:
            if "size" in step:
                tw, th = _wh(step["size"], "wh")
            else:
                d = int(step.get("size_divisor", 1))
                tw, th = -(-w0 // d) * d, -(-h0 // d) * d
            _pad_step(state, [0, 0, max(0, tw - w0), max(0, th - h0)], step.get("pad_val", step.get("fill", 0)))
    elif name in ("RandomFlip", "RandomHorizontalFlip"):
        import numpy as np

        prob = step.get("prob", step.get("p", 0.5))
        prob = prob if isinstance(prob, (int, float)) else 0.5
        direction = step.get("direction", "horizontal")
        rng = rng or np.random.default_rng(0)
        if prob and rng.random() < prob:
            if direction == "vertical":
                state.img = state.img[::-1].copy()
                state.then(1, -1, 0, h0)
            else:
                state.img = state.img[:, ::-1].copy()
                state.then(-1, 1, w0, 0)
    elif name == "RandomResizedCrop":
        import numpy as np

        rng = rng or np.random.default_rng(0)
        if "size" in step:  # torchvision: size, scale = area range, ratio
            w, h = _wh(step["size"], "hw")
            area_range, ratio_range = step.get("scale", (0.08, 1.0)), step.get("ratio", (3 / 4, 4 / 3))
        else:  # OpenMMLab: scale = output size, crop_ratio_range, aspect_ratio_range
            w, h = _wh(step["scale"], "wh")
            area_range = step.get("crop_ratio_range", (0.08, 1.0))
            ratio_range = step.get("aspect_ratio_range", (3 / 4, 4 / 3))
        x0, y0, cw, ch = _sample_crop(rng, w0, h0, area_range, ratio_range)
        _crop(state, x0, y0, cw, ch)
        _resize(state, w, h)
    elif name == "RandomCrop":
        import numpy as np

        rng = rng or np.random.default_rng(0)
        w, h = _wh(step["crop_size"], "wh") if "crop_size" in step else _wh(step["size"], "hw")
        pad = step.get("padding")
        if pad:
            _pad_step(state, pad, step.get("pad_val", step.get("fill", 0)))
            h0, w0 = state.img.shape[:2]
        x0 = int(rng.integers(0, max(0, w0 - w) + 1))
        y0 = int(rng.integers(0, max(0, h0 - h) + 1))
        _crop(state, x0, y0, w, h)
    elif name in ("SimMIMMaskGenerator", "BEiTMaskGenerator"):
        import numpy as np

        state.mask = _mask(name, step, rng or np.random.default_rng(0))
    elif name == "Normalize":
        mean, std = step.get("mean"), step.get("std")
        if mean is not None and std is not None:
            from visctl.config import check_mean_std

            mean, std = check_mean_std(mean, std, "Normalize")
            # torchvision's Normalize works on 0-1 tensors; mmcv's on 0-255
            scale = 255.0 if max(mean) <= 1.0 else 1.0
            state.normalize = (tuple(m * scale for m in mean), tuple(s * scale for s in std))
    else:
        _torchvision_step(state, name, step, rng)


def _torchvision_step(state: ImageState, name: str, kwargs: dict, rng: Any = None) -> None:
    import numpy as np
    import torch
    from torchvision.transforms import v2

    cls = getattr(v2, name, None)
    if cls is None:
        raise ConfigError(f"unknown transform {name!r}",
                          hint="use a torchvision.transforms.v2 name or one of the OpenMMLab names "
                          "LoadImageFromFile, Resize, ResizeEdge, CenterCrop, Pad, RandomFlip, PackInputs")
    try:
        transform = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build transform {name}({kwargs}): {exc}") from exc
    h0, w0 = state.img.shape[:2]
    if rng is not None:  # torchvision draws from torch's generator: seed it from ours so --seed repeats
        torch.manual_seed(int(rng.integers(0, 2**31)))
    out = transform(torch.from_numpy(np.ascontiguousarray(state.img)).permute(2, 0, 1))
    arr = out.permute(1, 2, 0).numpy()
    if arr.dtype != np.uint8:
        arr = (arr.clip(0, 1) * 255).round().astype(np.uint8) if arr.dtype.kind == "f" else arr.astype(np.uint8)
    if arr.shape[:2] != (h0, w0):
        # an unknown geometric step: treat it as a stretch so maps still cover the image
        state.geometry_known = False
        state.then(arr.shape[1] / w0, arr.shape[0] / h0, 0, 0)
    state.img = np.ascontiguousarray(arr)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError):
        return f"missing parameter {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_pipeline(img: np.ndarray, steps: list[dict], rng: Any = None) -> ImageState:
    """Run ``img`` (RGB uint8) through ``steps``; return the final state."""
    states = run_views(img, steps, rng)
    if len(states) != 1:
        raise ConfigError(f"this pipeline makes {len(states)} views of an image; a model command needs one",
                          hint="use the test pipeline (no MultiView) for model commands")
    return states[0]


def to_original(fmap: np.ndarray, state: ImageState, orig_hw: tuple[int, int]) -> np.ndarray:
    """Carry a map at the pipeline output's resolution back onto the original image.

    ``fmap`` may have any (h, w): it is taken to cover the pipeline output exactly. Pixels of the original
    that the pipeline cropped away get 0.
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
    # ... and zero what the pipeline cropped away (or padded in)
    inside = cv2.warpAffine(np.ones((fh, fw), np.uint8), m, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out * inside


def to_tensor(states: list[ImageState], mean: tuple[float, ...], std: tuple[float, ...], rgb: bool) -> Any:
    """Stack same-size pipeline outputs into a normalised float batch (B, 3, H, W)."""
    import numpy as np
    import torch

    arr = np.stack([s.img for s in states]).astype(np.float32)  # (B, H, W, 3) 0-255 RGB
    if not rgb:
        arr = arr[..., ::-1]
    norm = states[0].normalize or (mean, std)
    scaled = (arr - np.asarray(norm[0], np.float32)) / np.asarray(norm[1], np.float32)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(0, 3, 1, 2)))


def default_pipeline(input_size: Any) -> list[dict]:
    """The pipeline used when a config has none: stretch to the model's input size (maps are carried back)."""
    w, h = _wh(input_size, "wh")
    return [dict(type="Resize", scale=(w, h), keep_ratio=False)]


def prepared_batches(paths: list[Any], steps: list[dict], batch_size: int) -> Iterator[tuple[list, list]]:
    """Read and transform images ``batch_size`` at a time.

    Yields:
        ``(groups, failures)``: groups of ``(path, original RGB, ImageState)`` whose pipeline outputs share
        one size (so each group stacks into one batch), and ``(path, message)`` for unreadable inputs.
    """
    from visctl.errors import VisctlError
    from visctl.images import read_image

    for start in range(0, len(paths), batch_size):
        groups: dict[tuple, list] = {}
        failures = []
        for p in paths[start:start + batch_size]:
            try:
                img = read_image(p)
                state = run_pipeline(img, steps)
            except VisctlError as err:
                failures.append((p, err.message))
                continue
            groups.setdefault(state.img.shape, []).append((p, img, state))
        yield list(groups.values()), failures
