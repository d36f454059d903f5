"""Browsing: the whole `visctl browse` run vs bare DataLoader iteration over the same images.

    python bench/bench_browse.py [--small 64] [--large 320] [--side 256] [--threads 1,all] [--repeats 2]
    python bench/bench_browse.py --quick     # a smoke test in under a minute (figures meaningless)

Fresh processes on photo-like JPEGs of ``--side`` px in 5 class folders, the thread count pinned for both
arms (OMP/MKL in the environment, torch.set_num_threads in the baseline; browse has no --threads), the
marginal per-sample cost from two sample counts (see bench/_common.py):

* ``visctl``  : ``python -m visctl browse CFG -n N -o OUT`` on a config whose train pipeline is
  RandomResizedCrop(224) + RandomFlip + ColorJitter(0.4, 0.4, 0.4) (visctl's own crop/flip with geometry
  tracking, torchvision's ColorJitter), grids of 4 x 4 samples with class names written as pages;
* ``loader``  : bench/dataloader_loop.py, torchvision's ImageFolder with the same v2 transforms through a
  DataLoader (no workers, like browse's default), nothing written. Target: visctl >= 0.7x its speed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _common import HERE, fresh_runs, header, make_images, share_of_baseline, thread_counts, thread_env, whole_run_arguments

CONFIG = """train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', size=224),
    dict(type='RandomFlip', prob=0.5),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=16, dataset=dict(type='ImageFolder', root={root!r}, pipeline=train_pipeline))
"""


def whole_run(threads: int, small: int, large: int, side: int, repeats: int, work: Path) -> None:
    root = work / f"browse{side}_{large}"
    for k in range(5):
        make_images(root / f"class{k}", len(range(k, large, 5)), side, start=1000 * k)
    cfg = work / "browse_cfg.py"
    cfg.write_text(CONFIG.format(root=str(root)))
    out = work / "out-browse"
    commands = {}
    for n in (small, large):
        commands[f"visctl/{n}"] = [sys.executable, "-m", "visctl", "browse", str(cfg), "-n", str(n), "-o", str(out),
                                   "--quiet"]
        commands[f"loader/{n}"] = [sys.executable, str(HERE / "dataloader_loop.py"), str(root), "--threads",
                                   str(threads), "--number", str(n)]
    t = fresh_runs(commands, thread_env(threads), repeats, before=lambda: shutil.rmtree(out, ignore_errors=True))
    print(header(f"whole run: browse, JPEG {side} px, RandomResizedCrop(224) + flip + ColorJitter, no workers",
                 threads, small, large, repeats))
    share_of_baseline(t, "visctl browse", "bare DataLoader", "loader", small, large, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    whole_run_arguments(parser, 64, 320, 256)
    parser.add_argument("--work", type=Path, default=None, help="keep the generated images here")
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 1 min); the figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.small, args.large, args.side, args.repeats = "1", 4, 16, 96, 1
    with tempfile.TemporaryDirectory(prefix="bench-browse-") as tmp:
        for threads in thread_counts(args.threads):
            whole_run(threads, args.small, args.large, args.side, args.repeats, args.work or Path(tmp))


if __name__ == "__main__":
    main()
