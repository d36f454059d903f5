"""GradCAM throughput: visctl vs plain grad-cam vs the bare no-grad forward, same batches, same threads.

    python bench/bench_cam.py [--threads 2] [--images 64] [--batch-size 16] [--size 224]

Prints images/s for each arm and the ratios the foundation issue sets targets for:
visctl / plain grad-cam (target >= 2.5x) and visctl / bare forward (target >= 0.8x); and the time of
`visctl --help` in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch
    import torchvision
    from pytorch_grad_cam import GradCAM
    
    from visctl import cams

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    data = torch.randn(args.images, 3, args.size, args.size)
    batches = list(data.split(args.batch_size))

    def bare() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    def plain() -> list:
        out = []
        with GradCAM(model, [model.layer4[-1]]) as cam:
            for b in batches:
                out.append(cam(b, None))
        return out

    engine = cams.CamEngine(model, cams.Method.gradcam, ["layer4.1"], [cams.Layout("nchw")])

    def visctl() -> list:
        return [engine(b, [cams.RankTarget(0) for _ in range(len(b))])[0] for b in batches]

    bare(), visctl()  # warm-up
    t = interleaved({"bare": bare, "plain": plain, "visctl": visctl}, args.repeats)
    t_bare, t_plain, t_visctl = t["bare"], t["plain"], t["visctl"]
    same = max(float(np.abs(a - b).max()) for a, b in zip(plain(), visctl()))

    n = args.images
    print(f"resnet18, {n} images at {args.size} px, batch {args.batch_size}, {args.threads} thread(s), CPU")
    print(f"  bare no-grad forward : {n / t_bare:7.1f} images/s")
    print(f"  plain grad-cam       : {n / t_plain:7.1f} images/s")
    print(f"  visctl GradCAM       : {n / t_visctl:7.1f} images/s")
    print(f"  visctl / plain grad-cam : {t_plain / t_visctl:.2f}x   (target >= 2.5x)")
    print(f"  visctl / bare forward   : {t_bare / t_visctl:.2f}x   (target >= 0.8x)")
    print(f"  max |visctl - grad-cam| : {same:.2e}   (must be <= 1e-5)")

    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "visctl", "--help"], check=True, capture_output=True)
    print(f"  visctl --help           : {time.perf_counter() - t:.2f} s (fresh interpreter)")


if __name__ == "__main__":
    main()
