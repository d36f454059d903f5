"""Train the demo MAE on generated 64 px shapes; writes examples/demo_mae/mae.pth.

    python examples/train_mae.py          # a few minutes on 2 CPU cores

Scenes without the clutter lines (shapes on a noisy gradient); training uses seeds 0..N-1, tests use seeds
from 300000 on.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import torch
    from mmengine.config import Config

    from visctl import config, shapes, transforms
    from visctl.building import build_model
    from visctl.mim_models import patchify, random_mask

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "demo_mae" / "mae.pth")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = Config.fromfile(str(HERE / "demo_mae" / "config.py"))
    mean, std, rgb = config.normalization(cfg)
    steps = config.test_pipeline(cfg)
    scenes = (shapes.make_scene(s, 64, 1 + s % 2, 10, 26, clutter=False) for s in range(args.n))
    states = [transforms.run_pipeline(scene.image, steps) for scene in scenes]
    x = transforms.to_tensor(states, mean, std, rgb)
    model = build_model(dict(cfg.model))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    bs = 64
    total = args.epochs * math.ceil(args.n / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=total, pct_start=0.1)
    length = (64 // model.patch_size) ** 2
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(args.n)
        for i in range(0, args.n, bs):
            xb = x[perm[i:i + bs]]
            mask = random_mask(len(xb), length, model.mask_ratio)
            pred = model(xb, mask)
            err = ((pred - patchify(xb, model.patch_size)) ** 2).mean(-1)
            loss = (err * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: masked-patch loss {loss.item():.4f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
