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


class _MBConv(nn.Module):
    """EfficientNet-PyTorch's MBConvBlock, cut down: expand, depthwise, project (a linear output)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self._expand_conv = nn.Conv2d(cin, cin * 4, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(cin * 4)
        self._depthwise_conv = nn.Conv2d(cin * 4, cin * 4, 3, stride, 1, groups=cin * 4, bias=False)
        self._bn1 = nn.BatchNorm2d(cin * 4)
        self._project_conv = nn.Conv2d(cin * 4, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout)
        self._swish = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._swish(self._bn0(self._expand_conv(x)))
        y = self._swish(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if y.shape == x.shape else y


class LiteEffNet(nn.Module):
    """The module layout of EfficientNet-Lite in EfficientNet-PyTorch (lukemelas, and its -Lite forks):
    ``x = self._swish(self._bn1(self._conv_head(x)))`` with one ``_swish`` module shared by the stem and the
    head, so ``_bn1`` is the last module with its own output, and it is before the activation."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(8)
        self._blocks = nn.ModuleList([_MBConv(8, 8, 1), _MBConv(8, 16, 2), _MBConv(16, 16, 1), _MBConv(16, 24, 2)])
        self._conv_head = nn.Conv2d(24, 64, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(64)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(64, num_classes)
        self._swish = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._swish(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


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


class ViewNet(nn.Module):
    """A VGG-like classifier that flattens its last conv's output with ``.view`` (as mmpretrain's VGG does), which
    an NHWC tensor refuses."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=4, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.classifier = nn.Linear(6 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class PairsBackbone(nn.Module):
    """Returns a tuple of [conv vector, token vector] lists, as mmpretrain's Conformer backbone does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.tok = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor]]:
        v = self.conv(x).mean((2, 3))
        return ([v, self.tok(v)],)


class PairsNet(nn.Module):
    """A classifier on :class:`PairsBackbone` (no neck)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.backbone = PairsBackbone()
        self.head = nn.Linear(10, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, tok = self.backbone(x)[0]
        return self.head(torch.cat([conv, tok], 1))
