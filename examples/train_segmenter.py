"""Train the demo segmenter on generated shapes; writes examples/demo_segmenter/segmenter.pth.

    python examples/train_segmenter.py            # a few minutes on 2 CPU cores

Training scenes use seeds 0..N-1 (one to three shapes in 64 px scenes); tests and demos use seeds from
100000 on (held out). Prints the held-out pixel accuracy and the mean IoU of the shape classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scenes(seeds: range, size: int = 64) -> list:
    from visctl import shapes

    return [shapes.make_scene(s, size=size, n_objects=1 + s % 3) for s in seeds]


def main() -> None:
    import numpy as np
    import torch
    from mmengine.config import Config

    from visctl import config, shapes, transforms
    from visctl.demo_models import shapes_segmenter

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE / "demo_segmenter" / "segmenter.pth")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = Config.fromfile(str(HERE / "demo_segmenter" / "config.py"))
    mean, std, rgb = config.normalization(cfg)

    def tensors(seeds: range) -> tuple[torch.Tensor, torch.Tensor]:
        made = scenes(seeds)
        x = transforms.to_tensor([transforms.ImageState(img=s.image) for s in made], mean, std, rgb)
        return x, torch.from_numpy(np.stack([s.mask() for s in made]))

    x, y = tensors(range(args.n))
    xv, yv = tensors(range(100_000, 100_300))
    n_classes = len(shapes.CLASSES) + 1
    model = shapes_segmenter(num_classes=n_classes)
    counts = torch.bincount(y.flatten(), minlength=n_classes).float()
    weight = (counts.sum() / counts).sqrt()  # the background covers most pixels
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_total = args.epochs * ((args.n + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps_total)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(args.n)
        for i in range(0, args.n, 32):
            idx = perm[i:i + 32]
            xb, yb = x[idx], y[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb[flip], yb[flip] = xb[flip].flip(-1), yb[flip].flip(-1)
            loss = torch.nn.functional.cross_entropy(model(xb), yb, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(xv[i:i + 50]).argmax(1) for i in range(0, len(xv), 50)])
        acc = (pred == yv).float().mean().item()
        ious = [((pred == c) & (yv == c)).sum().item() / max(1, ((pred == c) | (yv == c)).sum().item())
                for c in range(1, n_classes)]
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out pixel accuracy {acc:.3f}, "
              f"shape mIoU {np.mean(ious):.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(),
                "meta": {"classes": ["background", *shapes.CLASSES], "val_pixel_accuracy": round(acc, 4),
                         "val_shape_miou": round(float(np.mean(ious)), 4)}}, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
