"""Image pipelines from config transform lists, tracking geometry so maps can go back to the original.

Each step records its name and parameters. Geometric steps compose an axis-aligned affine map from the
original image's continuous pixel coordinates to the current image's (``u' = s * u + t``, pixel edges
at integers), which :func:`to_original` inverts to carry a CAM or feature map back onto the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterator
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
    if (w, h) == (w0, h0):
        return
    interp = cv2.INTER_AREA if w < w0 and h < h0 else cv2.INTER_LINEAR
    state.img = cv2.resize(state.img, (w, h), interpolation=interp)
    state.then(w / w0, h / h0, 0.0, 0.0)


def _crop(state: ImageState, x0: int, y0: int, w: int, h: int) -> None:
    import cv2

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
        import cv2

        if "padding" in step:
            p = step["padding"]
            p = [p] * 4 if isinstance(p, int) else list(p)
            left, top, right, bottom = (p * 2 if len(p) == 2 else p)
        else:
            if "size" in step:
                tw, th = _wh(step["size"], "wh")
            else:
                d = int(step.get("size_divisor", 1))
                tw, th = -(-w0 // d) * d, -(-h0 // d) * d
            left, top, right, bottom = 0, 0, max(0, tw - w0), max(0, th - h0)
        fill = step.get("pad_val", step.get("fill", 0))
        fill = fill.get("img", 0) if isinstance(fill, dict) else fill
        state.img = cv2.copyMakeBorder(state.img, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                       value=(fill,) * 3 if isinstance(fill, (int, float)) else tuple(fill))
        state.then(1, 1, left, top)
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
    elif name == "Normalize":
        mean, std = step.get("mean"), step.get("std")
        if mean is not None and std is not None:
            # torchvision's Normalize works on 0-1 tensors; mmcv's on 0-255
            scale = 255.0 if max(mean) <= 1.0 else 1.0
            state.normalize = (tuple(m * scale for m in mean), tuple(s * scale for s in std))
    else:
        _torchvision_step(state, name, step)


def _torchvision_step(state: ImageState, name: str, kwargs: dict) -> None:
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
    out = transform(torch.from_numpy(np.ascontiguousarray(state.img)).permute(2, 0, 1))
    arr = out.permute(1, 2, 0).numpy()
    if arr.dtype != np.uint8:
        arr = (arr.clip(0, 1) * 255).round().astype(np.uint8) if arr.dtype.kind == "f" else arr.astype(np.uint8)
    if arr.shape[:2] != (h0, w0):
        # an unknown geometric step: treat it as a stretch so maps still cover the image
        state.geometry_known = False
        state.then(arr.shape[1] / w0, arr.shape[0] / h0, 0, 0)
    state.img = np.ascontiguousarray(arr)


def run_pipeline(img: np.ndarray, steps: list[dict], rng: Any = None) -> ImageState:
    """Run ``img`` (RGB uint8) through ``steps``; return the final state."""
    state = ImageState(img=img)
    for step in steps:
        if "type" not in step:
            raise ConfigError(f"pipeline step without a type: {step}")
        apply_step(state, step, rng)
    return state


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
    arr = (arr - np.asarray(norm[0], np.float32)) / np.asarray(norm[1], np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


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
