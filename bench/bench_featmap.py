"""Feature-map extraction throughput vs the bare forward, same batches, same threads.

    python bench/bench_featmap.py [--threads 2] [--images 64] [--batch-size 16]

visctl's arm: hooks on resnet18 layer3 and layer4, a no-grad forward, squeeze_mean reduction and the map
carried back onto the (224 px) original, per image and layer. Target: >= 0.7x the bare forward.
"""

from __future__ import annotations

import argparse

from _common import interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch
    import torchvision

    from visctl import featmaps, transforms

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    images = [np.random.default_rng(i).integers(0, 255, (224, 224, 3), dtype=np.uint8) for i in range(args.images)]
    steps = [dict(type="Resize", scale=(224, 224))]
    states = [transforms.run_pipeline(img, steps) for img in images]
    batches = [transforms.to_tensor(states[i:i + args.batch_size], (0, 0, 0), (255, 255, 255), True)
               for i in range(0, len(states), args.batch_size)]
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
                    (_, m), = featmaps.reduce(f[i], featmaps.Reduction.squeeze_mean)
                    transforms.to_original(m, states[bi * args.batch_size + i], (224, 224))

    bare(), visctl()
    t = interleaved({"bare": bare, "visctl": visctl}, args.repeats)
    t_bare, t_visctl = t["bare"], t["visctl"]
    n = args.images
    print(f"resnet18 layer3+layer4, {n} images at 224 px, batch {args.batch_size}, {args.threads} thread(s), CPU")
    print(f"  bare no-grad forward : {n / t_bare:7.1f} images/s")
    print(f"  visctl featmap       : {n / t_visctl:7.1f} images/s")
    print(f"  visctl / bare forward: {t_bare / t_visctl:.2f}x   (target >= 0.7x)")


if __name__ == "__main__":
    main()
