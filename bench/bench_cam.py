"""GradCAM speed: the whole `visctl cam` run as a user runs it, and the model arithmetic alone.

    python bench/bench_cam.py [--small 32] [--large 160] [--side 300] [--threads 1,all] [--repeats 2]
    python bench/bench_cam.py --quick        # a smoke test in under a minute (figures meaningless)
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

Each arm's line also gives the peak RSS of its process on the larger set (bench/_peak.py). Start-up: each
arm on one image (target: visctl <= 0.6x the grad-cam script's time). resnet18 with random weights
(weights=None): nothing is downloaded.

Model arithmetic: the same in-memory batches through the bare no-grad forward, plain grad-cam and visctl's
CamEngine (no reading, no drawing, no writing).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    HERE,
    arm_line,
    fresh_runs,
    header,
    image_sets,
    interleaved,
    marginal,
    ratio_line,
    thread_counts,
    thread_env,
    whole_run_arguments,
)


def arithmetic(threads: int, images: int, batch_size: int, size: int, repeats: int) -> None:
    import numpy as np
    import torch
    import torchvision
    from pytorch_grad_cam import GradCAM

    from visctl import cams
    from visctl.choices import Method
    from visctl.layers import Layout

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

    engine = cams.CamEngine(model, Method.gradcam, ["layer4.1"], [Layout("nchw")])

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


def whole_run(threads: int, small: int, large: int, side: int, batch_size: int, repeats: int,
              visctl_args: list[str], work: Path) -> None:
    sets = image_sets(work, sorted({1, small, large}), side)
    out = work / "out"

    def command(arm: str, n: int) -> list[str]:
        if arm == "visctl":
            return [sys.executable, "-m", "visctl", "cam", str(sets[n]), "torchvision.resnet18",
                    "--target-layers", "layer4.1", "--device", "cpu", "--threads", str(threads), "--batch-size", str(batch_size),
                    "-o", str(out), "--quiet", *visctl_args]
        if arm == "gradcam":
            return [sys.executable, str(HERE / "gradcam_script.py"), str(sets[n]), str(out), "--threads",
                    str(threads), "--batch-size", str(batch_size)]
        return [sys.executable, str(HERE / "forward_loop.py"), str(sets[n]), "--threads", str(threads),
                "--batch-size", str(batch_size)]

    arms = ("visctl", "gradcam", "forward")
    t = fresh_runs({f"{a}/{n}": command(a, n) for n in sorted({1, small, large}) for a in arms},
                   thread_env(threads), repeats, before=lambda: shutil.rmtree(out, ignore_errors=True))
    per = {a: marginal(t, a, small, large) for a in arms}
    print(header(f"whole run: resnet18 GradCAM layer4.1, JPEG ~{side} px, batch {batch_size}"
                 + (f", visctl {' '.join(visctl_args)}" if visctl_args else ""), threads, small, large, repeats))
    print(arm_line("visctl cam", t, "visctl", small, large))
    print(arm_line("grad-cam script (a)", t, "gradcam", small, large))
    print(arm_line("forward-only loop (b)", t, "forward", small, large))
    vs_a, vs_b = per["gradcam"] / per["visctl"], per["forward"] / per["visctl"]
    print(ratio_line("visctl vs grad-cam script (a), faster per image", vs_a, ">= 3x", vs_a >= 3))
    print(ratio_line("visctl vs forward-only (b), share of its speed", vs_b, ">= 0.8x", vs_b >= 0.8))
    start = t["visctl/1"][0] / t["gradcam/1"][0]
    print(f"  start-up, one image: visctl {t['visctl/1'][0]:.2f} s, grad-cam script {t['gradcam/1'][0]:.2f} s, "
          f"forward-only {t['forward/1'][0]:.2f} s")
    print(ratio_line("start-up visctl / grad-cam script", start, "<= 0.6x", start <= 0.6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    whole_run_arguments(parser, 32, 160, 300, batch_size=16)
    parser.add_argument("--only", choices=("whole", "arith"), default=None)
    parser.add_argument("--visctl-args", default="", help="extra visctl cam options, e.g. '--format jpg'")
    parser.add_argument("--images", type=int, default=64, help="model arithmetic: in-memory images")
    parser.add_argument("--size", type=int, default=224, help="model arithmetic: input side")
    parser.add_argument("--work", type=Path, default=None, help="keep the generated images here (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 1 min): 1 thread, 1 vs 3 images, "
                        "one repeat, 4 in-memory images; the figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.small, args.large, args.side, args.repeats = "1", 1, 3, 128, 1
        args.images, args.batch_size = 4, 4
    with tempfile.TemporaryDirectory(prefix="bench-cam-") as tmp:
        work = args.work or Path(tmp)
        for threads in thread_counts(args.threads):
            if args.only != "arith":
                whole_run(threads, args.small, args.large, args.side, args.batch_size, args.repeats,
                          args.visctl_args.split(), work)
            if args.only != "whole":
                arithmetic(threads, args.images, args.batch_size, args.size, args.repeats)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "visctl", "--help"], check=True, capture_output=True, env=thread_env(1))
    print(f"visctl --help: {time.perf_counter() - t:.2f} s (fresh interpreter)")


if __name__ == "__main__":
    main()
