"""Train the demo classifier on generated shapes; writes examples/demo_classifier/classifier.pth.

    python examples/train_classifier.py            # about a minute on 2 CPU cores

Training images use seeds 0..N-1; tests and demos use seeds from 100000 on (held out).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import torch
    from mmengine.config import Config

    from visctl import config, shapes, transforms
    from visctl.demo_models import shapes_classifier

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE / "demo_classifier" / "classifier.pth")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = Config.fromfile(str(HERE / "demo_classifier" / "config.py"))
    steps = config.test_pipeline(cfg)
    mean, std, rgb = config.normalization(cfg)

    def tensors(seeds: range) -> tuple[torch.Tensor, torch.Tensor]:
        states, labels = [], []
        for s in seeds:
            scene = shapes.make_scene(s)
            states.append(transforms.run_pipeline(scene.image, steps))
            labels.append(scene.labels[0])
        return transforms.to_tensor(states, mean, std, rgb), torch.tensor(labels)

    x, y = tensors(range(args.n))
    xv, yv = tensors(range(100_000, 100_500))
    model = shapes_classifier(num_classes=len(shapes.CLASSES))
    fit(model, x, y, xv, yv, epochs=args.epochs, lr=3e-3, out=args.out)


def fit(model, x, y, xv, yv, *, epochs: int, lr: float, out: Path) -> None:
    """AdamW with a one-cycle schedule, batches of 64 with random horizontal flips, the held-out accuracy each
    epoch; the weights and the classes saved to ``out`` (the demo classifiers' training, shared)."""
    import torch

    from visctl import shapes

    n = len(x)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_total = epochs * ((n + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps_total)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n)
        for i in range(0, n, 64):
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
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": {"classes": list(shapes.CLASSES),
                                                          "val_accuracy": round(acc, 4)}}, out)
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
