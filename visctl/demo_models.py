"""The small models visctl's demos and tests use; their trained weights live in examples/."""

from __future__ import annotations

from typing import Any


def shapes_classifier(num_classes: int = 4, width: int = 32) -> Any:
    """A small CNN for 64 px shape images: backbone.layer1..layer4 (16x16 at layer4), GAP, linear head."""
    from torch import nn

    def stage(cin: int, cout: int, pool: bool) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True)]
        if pool:
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers)

    w = width
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential())
    model.backbone.add_module("layer1", stage(3, w // 2, True))
    model.backbone.add_module("layer2", stage(w // 2, w, True))
    model.backbone.add_module("layer3", stage(w, 2 * w, False))
    model.backbone.add_module("layer4", stage(2 * w, 2 * w, False))
    model.add_module("neck", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    model.add_module("head", nn.Sequential())
    model.head.add_module("fc", nn.Linear(2 * w, num_classes))
    return model
