"""How to put another detector family behind visctl's detector protocol, in a few lines.

visctl calls ``model(batch)`` with a (N, 3, H, W) batch and expects one ``dict(boxes, scores, labels)`` per
image, boxes xyxy in the batch's pixels, scores differentiable (for `visctl boxam`'s gradient methods).
Here the "other family" returns one (N, K, 6) tensor of [cx, cy, w, h, score, label] rows in 0-1 units, as
YOLO/DETR-style heads often do; ``ProtocolAdapter`` converts it. Use it from a config:

    model = dict(type='detector_adapter:build', num_classes=4)   # with examples/ on PYTHONPATH
"""

from __future__ import annotations

import torch
from torch import nn


class ProtocolAdapter(nn.Module):
    """Wrap a detector whose forward gives (N, K, 6) [cx, cy, w, h, score, label] in 0-1 units."""

    def __init__(self, detector: nn.Module, score_thr: float = 0.0) -> None:
        super().__init__()
        self.detector = detector  # keep the name: checkpoint keys become detector.*
        self.score_thr = score_thr

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        rows = self.detector(x)
        h, w = x.shape[2:]
        out = []
        for r in rows:
            r = r[r[:, 4] >= self.score_thr]
            cx, cy, bw, bh = r[:, 0] * w, r[:, 1] * h, r[:, 2] * w, r[:, 3] * h
            boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
            out.append(dict(boxes=boxes, scores=r[:, 4], labels=r[:, 5].long()))
        return out


class RowsDetector(nn.Module):
    """A stand-in for the other family: the demo detector re-shaped to emit rows in 0-1 units."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        from visctl.demo_models import shapes_detector

        self.net = shapes_detector(num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[2:]
        rows = []
        for d in self.net.eval()(x):
            b = d["boxes"]
            rows.append(torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                                     (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h, d["scores"],
                                     d["labels"].float()], dim=1))
        return rows


def build(num_classes: int = 4) -> nn.Module:
    """The factory a config names: model = dict(type='detector_adapter:build')."""
    return ProtocolAdapter(RowsDetector(num_classes))
