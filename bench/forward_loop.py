"""The limit of the whole-run benches: read, resize, bare no-grad forward, write nothing.

    python bench/forward_loop.py IMAGE_DIR --threads 1 [--batch-size 16] [--model resnet18|detector]

``resnet18``: torchvision's resnet18 with random weights (weights=None, nothing downloaded), every image
resized to 224 x 224 and normalised with ImageNet's mean/std, as bench_cam/featmap/tsne give visctl.
``detector``: the demo detector (examples/demo_detector) with its checkpoint, each image padded to a multiple
of 4 and normalised as its config says, one image per forward when sizes differ. Images are found
recursively (a dataset's class folders), in sorted order.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def files_of(folder: str) -> list[str]:
    return sorted(os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.lower().endswith(EXTS))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("images")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", choices=("resnet18", "detector"), default="resnet18")
    args = parser.parse_args()

    import cv2
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    if args.model == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(weights=None).eval()
        mean = np.array([123.675, 116.28, 103.53], np.float32)
        std = np.array([58.395, 57.12, 57.375], np.float32)

        def prepare(rgb: np.ndarray) -> np.ndarray:
            return cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_LINEAR)
    else:
        sys.path.insert(0, str(ROOT))
        from visctl.demo_models import shapes_detector

        model = shapes_detector(num_classes=4).eval()
        ckpt = torch.load(ROOT / "examples" / "demo_detector" / "detector.pth", map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt.get("state_dict", ckpt))
        mean = np.full(3, 127.5, np.float32)
        std = np.full(3, 64.0, np.float32)

        def prepare(rgb: np.ndarray) -> np.ndarray:
            h, w = rgb.shape[:2]
            return cv2.copyMakeBorder(rgb, 0, -h % 4, 0, -w % 4, cv2.BORDER_CONSTANT, value=0)

    files = files_of(args.images)
    with torch.no_grad():
        for start in range(0, len(files), args.batch_size):
            imgs = [prepare(cv2.imread(f)[..., ::-1]).astype(np.float32) for f in files[start:start + args.batch_size]]
            groups = [imgs] if len({i.shape for i in imgs}) == 1 else [[i] for i in imgs]
            for group in groups:
                batch = torch.from_numpy(np.stack([(i - mean) / std for i in group]).transpose(0, 3, 1, 2).copy())
                model(batch)
    print(len(files), file=sys.stderr)


if __name__ == "__main__":
    main()
