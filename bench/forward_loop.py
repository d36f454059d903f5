"""The limit of bench_cam.py's whole-run figures: read, resize, bare no-grad forward, write nothing.

    python bench/forward_loop.py IMAGE_DIR --threads 1 [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("images")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import cv2
    import numpy as np
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    model = torchvision.models.resnet18(weights=None).eval()
    mean = np.array([123.675, 116.28, 103.53], np.float32)
    std = np.array([58.395, 57.12, 57.375], np.float32)
    files = sorted(os.listdir(args.images))
    with torch.no_grad():
        for start in range(0, len(files), args.batch_size):
            imgs = [cv2.resize(cv2.imread(os.path.join(args.images, n))[..., ::-1], (224, 224)).astype(np.float32)
                    for n in files[start:start + args.batch_size]]
            batch = torch.from_numpy(np.stack([(i - mean) / std for i in imgs]).transpose(0, 3, 1, 2).copy())
            model(batch)


if __name__ == "__main__":
    main()
