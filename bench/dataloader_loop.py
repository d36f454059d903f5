"""The baseline of bench_browse.py: bare DataLoader iteration over the same class folders, nothing written.

    python bench/dataloader_loop.py ROOT --threads 1 [--number N] [--num-workers 0]

torchvision's ImageFolder with the v2 transforms visctl browse's config names (RandomResizedCrop(224),
RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.4)), one sample at a time through a DataLoader
(``batch_size=None``), the first N samples.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--number", type=int, default=-1)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()

    import torch
    import torchvision
    from torch.utils.data import DataLoader, Subset
    from torchvision.transforms import v2

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = torchvision.datasets.ImageFolder(args.root, transform=v2.Compose([
        v2.PILToTensor(), v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.4, 0.4, 0.4)]))
    if args.number >= 0:
        data = Subset(data, range(min(args.number, len(data))))
    for _ in DataLoader(data, batch_size=None, num_workers=args.num_workers):
        pass


if __name__ == "__main__":
    main()
