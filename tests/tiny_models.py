"""Tiny models for tests, importable by path (tiny_models:Name) because tests/ is on sys.path."""

from __future__ import annotations

import torch
from torch import nn


class Stages(nn.Module):
    """Returns a tuple of two stages, like a backbone with out_indices."""

    def __init__(self) -> None:
        super().__init__()
        self.s1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.s2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.s1(x)
        return a, self.s2(a)


class Neck(nn.Module):
    """Returns a dict of levels, like an FPN."""

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"p3": feats[0], "p4": feats[1]}


class TupleNet(nn.Module):
    """A classifier whose backbone returns a tuple and whose neck returns a dict."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.backbone = Stages()
        self.neck = Neck()
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.neck(self.backbone(x))
        return self.fc(levels["p4"].mean((2, 3)))


class NeckNet(nn.Module):
    """mmpretrain's ImageClassifier layout: backbone stages, a global-average-pooling neck, a linear head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential()
        for i, (cin, cout) in enumerate([(3, 8), (8, 8), (8, 16), (16, 16)]):
            self.backbone.add_module(f"layer{i + 1}", nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.ReLU()))
        self.neck = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential()
        self.head.add_module("fc", nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.backbone(x)).flatten(1))
