"""Model inputs: the input size a model takes, and how a batch reaches its device (pinned, channels_last)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visctl.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

def native_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (h, w) input a model was built for, when it says: a timm patch embedding that accepts only its
    ``img_size`` (ViT, DeiT, DINOv2 at 518 px, ...), else timm's ``pretrained_cfg`` / ``default_cfg``
    ``input_size``; None when the model does not say."""
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if size is not None and getattr(embed, "strict_img_size", True) and not getattr(embed, "dynamic_img_pad", False):
        h, w = (size, size) if isinstance(size, int) else size
        return int(h), int(w)
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)) and len(cfg["input_size"]) == 3:
            return int(cfg["input_size"][1]), int(cfg["input_size"][2])
    return None


def check_input_size(model: nn.Module, hw: tuple[int, int], from_pipeline: bool) -> None:
    """Refuse an input size a model cannot take (a strict timm patch embedding) with the option that fixes it."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or not getattr(embed, "strict_img_size", False) or getattr(embed, "dynamic_img_pad", False):
        return
    size = getattr(embed, "img_size", None)
    if size is None:
        return
    need = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(hw) != tuple(need):
        where = "the config's pipeline gives" if from_pipeline else "visctl.input_size gives"
        raise ModelError(f"the model takes {need[0]}x{need[1]} inputs only (its patch embedding is strict); "
                         f"{where} {hw[0]}x{hw[1]}",
                         hint=f"cfg_options=['visctl.input_size={need[0]}'] (without a test_pipeline), a pipeline that "
                         f"resizes to {need[0]}x{need[1]}, or build the model for your size (model.img_size=...)")


def pinned_transfer(device: str) -> bool:
    """Whether a CPU batch goes to ``device`` through pinned (page-locked) memory with a non-blocking copy:
    on CUDA only (the copy then overlaps the host's work until the forward needs the batch)."""
    return str(device).startswith("cuda")


def use_channels_last(model: Any, device: str) -> bool:
    """Whether to run ``model`` in channels_last (NHWC): for a model with 2-D convolutions, on CUDA (cuDNN's
    tensor-core kernels are NHWC) and on a CPU with oneDNN (mkldnn), whose NHWC convolutions made a GradCAM
    forward + backward 0.82-0.89x the time of NCHW for resnet18 and efficientnet_b0 at 1 and 2 threads on
    this project's machine, and never slower (convnext_tiny 1.0x, mobilenet_v3_small 0.87-0.98x); the maps
    differ from NCHW's by float rounding (~4e-6 of the [0, 1] range). Nothing gained for a transformer."""
    import torch
    from torch import nn

    dev = str(device)
    fast = dev.startswith("cuda") or (dev == "cpu" and torch.backends.mkldnn.is_available())
    return fast and any(isinstance(m, nn.Conv2d) for m in model.modules())


def to_device(batch: Any, device: str, channels_last: bool = False) -> Any:
    """A CPU batch (B, 3, H, W) on ``device``: pinned and non-blocking on CUDA (:func:`pinned_transfer`), in
    channels_last when the model runs so (:func:`use_channels_last`); elsewhere a plain ``.to``."""
    import torch

    if pinned_transfer(device):
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
