"""Feature maps: the whole `visctl featmap` run vs a forward-only loop, and the extraction arithmetic alone.

    python bench/bench_featmap.py [--small 32] [--large 160] [--threads 1,all] [--repeats 2]
    python bench/bench_featmap.py --quick          # a smoke test in under a minute (figures meaningless)
    python bench/bench_featmap.py --only arith     # the in-memory arithmetic only

Whole run (fresh processes, photo-like JPEGs of ``--side`` px on disk, thread count pinned for both arms, the
marginal per-image cost from two input sizes, see bench/_common.py):

* ``visctl``  : ``python -m visctl featmap DIR torchvision.resnet18 --target-layers layer3,layer4 -o OUT``
  (squeeze_mean maps of both layers overlaid on each image, PNG panels and manifest written);
* ``forward`` : bench/forward_loop.py, read + resize to 224 + bare no-grad forward of the same resnet18,
  nothing written. Target: visctl >= 0.8x its speed.

Arithmetic: hooks on resnet18 layer3 and layer4, a no-grad forward, squeeze_mean reduction and the map
carried back onto the (224 px) original, per image and layer, vs the bare forward on the same in-memory
batches (no reading, no drawing, no writing).
"""


from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _common import (
    HERE,
    fresh_runs,
    header,
    image_sets,
    interleaved,
    share_of_baseline,
    thread_counts,
    thread_env,
    whole_run_arguments,
)


def arithmetic(threads: int, count: int, batch_size: int, repeats: int) -> None:
    import numpy as np
    import torch
    import torchvision

    from visctl import featmaps, transforms
    from visctl.choices import Reduction

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    images = [np.random.default_rng(i).integers(0, 255, (224, 224, 3), dtype=np.uint8) for i in range(count)]
    steps = [dict(type="Resize", scale=(224, 224))]
    states = [transforms.run_pipeline(img, steps) for img in images]
    batches = [transforms.to_tensor(states[i:i + batch_size], (0, 0, 0), (255, 255, 255), True)
               for i in range(0, len(states), batch_size)]
    layers = {"layer3": model.layer3, "layer4": model.layer4}

    def bare() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    def visctl() -> None:
        for bi, b in enumerate(batches):
            feats = featmaps.capture(model, layers, b)
            for label, t in feats.items():
                f = featmaps.to_nchw(t, (224, 224), label)
                for i in range(f.shape[0]):
                    (_, m), = featmaps.reduce(f[i], Reduction.squeeze_mean)
                    transforms.to_original(m, states[bi * batch_size + i], (224, 224))

    bare(), visctl()
    t = interleaved({"bare": bare, "visctl": visctl}, repeats)
    t_bare, t_visctl = t["bare"], t["visctl"]
    n = count
    print(f"arithmetic: resnet18 layer3+layer4, {n} images at 224 px, batch {batch_size}, {threads} thread(s), CPU")
    print(f"  bare no-grad forward : {n / t_bare:7.1f} images/s")
    print(f"  visctl featmap       : {n / t_visctl:7.1f} images/s")
    print(f"  visctl / bare forward: {t_bare / t_visctl:.2f}x   (in memory, no target)")


def whole_run(threads: int, small: int, large: int, side: int, batch_size: int, repeats: int, work: Path) -> None:
    sets = image_sets(work, sorted({small, large}), side)
    out = work / "out-featmap"
    commands = {}
    for n in (small, large):
        commands[f"visctl/{n}"] = [sys.executable, "-m", "visctl", "featmap", str(sets[n]), "torchvision.resnet18",
                                   "--target-layers", "layer3,layer4", "--device", "cpu", "--threads", str(threads),
                                   "--batch-size", str(batch_size), "-o", str(out), "--quiet"]
        commands[f"forward/{n}"] = [sys.executable, str(HERE / "forward_loop.py"), str(sets[n]), "--threads",
                                    str(threads), "--batch-size", str(batch_size)]
    t = fresh_runs(commands, thread_env(threads), repeats, before=lambda: shutil.rmtree(out, ignore_errors=True))
    print(header(f"whole run: resnet18 featmap layer3+layer4, JPEG ~{side} px, batch {batch_size}",
                 threads, small, large, repeats))
    share_of_baseline(t, "visctl featmap", "forward-only loop", "forward", small, large, 0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    whole_run_arguments(parser, 32, 160, 300, batch_size=16)
    parser.add_argument("--images", type=int, default=64, help="arithmetic: in-memory images")
    parser.add_argument("--only", choices=("whole", "arith"), default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep the generated images here")
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 1 min); the figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.small, args.large, args.side, args.repeats, args.images, args.batch_size = \
            "1", 1, 3, 128, 1, 4, 4
    with tempfile.TemporaryDirectory(prefix="bench-featmap-") as tmp:
        for threads in thread_counts(args.threads):
            if args.only != "arith":
                whole_run(threads, args.small, args.large, args.side, args.batch_size, args.repeats,
                          args.work or Path(tmp))
            if args.only != "whole":
                arithmetic(threads, args.images, args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
