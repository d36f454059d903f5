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


class TinyCNN(nn.Module):
    """A small CNN with biased convs and batch norms (FullGrad uses their biases)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.head = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class ChannelsLastBlock(nn.Module):
    """A Swin-like block on (N, H, W, C): norm, then an MLP over channels with a residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm1(x))


class ChannelsLastNet(nn.Module):
    """A tiny stand-in for torchvision's swin_t layout: patch conv, then blocks on (N, H, W, C)."""

    def __init__(self, num_classes: int = 4, dim: int = 12) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(ChannelsLastBlock(dim), ChannelsLastBlock(dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.patch(x).permute(0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)
        return self.head(x.mean((1, 2)))
