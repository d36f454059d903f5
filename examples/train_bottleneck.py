"""Train the linear-bottleneck demo classifier; writes examples/demo_bottleneck/classifier.pth (~0.3 MB).

    python examples/train_bottleneck.py            # a few minutes on 2 busy CPU cores

A MobileNetV2-style net (torchvision's MobileNetV2, three short stages) on generated 64 px shapes: its CAM
layer (examples/demo_bottleneck/config.py) is the last InvertedResidual's projection conv + BN, a linear
bottleneck with no activation after it, where the sign of the channel mean says nothing about the object;
tests/test_eigen_orientation.py checks that visctl's EigenCAM and KPCA-CAM light the object there.
Training images use seeds 0..N-1; tests use seeds from 100000 on (held out).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import numpy as np
    import torch
    from mmengine.config import Config

    from visctl import shapes
    from visctl.models import build_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=HERE / "demo_bottleneck" / "classifier.pth")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = Config.fromfile(str(HERE / "demo_bottleneck" / "config.py"))

    def tensors(seeds: range) -> tuple[torch.Tensor, torch.Tensor]:
        scenes = [shapes.make_scene(s, size=64) for s in seeds]
        x = (np.stack([s.image for s in scenes]).astype(np.float32) - 127.5) / 64.0  # the config's mean/std, RGB
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor([s.labels[0] for s in scenes])

    x, y = tensors(range(args.n))
    xv, yv = tensors(range(100_000, 100_500))
    model = build_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
    steps_total = args.epochs * ((args.n + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps_total)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(args.n)
        for i in range(0, args.n, 64):
            idx = perm[i:i + 64]
            xb = x[idx]
            flip = torch.rand(len(idx)) < 0.5  # flips keep every class and its box meaning
            xb[flip] = xb[flip].flip(-1)
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out accuracy {acc:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": {"classes": list(shapes.CLASSES),
                                                          "val_accuracy": round(acc, 4)}}, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
