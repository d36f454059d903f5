"""The cost of `cam --score`: per image, faithfulness scores of a GradCAM map vs the map itself.

    python bench/bench_score.py [--images 16] [--size 64|224] [--threads 2]

Arms (interleaved, best of 3, thread count pinned for both): GradCAM on the demo classifier's batch, and the
scores of those maps (ROAD at 4 percentiles with grad-cam's imputer, deletion/insertion in 10 steps,
keep-top-20 %). At 224 px a torchvision resnet18 (random weights) is used instead; ROAD's sparse solves grow
with the pixel count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import interleaved

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from visctl import cams, config, faithfulness, models, shapes, transforms

    torch.set_num_threads(args.threads)
    if args.size == 64:
        cfg = config.load_config(str(ROOT / "examples/demo_classifier/config.py"))
        model, _ = models.load_model(cfg, None)
        layer = "backbone.layer4"
    else:
        model = models.build_model(dict(type="resnet18")).eval()
        layer = "layer4"
    states = [transforms.ImageState(img=shapes.make_scene(s, size=args.size).image)
              for s in range(100_000, 100_000 + args.images)]
    batch = transforms.to_tensor(states, config.IMAGENET_MEAN, config.IMAGENET_STD, True)
    setup = cams.plan(model, batch[:1], [layer], None, None)
    engine = cams.CamEngine(model, cams.Method.gradcam, setup.layers, setup.layouts, batch_size=args.images)
    logits_model = cams.build_cam_model(model, "none")
    with torch.no_grad():
        cats = logits_model(batch).argmax(-1).tolist()
    maps, _ = engine(batch, [cams.ClassTarget(c) for c in cats])
    best = interleaved({
        "gradcam": lambda: engine(batch, [cams.ClassTarget(c) for c in cats]),
        "score": lambda: faithfulness.score(logits_model, batch, maps, cats, batch_size=32),
    }, repeats=3)
    per = {k: v / args.images * 1000 for k, v in best.items()}
    print(f"{args.images} images at {args.size} px, {args.threads} thread(s): GradCAM {per['gradcam']:.1f} ms/image, "
          f"--score {per['score']:.1f} ms/image -> --score costs {per['score'] / per['gradcam']:.1f}x the map "
          f"({faithfulness.forwards_per_map()} extra forwards per map)")


if __name__ == "__main__":
    main()
