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
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # train_classifier.fit, the demo classifiers' shared training

from train_classifier import fit  # noqa: E402


def main() -> None:
    import numpy as np
    import torch
    from mmengine.config import Config

    from visctl import shapes
    from visctl.building import build_model

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
    fit(model, x, y, xv, yv, epochs=args.epochs, lr=5e-3, out=args.out)


if __name__ == "__main__":
    main()
