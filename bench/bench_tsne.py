"""t-SNE: visctl's embedding of 10,000 x 512 features vs scikit-learn's TSNE with default arguments; feature
extraction as a whole `visctl tsne` run vs a forward-only loop; the extraction arithmetic alone. Each pair in
the same run with the same threads.

    python bench/bench_tsne.py [--threads 1,all] [--points 10000] [--small 64] [--large 256]
    python bench/bench_tsne.py --only whole      # the whole-run extraction figure only
    python bench/bench_tsne.py --quick           # a smoke test in under a minute (figures meaningless)

Embedding: target >= 2x faster than scikit-learn. Whole run (fresh processes, a CustomDataset of photo-like
JPEGs in 4 class folders, the marginal per-image cost from two dataset sizes, see bench/_common.py):
``python -m visctl tsne CFG --target-layers layer4 --method pca`` (torchvision resnet18, random weights,
Resize 224; PCA so that the embedding, k-NN figures and plot add next to nothing per image) vs
bench/forward_loop.py on the same files (read + resize + bare no-grad forward). Target: >= 0.9x.
Arithmetic: hooks + avg-pooling on in-memory batches vs the bare forward (no target of its own).
"""


from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    HERE,
    fresh_runs,
    header,
    interleaved,
    make_images,
    ratio_line,
    share_of_baseline,
    thread_counts,
    thread_env,
    whole_run_arguments,
)

CONFIG = """model = dict(type='torchvision.resnet18')
data_preprocessor = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(224, 224)), dict(type='PackInputs')]
test_dataloader = dict(batch_size={batch}, dataset=dict(type='CustomDataset', data_root={root!r},
                       pipeline=test_pipeline))
"""


def embed(threads: int, points: int) -> None:
    import numpy as np
    from sklearn.manifold import TSNE

    from visctl import embedding

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (10, 512))
    x = (centers[rng.integers(0, 10, points)] + rng.normal(0, 1, (points, 512))).astype(np.float32)
    t = time.perf_counter()
    ours, how = embedding.embed(x, embedding.EmbedMethod.tsne, seed=0, threads=threads)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    TSNE(n_jobs=threads).fit_transform(x)
    t_sk = time.perf_counter() - t
    print(f"embedding {points} x 512, {threads} thread(s)")
    print(f"  visctl ({how}) : {t_ours:6.1f} s")
    print(f"  scikit-learn TSNE defaults : {t_sk:6.1f} s")
    print(ratio_line("speed-up                  ", t_sk / t_ours, ">= 2x", t_sk / t_ours >= 2))


def arithmetic(threads: int, images: int) -> None:
    import torch
    import torchvision

    from visctl import embedding, featmaps
    from visctl.choices import Pooling

    torch.set_num_threads(threads)
    model = torchvision.models.resnet18(weights=None).eval()
    batches = list(torch.randn(images, 3, 224, 224).split(32))

    def bare() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    def extract() -> None:
        for b in batches:
            feats = featmaps.capture(model, {"layer4": model.layer4}, b)
            embedding.pool(feats["layer4"], Pooling.avg).numpy()

    bare(), extract()
    tt = interleaved({"bare": bare, "extract": extract}, 3)
    print(f"extraction arithmetic, resnet18 layer4 avg-pooled, {images} in-memory images at 224 px, "
          f"{threads} thread(s)")
    print(f"  bare forward   : {images / tt['bare']:7.1f} images/s")
    print(f"  visctl extract : {images / tt['extract']:7.1f} images/s")
    print(f"  ratio          : {tt['bare'] / tt['extract']:.2f}x   (in memory, no target)")


def dataset(work: Path, n: int, side: int, batch: int) -> tuple[Path, Path]:
    """A 4-class CustomDataset of ``n`` images and a config that reads it: (root, config)."""
    root = work / f"tsne{side}_{n}"
    for k in range(4):
        make_images(root / f"class{k}", len(range(k, n, 4)), side, start=1000 * k)
    cfg = work / f"tsne{side}_{n}.py"
    cfg.write_text(CONFIG.format(batch=batch, root=str(root)))
    return root, cfg


def whole_run(threads: int, small: int, large: int, side: int, batch_size: int, repeats: int, work: Path) -> None:
    out = work / "out-tsne"
    commands = {}
    for n in (small, large):
        root, cfg = dataset(work, n, side, batch_size)
        commands[f"visctl/{n}"] = [sys.executable, "-m", "visctl", "tsne", str(cfg), "--target-layers", "layer4",
                                   "--method", "pca", "--max-num-samples-per-class", str(n), "--device", "cpu", "--threads",
                                   str(threads), "--batch-size", str(batch_size), "-o", str(out), "--quiet"]
        commands[f"forward/{n}"] = [sys.executable, str(HERE / "forward_loop.py"), str(root), "--threads",
                                    str(threads), "--batch-size", str(batch_size)]
    t = fresh_runs(commands, thread_env(threads), repeats, before=lambda: shutil.rmtree(out, ignore_errors=True))
    print(header(f"whole run: tsne feature extraction, resnet18 layer4, JPEG ~{side} px, batch {batch_size}",
                 threads, small, large, repeats))
    share_of_baseline(t, "visctl tsne --method pca", "forward-only loop", "forward", small, large, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=256, help="arithmetic: in-memory images")
    whole_run_arguments(parser, 64, 256, 300, batch_size=32, batch_help="visctl tsne's default")
    parser.add_argument("--only", choices=("embed", "whole", "arith"), default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep the generated images here")
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 1 min); the figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.points, args.images, args.small, args.large, args.side, args.repeats, args.batch_size = \
            "1", 200, 4, 4, 8, 96, 1, 4
    with tempfile.TemporaryDirectory(prefix="bench-tsne-") as tmp:
        for threads in thread_counts(args.threads):
            # --quick leaves the embedding out: openTSNE's first call compiles (numba) for ~20 s
            if args.only == "embed" or (args.only is None and not args.quick):
                embed(threads, args.points)
            if args.only in (None, "whole"):
                whole_run(threads, args.small, args.large, args.side, args.batch_size, args.repeats,
                          args.work or Path(tmp))
            if args.only in (None, "arith"):
                arithmetic(threads, args.images)


if __name__ == "__main__":
    main()
