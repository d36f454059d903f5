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


def shapes_detector(num_classes: int = 4, width: int = 48, score_thr: float = 0.05, max_per_image: int = 100) -> Any:
    """A small CenterNet-style detector for generated shapes (stride 4).

    It follows visctl's detector protocol: ``model(batch)`` with a (N, 3, H, W) batch returns, in eval mode,
    one ``dict(boxes=(K, 4) xyxy in input pixels, scores=(K,), labels=(K,))`` per image; scores keep their
    gradient so box-level CAMs can backpropagate from them. In train mode it returns the raw maps
    ``(heatmap logits (N, C, H/4, W/4), size (N, 2, H/4, W/4), offset (N, 2, H/4, W/4))``.
    """
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class ShapesDetector(nn.Module):
        stride = 4

        def __init__(self) -> None:
            super().__init__()
            w = width
            self.backbone = nn.Sequential()
            self.backbone.add_module("layer1", block(3, w // 2, 2))
            self.backbone.add_module("layer2", block(w // 2, w, 2))
            self.backbone.add_module("layer3", nn.Sequential(block(w, w, 1, 2), block(w, w, 1, 4)))
            self.backbone.add_module("layer4", nn.Sequential(block(w, w, 1, 8), block(w, w, 1, 1)))
            self.neck = block(w, w)
            self.head = nn.Module()
            self.head.heatmap = nn.Conv2d(w, num_classes, 1)
            self.head.size = nn.Conv2d(w, 2, 1)
            self.head.offset = nn.Conv2d(w, 2, 1)
            nn.init.constant_(self.head.heatmap.bias, -2.19)  # prior 0.1, as CenterNet
            self.score_thr = score_thr
            self.max_per_image = max_per_image

        def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            f = self.neck(self.backbone(x))
            return self.head.heatmap(f), self.head.size(f), self.head.offset(f)

        def forward(self, x: torch.Tensor) -> Any:
            heat, size, offset = self.maps(x)
            if self.training:
                return heat, size, offset
            return self.decode(heat, size, offset)

        def decode(self, heat: torch.Tensor, size: torch.Tensor, offset: torch.Tensor) -> list[dict]:
            prob = heat.sigmoid()
            peaks = (prob == nn.functional.max_pool2d(prob, 3, 1, 1)) & (prob > self.score_thr)
            n, c, h, w = prob.shape
            out = []
            for i in range(n):
                cls, ys, xs = peaks[i].nonzero(as_tuple=True)
                scores = prob[i, cls, ys, xs]
                order = scores.argsort(descending=True)[: self.max_per_image]
                cls, ys, xs, scores = cls[order], ys[order], xs[order], scores[order]
                cx = (xs.float() + offset[i, 0, ys, xs]) * self.stride
                cy = (ys.float() + offset[i, 1, ys, xs]) * self.stride
                bw = size[i, 0, ys, xs].exp() * self.stride
                bh = size[i, 1, ys, xs].exp() * self.stride
                boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=1)
                out.append(dict(boxes=boxes, scores=scores, labels=cls))
            return out

    return ShapesDetector()


def shapes_segmenter(num_classes: int = 5, width: int = 32) -> Any:
    """A small fully convolutional segmenter for generated shapes: (N, 3, H, W) -> (N, C, H, W) logits.

    Class 0 is the background, 1.. the shapes. ``backbone.layer1..layer4`` (stride 4, dilated), ``head.cls``
    (a 1x1 conv), then a bilinear upsampling to the input size, as torchvision's FCN heads do.
    """
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class ShapesSegmenter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.backbone = nn.Sequential()
            self.backbone.add_module("layer1", block(3, w // 2, 2))
            self.backbone.add_module("layer2", block(w // 2, w, 2))
            self.backbone.add_module("layer3", nn.Sequential(block(w, w, 1, 2), block(w, w, 1, 4)))
            self.backbone.add_module("layer4", nn.Sequential(block(w, w, 1, 8), block(w, w, 1, 1)))
            self.head = nn.Module()
            self.head.cls = nn.Conv2d(w, num_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.head.cls(self.backbone(x))
            return nn.functional.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)

    return ShapesSegmenter()
