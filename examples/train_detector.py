"""Train the demo detector on generated scenes; writes examples/demo_detector/detector.pth.

    python examples/train_detector.py          # a few minutes on 2 CPU cores

Scenes are 128 px with 1-5 shapes of 10-36 px; training uses seeds 0..N-1, tests use seeds from 200000 on.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


def targets(scenes: list, num_classes: int, size: int, stride: int = 4) -> tuple:
    """CenterNet targets: Gaussian heatmaps, and size/offset at each object's centre cell."""
    import numpy as np
    import torch

    h = w = size // stride
    heat = np.zeros((len(scenes), num_classes, h, w), np.float32)
    wh = np.zeros((len(scenes), 2, h, w), np.float32)
    off = np.zeros((len(scenes), 2, h, w), np.float32)
    mask = np.zeros((len(scenes), h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    for i, scene in enumerate(scenes):
        for label, (x0, y0, x1, y1) in zip(scene.labels, scene.boxes):
            cx, cy = (x0 + x1) / 2 / stride, (y0 + y1) / 2 / stride
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            sigma = max(0.5, (x1 - x0) / stride / 6)
            heat[i, label] = np.maximum(heat[i, label], np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma ** 2)))
            wh[i, :, iy, ix] = np.log((x1 - x0) / stride), np.log((y1 - y0) / stride)
            off[i, :, iy, ix] = cx - ix, cy - iy
            mask[i, iy, ix] = 1
    return tuple(torch.from_numpy(a) for a in (heat, wh, off, mask))


def loss_fn(out: tuple, tgt: tuple) -> torch.Tensor:  # noqa: F821
    import torch

    heat_logit, wh, off = out
    t_heat, t_wh, t_off, mask = tgt
    p = heat_logit.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = t_heat.eq(1).float()
    neg = 1 - pos
    focal = -(pos * (1 - p) ** 2 * torch.log(p) + neg * (1 - t_heat) ** 4 * p ** 2 * torch.log(1 - p)).sum()
    n = pos.sum().clamp(min=1)
    m = mask.unsqueeze(1)
    reg = ((wh - t_wh).abs() * m).sum() / n + ((off - t_off).abs() * m).sum() / n
    return focal / n + reg


def main() -> None:
    import torch
    from mmengine.config import Config

    from visctl import config, shapes, transforms
    from visctl.demo_models import shapes_detector

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=HERE / "demo_detector" / "detector.pth")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = Config.fromfile(str(HERE / "demo_detector" / "config.py"))
    mean, std, rgb = config.normalization(cfg)
    scenes = [shapes.make_scene(s, args.size, n_objects=1 + s % 5, min_side=10, max_side=36) for s in range(args.n)]
    x = transforms.to_tensor([transforms.ImageState(img=s.image) for s in scenes], mean, std, rgb)
    tgt = targets(scenes, len(shapes.CLASSES), args.size)
    model = shapes_detector(num_classes=len(shapes.CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    bs = 32
    total = args.epochs * math.ceil(args.n / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=total, pct_start=0.15)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(args.n)
        for i in range(0, args.n, bs):
            idx = perm[i:i + bs]
            loss = loss_fn(model(x[idx]), tuple(t[idx] for t in tgt))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": {"classes": list(shapes.CLASSES)}}, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
