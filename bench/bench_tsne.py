"""t-SNE: visctl's embedding of 10,000 x 512 features vs scikit-learn's TSNE with default arguments, and
feature extraction vs the bare forward, each pair in the same run with the same threads.

    python bench/bench_tsne.py [--threads 2] [--points 10000]

Targets: embedding >= 2x faster than scikit-learn; extraction >= 0.8x the bare forward.
"""

from __future__ import annotations

import argparse
import time

from _common import interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()

    import numpy as np
    import torch
    import torchvision
    from sklearn.manifold import TSNE

    from visctl import embedding, featmaps

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (10, 512))
    x = (centers[rng.integers(0, 10, args.points)] + rng.normal(0, 1, (args.points, 512))).astype(np.float32)
    t = time.perf_counter()
    ours, how = embedding.embed(x, embedding.EmbedMethod.tsne, seed=0, threads=args.threads)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    TSNE(n_jobs=args.threads).fit_transform(x)
    t_sk = time.perf_counter() - t
    print(f"embedding {args.points} x 512, {args.threads} thread(s)")
    print(f"  visctl ({how}) : {t_ours:6.1f} s")
    print(f"  scikit-learn TSNE defaults : {t_sk:6.1f} s")
    print(f"  speed-up                   : {t_sk / t_ours:6.2f}x   (target >= 2x)")

    model = torchvision.models.resnet18(weights=None).eval()
    batches = list(torch.randn(args.images, 3, 224, 224).split(32))

    def bare() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    def extract() -> None:
        for b in batches:
            feats = featmaps.capture(model, {"layer4": model.layer4}, b)
            embedding.pool(feats["layer4"], embedding.Pooling.avg).numpy()

    bare(), extract()
    tt = interleaved({"bare": bare, "extract": extract}, 3)
    print(f"extraction, resnet18 layer4 avg-pooled, {args.images} images at 224 px")
    print(f"  bare forward   : {args.images / tt['bare']:7.1f} images/s")
    print(f"  visctl extract : {args.images / tt['extract']:7.1f} images/s")
    print(f"  ratio          : {tt['bare'] / tt['extract']:.2f}x   (target >= 0.8x)")


if __name__ == "__main__":
    main()
