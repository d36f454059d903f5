"""A plain batched grad-cam script, the way a user writes one: the baseline of bench_cam.py's whole-run figures.

    python bench/gradcam_script.py IMAGE_DIR OUT_DIR --threads 1 [--batch-size 16]

Reads every image with OpenCV, resizes it to 224 px, normalises it, runs pytorch_grad_cam.GradCAM on
torchvision's resnet18 (random weights, ``layer4[-1]``, the predicted class) a batch at a time, and writes a
224-px overlay per image (grad-cam's show_cam_on_image, PNG, cv2.imwrite).
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("images")
    parser.add_argument("out")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import cv2
    import numpy as np
    import torch
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    files = sorted(os.listdir(args.images))
    os.makedirs(args.out, exist_ok=True)
    with GradCAM(model, [model.layer4[-1]]) as cam:
        for start in range(0, len(files), args.batch_size):
            names = files[start:start + args.batch_size]
            rgbs = [cv2.resize(cv2.imread(os.path.join(args.images, n))[..., ::-1], (224, 224)).astype(np.float32)
                    / 255 for n in names]
            batch = torch.from_numpy(np.stack([(r - mean) / std for r in rgbs]).transpose(0, 3, 1, 2).copy())
            maps = cam(batch, None)  # None: the predicted class of each image
            for name, rgb, m in zip(names, rgbs, maps):
                over = show_cam_on_image(rgb, m, use_rgb=True)
                cv2.imwrite(os.path.join(args.out, os.path.splitext(name)[0] + "_cam.png"), over[..., ::-1])
    print(len(files), file=sys.stderr)


if __name__ == "__main__":
    main()
