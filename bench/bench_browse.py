"""Browsing throughput: 500 images of 256 px through a train pipeline, visctl vs the bare torchvision dataset.

    python bench/bench_browse.py [--images 500] [--threads 1]

Both arms read the same class folders and apply RandomResizedCrop(224), a horizontal flip and ColorJitter,
in this process (no workers), the thread count pinned. visctl's arm is what `visctl browse` iterates
(PipelineSamples: its own crop/flip with geometry tracking, torchvision's ColorJitter); the baseline is
torchvision's ImageFolder with the v2 transforms. Target: >= 0.5x.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import cv2
    import numpy as np
    import torch
    import torchvision
    from torchvision.transforms import v2

    from visctl import datasets

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "train"
        rng = np.random.default_rng(0)
        for i in range(args.images):
            folder = root / f"class{i % 5}"
            folder.mkdir(parents=True, exist_ok=True)
            img = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i:05d}.jpg"), img)
        tv = torchvision.datasets.ImageFolder(str(root), transform=v2.Compose([
            v2.PILToTensor(), v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), v2.ColorJitter(0.4, 0.4, 0.4)]))
        ours = datasets.PipelineSamples(datasets.build_dataset(dict(type="ImageFolder", root=str(root))), [
            dict(type="RandomResizedCrop", size=224), dict(type="RandomFlip", prob=0.5),
            dict(type="ColorJitter", brightness=0.4, contrast=0.4, saturation=0.4)])

        def bare() -> None:
            for i in range(len(tv)):
                tv[i]

        def visctl() -> None:
            for item in datasets.iterate(ours, list(range(len(ours)))):
                assert item["error"] is None

        t = interleaved({"bare": bare, "visctl": visctl}, args.repeats)
    n = args.images
    print(f"{n} images of 256 px, RandomResizedCrop(224) + flip + ColorJitter, {args.threads} thread(s), no workers")
    print(f"  torchvision ImageFolder bare : {n / t['bare']:7.1f} images/s")
    print(f"  visctl browse samples        : {n / t['visctl']:7.1f} images/s")
    print(f"  visctl / bare                : {t['bare'] / t['visctl']:.2f}x   (target >= 0.5x)")


if __name__ == "__main__":
    main()
