"""Memory a model's forward needs at an input size, and memory the machine has: an input the model cannot
hold is refused in words (``--max-pixels`` bounds the pixels read; this bounds what the model makes of them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

#: model inputs at least this large (pixels per image) are checked against the free memory before the forward;
#: below it a forward needs little enough that the check is not worth its two small probe forwards
CHECK_FROM_PIXELS = 4_000_000
GiB = float(1 << 30)


@dataclass(frozen=True)
class Footprint:
    """A model's activation memory as ``fixed + per_pixel * pixels`` bytes for one image: all the outputs of its
    leaf modules (what a forward with gradients keeps for the backward), and the largest one (what a no-grad
    forward holds at a time, with its input). Functional operations are not counted: the need is a floor."""

    kept_fixed: float
    kept_per_pixel: float
    peak_fixed: float
    peak_per_pixel: float

    def need(self, pixels: int, images: int = 1, grad: bool = False) -> float:
        """Bytes a forward (``grad``: and its backward) of ``images`` inputs of ``pixels`` pixels needs, at least."""
        peak = self.peak_fixed + self.peak_per_pixel * pixels
        if grad:  # what the forward keeps, and the backward's gradient of the largest output and of its input
            one = self.kept_fixed + self.kept_per_pixel * pixels + 2 * peak
        else:  # the largest output, its input and the next one
            one = 3 * peak
        return max(0.0, one + 12.0 * pixels) * images  # + the float32 input itself


def _leaf_bytes(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """One no-grad forward: (sum, max) of the bytes of the tensors the leaf modules return; an in-place output
    (a ReLU(inplace=True) returns its input) is not new memory."""
    import torch

    total, peak = [0], [0]

    def tensors(obj: Any) -> list[torch.Tensor]:
        if isinstance(obj, torch.Tensor):
            return [obj]
        if isinstance(obj, (list, tuple)):
            return [t for o in obj for t in tensors(o)]
        if isinstance(obj, dict):
            return [t for o in obj.values() for t in tensors(o)]
        return []

    def hook(_m: Any, inputs: Any, out: Any) -> None:
        owned = {t.data_ptr() for t in tensors(inputs)}
        size = sum(t.numel() * t.element_size() for t in tensors(out) if t.data_ptr() not in owned)
        total[0] += size
        peak[0] = max(peak[0], size)

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0], peak[0]


def footprint(model: nn.Module, like: torch.Tensor, hw: tuple[int, int]) -> Footprint | None:
    """The model's :class:`Footprint`, from two small forwards of zeros shaped as an (h, w) input (a side of
    about 256 and 512 pixels): activation memory is linear in the pixels where the model keeps the input's
    size, and fixed where it resizes inside (torchvision's detectors). None when the model does not take
    those sizes (then nothing is checked)."""
    import torch

    h, w = hw
    sizes = []
    for side in (256, 512):
        f = side / max(h, w)
        sizes.append((max(32, round(h * f / 32) * 32), max(32, round(w * f / 32) * 32)))
    try:
        found = [_leaf_bytes(model, torch.zeros((1, like.shape[1], sh, sw), dtype=like.dtype, device=like.device))
                 for sh, sw in sizes]
    except Exception:  # noqa: BLE001 - a model that takes one input size only: it cannot be fed a huge one
        return None
    (p0, p1) = (sh * sw for sh, sw in sizes)
    (k0, m0), (k1, m1) = found
    kept_slope, peak_slope = (k1 - k0) / (p1 - p0), (m1 - m0) / (p1 - p0)
    return Footprint(k0 - kept_slope * p0, max(0.0, kept_slope), m0 - peak_slope * p0, max(0.0, peak_slope))


def available_bytes(device: str) -> float | None:
    """Memory this process can still use on ``device``: for the CPU the least of the kernel's MemAvailable,
    the cgroup's limit less its use, and the address-space limit (``ulimit -v``) less the process's size; for
    CUDA the device's free memory plus torch's unused cache. None where it cannot be told."""
    if str(device).startswith("cuda"):
        try:
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(device))
            return float(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
        except Exception:  # noqa: BLE001 - no answer: no check
            return None
    if str(device) != "cpu":
        return None
    found: list[float] = []
    meminfo = _read_kib("/proc/meminfo", "MemAvailable:")
    if meminfo is not None:
        found.append(meminfo)
    limit, used = _read_number("/sys/fs/cgroup/memory.max"), _read_number("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        found.append(max(0.0, limit - used))
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        size = _read_kib("/proc/self/status", "VmSize:")
        if soft != resource.RLIM_INFINITY and size is not None:
            found.append(max(0.0, soft - size))
    except (ImportError, OSError, ValueError):
        pass
    return min(found) if found else None


def _read_kib(path: str, key: str) -> float | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_number(path: str) -> float | None:
    try:
        with open(path) as f:
            text = f.read().strip()
        return float(text) if text.isdigit() else None
    except OSError:
        return None


def too_large(need: float, free: float, hw: tuple[int, int], grad: bool) -> str:
    """The message for an input the model cannot hold."""
    h, w = hw
    return (f"the model's input is {w} x {h} pixels ({w * h / 1e6:,.0f} MP): its forward"
            f"{' and backward' if grad else ''} needs about {need / GiB:,.1f} GiB and {free / GiB:,.1f} GiB is free "
            "(resize in the config's test pipeline, e.g. a Resize or ResizeEdge step, or use `visctl slice` on huge "
            "images, or lower --max-pixels to refuse such images)")
