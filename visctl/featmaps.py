"""Feature maps: capture layer outputs with forward hooks, reduce channels, normalise across maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visctl.choices import Normalize, Reduction
from visctl.errors import LayerError, VisctlError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn



def flatten_output(name: str, out: Any) -> list[tuple[str, torch.Tensor]]:
    """A layer's output as labelled tensors: ``name`` for a tensor, ``name[i]`` / ``name[key]`` for containers,
    nested ones too (mmpretrain's Conformer returns a tuple of ``[conv_vector, transformer_vector]`` lists:
    ``backbone[0][0]``, ``backbone[0][1]``).

    Raises:
        LayerError: the output holds no tensor at all.
    """
    found = _tensors(name, out)
    if not found:
        raise LayerError(f"layer {name!r} returns a {type(out).__name__} with no tensors in it",
                         hint="pick a layer that returns a tensor, a tuple/list of tensors or a dict of tensors")
    return found


def _tensors(name: str, out: Any, depth: int = 0) -> list[tuple[str, torch.Tensor]]:
    import torch

    if isinstance(out, torch.Tensor):
        return [(name, out)]
    if depth >= 4:  # deeper containers are not feature outputs
        return []
    if isinstance(out, dict):
        items: Any = out.items()
    elif isinstance(out, (list, tuple)):
        items = enumerate(out)
    else:
        return []
    return [found for key, value in items for found in _tensors(f"{name}[{key}]", value, depth + 1)]


def capture(model: nn.Module, layers: dict[str, nn.Module], batch: torch.Tensor,
            inputs_of: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Run ``batch`` under no_grad and return every target layer's output(s), labelled, in layer order.

    For the names in ``inputs_of`` a forward pre-hook takes the layer's (first) input instead.
    """
    import torch

    outputs: dict[str, Any] = {}
    handles = []
    for name, module in layers.items():
        def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
            outputs.setdefault(name, out)  # the first call, when a module runs twice

        def pre_hook(_m: Any, inputs: Any, name: str = name) -> None:
            outputs.setdefault(name, inputs[0])
        handles.append(module.register_forward_pre_hook(pre_hook) if name in inputs_of
                       else module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for h in handles:
            h.remove()
    result: dict[str, torch.Tensor] = {}
    for name in layers:
        if name not in outputs:
            raise LayerError(f"layer {name!r} was not called by the model's forward",
                             hint="--preview-model marks the layers a forward does not reach")
        for label, tensor in flatten_output(name, outputs[name]):
            result[label] = tensor.detach()
    return result


def to_nchw(t: torch.Tensor, in_hw: tuple[int, int], label: str, extra_tokens: int | None = None) -> torch.Tensor:
    """Bring a captured tensor to (N, C, H, W): tokens are put on their patch grid, channels-last permuted."""
    from visctl.layers import detect_layout, make_reshape

    if t.ndim == 2:  # (N, C): a vector per image, nothing spatial to draw
        raise LayerError(f"{label} is a vector per image {tuple(t.shape)}, not a map",
                         hint="pick an earlier layer; --preview-model shows every layer's output shape")
    layout = detect_layout(tuple(t.shape), in_hw, False, extra_tokens, label)
    reshape = make_reshape(layout)
    return (reshape(t) if reshape else t).float()


def channel_norm(f: torch.Tensor) -> torch.Tensor:
    """Per-channel z-score over the spatial positions (mmrazor's --use-norm): (C, H, W) -> (C, H, W)."""
    mean = f.mean(dim=(1, 2), keepdim=True)
    std = f.std(dim=(1, 2), keepdim=True, unbiased=False)
    return (f - mean) / (std + 1e-6)


def reduce(f: torch.Tensor, mode: Reduction, topk: int = 4) -> list[tuple[str, np.ndarray]]:
    """Reduce one image's feature (C, H, W) to labelled (H, W) maps.

    squeeze_mean: the channel mean; select_max: the channel with the largest spatial sum; pixel_wise_max:
    the max over channels at each position; none: the ``topk`` channels by spatial sum, or with
    ``topk == -1`` the feature itself, which must have 1 or 3 channels.
    """
    if mode is Reduction.squeeze_mean:
        return [("mean", f.mean(0).cpu().numpy())]
    if mode is Reduction.select_max:
        c = int(f.sum(dim=(1, 2)).argmax())
        return [(f"channel {c}", f[c].cpu().numpy())]
    if mode is Reduction.pixel_wise_max:
        return [("pixel max", f.max(0).values.cpu().numpy())]
    if topk == -1 or topk <= 0:
        if f.shape[0] not in (1, 3):
            raise VisctlError(f"topk={topk} with channel_reduction=none draws the feature itself, which needs "
                              f"1 or 3 channels; this one has {f.shape[0]}",
                              hint="use topk=K to draw the K strongest channels, or a channel reduction")
        return [("channels", f.permute(1, 2, 0).squeeze(-1).cpu().numpy())]
    k = min(topk, f.shape[0])
    idx = f.sum(dim=(1, 2)).topk(k).indices.tolist()
    return [(f"channel {c}", f[c].cpu().numpy()) for c in idx]


def arrangement(k: int, rows: int | None = None, cols: int | None = None) -> tuple[int, int]:
    """A rows x cols grid that holds ``k`` panels (never drops one); errors when a given grid is too small."""
    import math

    if rows and cols:
        if rows * cols < k:
            raise VisctlError(f"arrangement=({rows}, {cols}) holds {rows * cols} panels, topk= asks for {k}",
                              hint=f"use at least {math.ceil(k / cols)} rows, or a smaller topk=")
        return rows, cols
    cols = math.ceil(math.sqrt(k))
    return math.ceil(k / cols), cols


def flat(m: np.ndarray, reference: float) -> bool:
    """Whether a map is numerically constant: its range is below 1e-6 of the feature's largest magnitude
    (``reference``), e.g. the channel mean of a LayerNorm output (about 2e-8 across the image), or zero."""
    import numpy as np

    values = m[np.isfinite(m)]
    if values.size == 0:
        return True
    return float(values.max() - values.min()) <= max(1e-6 * reference, 1e-12)


def why_flat(raw: torch.Tensor, mode: Reduction, module: Any, difference: bool = False) -> tuple[str, str]:
    """Why a flat map (:func:`flat`) of one image's feature is flat, from what is true of that feature, and
    what to try: ``(reason, hint)``.

    Args:
        raw: the layer's output for the image, (C, H, W), before ``--use-norm``.
        mode: the channel reduction that made the map.
        module: the layer's module (for a ``nn.Sequential``, its last module produced the output).
        difference: ``raw`` is model A's output minus model B's (``--compare``'s A-B, or its absolute value):
            the reasons are about the two models, not about the layer.
    """
    from torch import nn

    if difference:
        return why_flat_difference(raw, mode)

    if raw.shape[-2] * raw.shape[-1] == 1:
        return ("the layer's output has one spatial position (1x1): nothing in it varies across the image",
                "pick an earlier layer, whose output is a map")
    finite = raw[raw.isfinite()]
    peak = float(finite.abs().max()) if finite.numel() else 0.0
    if peak == 0.0:
        return "the layer's output is zero everywhere", "try another layer (or another image)"
    spread = float((raw.amax(dim=(1, 2)) - raw.amin(dim=(1, 2))).nan_to_num(0.0).max())
    if spread <= max(1e-6 * peak, 1e-12):
        return ("every channel of the layer's output is the same at every position of the image",
                "try another layer (or another image)")
    if mode is not Reduction.squeeze_mean:
        return ("the drawn map does not vary across the image, though some channels of the layer's output do",
                "try another --channel-reduction or --topk, or another layer")
    producer = module
    while isinstance(producer, nn.Sequential) and len(producer):
        producer = producer[-1]
    name = type(producer).__name__
    # a LayerNorm (over the channels) or a one-group GroupNorm centres every position's channels: their mean
    # is the same everywhere (the mean of its bias)
    if isinstance(producer, nn.LayerNorm) or name.lower().startswith("layernorm") or (
            isinstance(producer, nn.GroupNorm) and producer.num_groups == 1):
        return (f"the layer's output comes out of a norm over the channels ({name}), whose channel mean is the "
                "same at every position", "try --channel-reduction select_max or pixel_wise_max, --use-norm, or "
                "another layer")
    return ("the channels of the layer's output vary across the image, but their mean does not",
            "try --channel-reduction select_max or pixel_wise_max, or --use-norm")


def why_flat_difference(diff: torch.Tensor, mode: Reduction) -> tuple[str, str]:
    """:func:`why_flat` of ``--compare``'s A-B (or |A-B|) map: what is true of the two models at the layer."""
    finite = diff[diff.isfinite()]
    peak = float(finite.abs().max()) if finite.numel() else 0.0
    if peak == 0.0:
        return ("A and B are equal at this layer (their outputs are identical for this image)",
                "compare models whose weights differ at or before this layer (or another layer)")
    if diff.shape[-2] * diff.shape[-1] == 1:
        return ("the layer's output has one spatial position (1x1): where A and B differ cannot vary across "
                "the image", "pick an earlier layer, whose output is a map")
    spread = float((diff.amax(dim=(1, 2)) - diff.amin(dim=(1, 2))).nan_to_num(0.0).max())
    if spread <= max(1e-6 * peak, 1e-12):
        return ("A and B differ by the same amount at every position of the image (in every channel)",
                "try another layer (or another image)")
    return ("A and B differ at some positions in some channels, but the drawn map of their difference does not "
            "vary across the image", "try another --channel-reduction or --topk, or another layer")


@dataclass
class Scale:
    """A min-max range shared by a set of maps; ``signed`` maps are scaled symmetrically around zero."""

    lo: float
    hi: float
    signed: bool = False

    def apply(self, m: np.ndarray) -> np.ndarray:
        import numpy as np

        if self.signed:
            bound = max(abs(self.lo), abs(self.hi), 1e-12)
            return np.clip(0.5 + 0.5 * m / bound, 0.0, 1.0)
        span = self.hi - self.lo
        return np.clip((m - self.lo) / span, 0.0, 1.0) if span > 1e-12 else np.zeros_like(m)

    def describe(self) -> str:
        if self.signed:
            bound = max(abs(self.lo), abs(self.hi))
            return f"scale +-{bound:.3g}"
        return f"scale [{self.lo:.3g}, {self.hi:.3g}]"


def scales(maps: list[tuple[str, np.ndarray, bool]], mode: Normalize) -> list[Scale]:
    """One scale per map: its own (per-map), shared by maps with one key (per-layer), or one for all (global).

    Args:
        maps: ``(group key, map, signed)``; the key is the layer label for per-layer normalisation.
        mode: the normalisation.
    """
    def span(ms: list[np.ndarray], signed: bool) -> Scale:
        return Scale(min(float(m.min()) for m in ms), max(float(m.max()) for m in ms), signed)

    if mode is Normalize.per_map:
        return [span([m], s) for _, m, s in maps]
    if mode is Normalize.global_:
        shared = {s: span([m for _, m, s2 in maps if s2 == s], s) for s in {s for _, _, s in maps}}
        return [shared[s] for _, _, s in maps]
    keys = {(k, s) for k, _, s in maps}
    by_key = {ks: span([m for k, m, s in maps if (k, s) == ks], ks[1]) for ks in keys}
    return [by_key[(k, s)] for k, _, s in maps]
