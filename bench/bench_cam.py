"""GradCAM speed: the whole `visctl cam` run as a user runs it, and the model arithmetic alone.

    python bench/bench_cam.py [--small 16] [--large 64] [--side 300] [--threads 1,all] [--repeats 2]
    python bench/bench_cam.py --only arith   # the model arithmetic only (the earlier figures)
    python bench/bench_cam.py --only whole --visctl-args="--format jpg"

Whole run: fresh processes on JPEG images on disk (``--side`` px, photo-like), outputs written. Each arm runs
on ``--small`` and on ``--large`` images; the difference divided by the difference in count is the marginal
cost of one image, start-up cancelled. Three arms, interleaved, best of ``--repeats``, the thread count
pinned for each (OMP_NUM_THREADS/MKL_NUM_THREADS, torch.set_num_threads, cv2.setNumThreads, visctl
--threads):

* ``visctl``  : ``python -m visctl cam DIR torchvision.resnet18 --target-layers layer4.1 -o OUT`` (the
  default figure: original + overlay panels, PNG);
* ``gradcam`` : bench/gradcam_script.py, a plain batched pytorch_grad_cam.GradCAM script that writes a
  224-px overlay per image (target: visctl >= 3x faster per image);
* ``forward`` : bench/forward_loop.py, read + resize + bare no-grad forward, nothing written (the limit;
  target: visctl >= 0.8x its speed).

Start-up: each arm on one image. resnet18 with random weights (weights=None): nothing is downloaded.

Model arithmetic: the same in-memory batches through the bare no-grad forward, plain grad-cam and visctl's
CamEngine (no reading, no drawing, no writing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import interleaved

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def arithmetic(threads: int, images: int, batch_size: int, size: int, repeats: int) -> None:
    import numpy as np
    import torch
    import torchvision
    from pytorch_grad_cam import GradCAM

    from visctl import cams

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    data = torch.randn(images, 3, size, size)
    batches = list(data.split(batch_size))

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
    t = interleaved({"bare": bare, "plain": plain, "visctl": visctl}, repeats)
    t_bare, t_plain, t_visctl = t["bare"], t["plain"], t["visctl"]
    same = max(float(np.abs(a - b).max()) for a, b in zip(plain(), visctl()))
    n = images
    print(f"model arithmetic: resnet18, {n} in-memory images at {size} px, batch {batch_size}, {threads} thread(s), CPU")
    print(f"  bare no-grad forward : {n / t_bare:7.1f} images/s")
    print(f"  plain grad-cam       : {n / t_plain:7.1f} images/s")
    print(f"  visctl GradCAM       : {n / t_visctl:7.1f} images/s")
    print(f"  visctl / plain grad-cam : {t_plain / t_visctl:.2f}x   (target >= 2.5x)")
    print(f"  visctl / bare forward   : {t_bare / t_visctl:.2f}x   (target >= 0.8x)")
    print(f"  max |visctl - grad-cam| : {same:.2e}   (must be <= 1e-5)")


def make_images(folder: Path, count: int, side: int) -> None:
    """Photo-like JPEGs: smooth multi-scale texture and a few shapes (noise alone would make PNGs too big)."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = side, side + int(rng.integers(-40, 41))
        img = np.zeros((h, w, 3), np.float32)
        for scale in (4, 16, 64):
            coarse = rng.random((max(2, h // scale), max(2, w // scale), 3)).astype(np.float32)
            img += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * (scale / 84)
        img = np.clip(img * 255, 0, 255).astype(np.uint8)
        for _ in range(3):
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(10, side // 4)), c, -1)
        cv2.imwrite(str(folder / f"img{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def whole_run(threads: int, small: int, large: int, side: int, batch_size: int, repeats: int,
              visctl_args: list[str], work: Path) -> None:
    sets = {}
    for n in (1, small, large):
        sets[n] = work / f"in{n}"
        if not sets[n].exists():
            make_images(sets[n], n, side)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = work / "out"

    def command(arm: str, n: int) -> list[str]:
        if arm == "visctl":
            return [sys.executable, "-m", "visctl", "cam", str(sets[n]), "torchvision.resnet18",
                    "--target-layers", "layer4.1", "--threads", str(threads), "--batch-size", str(batch_size),
                    "-o", str(out), "--quiet", *visctl_args]
        if arm == "gradcam":
            return [sys.executable, str(HERE / "gradcam_script.py"), str(sets[n]), str(out), "--threads",
                    str(threads), "--batch-size", str(batch_size)]
        return [sys.executable, str(HERE / "forward_loop.py"), str(sets[n]), "--threads", str(threads),
                "--batch-size", str(batch_size)]

    def runner(arm: str, n: int):
        def run() -> None:
            shutil.rmtree(out, ignore_errors=True)
            done = subprocess.run(command(arm, n), env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{arm} on {n} images failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return run

    arms = ("visctl", "gradcam", "forward")
    t = interleaved({f"{a}/{n}": runner(a, n) for n in (1, small, large) for a in arms}, repeats)
    per = {a: (t[f"{a}/{large}"] - t[f"{a}/{small}"]) / (large - small) for a in arms}
    print(f"whole run: resnet18 GradCAM layer4.1, JPEG ~{side} px, batch {batch_size}, {threads} thread(s), CPU; "
          f"marginal per image from {small} vs {large} images, best of {repeats}"
          + (f"; visctl {' '.join(visctl_args)}" if visctl_args else ""))
    for a, label in (("visctl", "visctl cam          "), ("gradcam", "grad-cam script     "),
                     ("forward", "forward-only loop   ")):
        print(f"  {label}: {per[a] * 1000:7.1f} ms/image   {1 / per[a]:6.1f} images/s   "
              f"({small}: {t[f'{a}/{small}']:.2f} s, {large}: {t[f'{a}/{large}']:.2f} s)")
    print(f"  visctl vs grad-cam script : {per['gradcam'] / per['visctl']:.2f}x faster per image   (target >= 3x)")
    print(f"  visctl vs forward-only    : {per['forward'] / per['visctl']:.2f}x of its speed   (target >= 0.8x)")
    print(f"  start-up, one image       : visctl {t['visctl/1']:.2f} s, grad-cam script {t['gradcam/1']:.2f} s, "
          f"forward-only {t['forward/1']:.2f} s; visctl / grad-cam = {t['visctl/1'] / t['gradcam/1']:.2f}x "
          "(target <= 0.6x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,all", help="comma-separated thread counts; all = every core")
    parser.add_argument("--small", type=int, default=16)
    parser.add_argument("--large", type=int, default=64)
    parser.add_argument("--side", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=("whole", "arith"), default=None)
    parser.add_argument("--visctl-args", default="", help="extra visctl cam options, e.g. '--format jpg'")
    parser.add_argument("--images", type=int, default=64, help="model arithmetic: in-memory images")
    parser.add_argument("--size", type=int, default=224, help="model arithmetic: input side")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = [cores if v.strip() == "all" else int(v) for v in args.threads.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-cam-") as tmp:
        for threads in dict.fromkeys(counts):
            if args.only != "arith":
                whole_run(threads, args.small, args.large, args.side, args.batch_size, args.repeats,
                          args.visctl_args.split(), Path(tmp))
            if args.only != "whole":
                arithmetic(threads, args.images, args.batch_size, args.size, args.repeats)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "visctl", "--help"], check=True, capture_output=True)
    print(f"visctl --help: {time.perf_counter() - t:.2f} s (fresh interpreter)")


if __name__ == "__main__":
    main()
