"""Small stand-ins for the models the seed documents name, with the module names those documents use.

The seeds' command lines name layers of real OpenMMLab models (``backbone.layer4.2`` of mmpretrain's ResNet-50,
``backbone.layers.11.ln1`` of its ViT, ``backbone.stage4`` and ``neck`` of mmyolo's YOLOv5, ...). Those
weights cannot be downloaded in tests, so each stand-in keeps the module tree and output layout (tuple-valued
backbones and necks, class tokens, token sequences) at a tiny width. The detector stand-in is the trained demo
detector with mmyolo's names, so its boxes are real. Imported by path (``seed_models:resnet``) from the
configs' folder.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, width: int, num_classes: int, tokens: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokens = tokens
        self.head = nn.Module()
        self.head.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if isinstance(f, tuple):
            f = f[-1]
        pooled = f[:, 0] if self.tokens else f.mean((2, 3))  # the class token, or global average pooling
        return self.head.fc(pooled)


class _ResNet(nn.Module):
    """mmpretrain ResNet names: backbone.conv1, backbone.layer1..layer4, each a Sequential of blocks."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.conv1 = _conv(3, w, 2)
        self.layer1 = nn.Sequential(_conv(w, w))
        self.layer2 = nn.Sequential(_conv(w, w, 2))
        self.layer3 = nn.Sequential(_conv(w, w, 2), _conv(w, w))
        self.layer4 = nn.Sequential(_conv(w, w), _conv(w, w), _conv(w, w))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x))))),)


def resnet(num_classes: int = 1000, width: int = 16) -> nn.Module:
    """mmpretrain's ImageClassifier(ResNet-50) layout: ``backbone.layer4.2`` is the last block."""
    return _Classifier(_ResNet(width), width, num_classes)


class _MobileNetV3(nn.Module):
    """mmpretrain MobileNetV3 names: backbone.conv1, backbone.layer1..layer16 (layer16 the last 1x1 conv)."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.conv1 = _conv(3, w, 2)
        for i in range(1, 16):
            self.add_module(f"layer{i}", _conv(w, w, 2 if i in (2, 4, 7) else 1))
        self.layer16 = nn.Sequential(nn.Conv2d(w, 2 * w, 1), nn.BatchNorm2d(2 * w), nn.Hardswish())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = self.conv1(x)
        for i in range(1, 17):
            x = getattr(self, f"layer{i}")(x)
        return (x,)


def mobilenet_v3(num_classes: int = 1000, width: int = 8) -> nn.Module:
    """mmpretrain's MobileNetV3-large layout: ``backbone.layer16``."""
    return _Classifier(_MobileNetV3(width), 2 * width, num_classes)


class _Block(nn.Module):
    """A pre-norm transformer block with mmpretrain's names (ln1, attn, ln2, ffn)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.ffn(self.ln2(x))


class _ViT(nn.Module):
    """mmpretrain VisionTransformer / T2T-ViT names: a class token, then ``<blocks>.<i>.ln1``."""

    num_extra_tokens = 1

    def __init__(self, dim: int, depth: int, blocks: str, patch: int, img_size: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (img_size // patch) ** 2, dim) * 0.02)
        self.blocks_name = blocks
        self.add_module(blocks, nn.ModuleList(_Block(dim) for _ in range(depth)))
        self.ln1 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.pos_embed
        for block in getattr(self, self.blocks_name):
            t = block(t)
        return (self.ln1(t),)


def vit(num_classes: int = 1000, dim: int = 32, img_size: int = 64) -> nn.Module:
    """mmpretrain's ViT-B/16 layout: ``backbone.layers.0..11`` with ``ln1``; patch 16, a class token."""
    return _Classifier(_ViT(dim, 12, "layers", 16, img_size), dim, num_classes, tokens=True)


def t2t_vit(num_classes: int = 1000, dim: int = 32, img_size: int = 64) -> nn.Module:
    """mmpretrain's T2T-ViT-t-14 layout: ``backbone.encoder.0..13`` with ``ln1``; a class token."""
    return _Classifier(_ViT(dim, 14, "encoder", 16, img_size), dim, num_classes, tokens=True)


class _Swin(nn.Module):
    """mmpretrain SwinTransformer names: stages of blocks on (N, L, C) tokens, then ``norm3``; no class token."""

    num_extra_tokens = 0

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.stages = nn.ModuleList()
        for _ in range(2):
            stage = nn.Module()
            stage.blocks = nn.ModuleList(_Block(dim) for _ in range(2))
            self.stages.append(stage)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        f = self.patch_embed(x)
        n, c, h, w = f.shape
        t = f.flatten(2).transpose(1, 2)
        for stage in self.stages:
            for block in stage.blocks:
                t = block(t)
        return (self.norm3(t).transpose(1, 2).reshape(n, c, h, w),)


def swin(num_classes: int = 1000, dim: int = 32) -> nn.Module:
    """mmpretrain's Swin-T layout: ``backbone.norm3`` on tokens; the head pools the (N, C, H, W) output."""
    return _Classifier(_Swin(dim), dim, num_classes)


class _YoloBackbone(nn.Module):
    """mmyolo/mmdet backbone names (stem, stage1..stage4) returning the stages of ``out_indices``."""

    def __init__(self, demo: nn.Module, out_indices: tuple[int, ...]) -> None:
        super().__init__()
        self.stem = nn.Identity()
        for i in range(1, 5):
            self.add_module(f"stage{i}", getattr(demo.backbone, f"layer{i}"))
        self.out_indices = out_indices

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        x = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"stage{i}")(x)
            if i - 1 in self.out_indices:
                outs.append(x)
        return tuple(outs)


class _YoloNeck(nn.Module):
    """A neck returning one map per level (``neck.out_layers[i]``); the last level feeds the head."""

    def __init__(self, block: nn.Module, levels: int) -> None:
        super().__init__()
        self.out_layers = nn.ModuleList([nn.Identity() for _ in range(levels - 1)] + [block])

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        feats = tuple(feats) + (feats[-1],) * (len(self.out_layers) - len(feats))
        return tuple(layer(f) for layer, f in zip(self.out_layers, feats))


class _Detector(nn.Module):
    def __init__(self, num_classes: int, out_indices: tuple[int, ...], levels: int) -> None:
        super().__init__()
        from visctl.demo_models import shapes_detector

        demo = shapes_detector(num_classes)
        self.backbone = _YoloBackbone(demo, out_indices)
        self.neck = _YoloNeck(demo.neck, levels)
        self.bbox_head = demo.head
        self._decode = demo.decode
        self._demo = [demo]  # not a submodule: its parameters are the ones above

    def forward(self, x: torch.Tensor) -> list[dict]:
        f = self.neck(self.backbone(x))[-1]
        return self._decode(self.bbox_head.heatmap(f), self.bbox_head.size(f), self.bbox_head.offset(f))


def yolo(num_classes: int = 4) -> nn.Module:
    """mmyolo's YOLOv5 layout on the trained demo detector: ``backbone.stage1..4`` (out_indices 2, 3, 4 ->
    a 3-tuple), ``neck.out_layers[0..2]`` (a 3-tuple), ``bbox_head``; the checkpoint is the demo detector's
    with its keys revised (see the config)."""
    return _Detector(num_classes, (1, 2, 3), 3)


def retinanet(num_classes: int = 4) -> nn.Module:
    """mmdet's RetinaNet layout on the demo detector: a 4-tuple backbone (ResNet out_indices 0-3) and a
    5-level neck (FPN p3-p7)."""
    return _Detector(num_classes, (0, 1, 2, 3), 5)
