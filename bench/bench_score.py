"""The cost of `cam --score`: per image, the faithfulness scores of 6 methods' maps, against the way they were
computed before (grad-cam's metrics as they come) and against the maps themselves.

    python bench/bench_score.py [--images 2] [--size 224|64] [--threads 1] [--repeats 2]
    python bench/bench_score.py --quick      # 64 px demo classifier, one repeat (a smoke test)

At 224 px a torchvision resnet18 (random weights: nothing is downloaded), 64 px the demo classifier. Maps of
gradcam, gradcam++, xgradcam, eigencam, layercam and hirescam are made once; then three arms, interleaved,
best of ``--repeats``, thread count pinned for all (OMP/MKL via the environment before torch loads, and
torch.set_num_threads):

* ``maps``      : the 6 methods' CamEngine calls on the batch (what --score is compared with);
* ``before``    : the scores as visctl computed them before issue 24 (a copy below): grad-cam's
  ``ROADMostRelevantFirstAverage`` / ``ROADLeastRelevantFirstAverage`` (its lil_matrix system, ``spsolve``, a
  clean forward per percentile) and ``PerturbationConfidenceMetric`` for keep-top, deletion/insertion with
  torchvision's 2-D ``gaussian_blur``, each map scored on its own;
* ``visctl``    : visctl.faithfulness.Scorer on the batch, one call per method (as ``cam --score`` does).

The line per arm gives seconds per image (6 maps) and the ratio to ``before``; the last line checks that the
two agree (max difference of each score over the maps; ROAD's noise is drawn per image now, so ROAD agrees to
its noise, the other scores to float rounding).
"""

from __future__ import annotations

import argparse
import os
import sys

from _common import ROOT, interleaved

from visctl.choices import Method

METHODS = ("gradcam", "gradcam++", "xgradcam", "eigencam", "layercam", "hirescam")


def before(model, batch, maps, categories, steps=10, keep=20.0, percentiles=(20, 40, 60, 80), batch_size=32,
           seed=0):
    """visctl.faithfulness.score as of commit ee164b6 (the baseline), trimmed to what it computed."""
    import numpy as np
    import torch
    from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    from torchvision.transforms.v2 import functional as F

    class KeepTop:
        def __call__(self, image, mask):
            threshold = np.percentile(mask.numpy(), 100 - keep)
            kept = (mask >= threshold).to(image.dtype)
            return image * kept + image.mean(dim=(1, 2), keepdim=True) * (1 - kept)

    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in categories]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            morf = ROADMostRelevantFirstAverage(list(percentiles))(batch, maps, targets, model)
            lerf = ROADLeastRelevantFirstAverage(list(percentiles))(batch, maps, targets, model)
            kept = PerturbationConfidenceMetric(KeepTop())(batch, maps, targets, model)
            b, _c, h, w = batch.shape
            fractions = np.linspace(0.0, 1.0, steps + 1)
            ranks = np.argsort(-maps.reshape(b, -1), axis=1, kind="stable")
            sigma = max(1.0, min(batch.shape[2:]) / 10)
            k = int(2 * round(3 * sigma) + 1)
            blurred = F.gaussian_blur(batch, [k, k], [sigma, sigma])
            mean = batch.mean(dim=(2, 3), keepdim=True).expand_as(batch)
            curves = {"deletion": np.zeros((b, steps + 1)), "insertion": np.zeros((b, steps + 1))}
            jobs = [(kind, i, s) for i in range(b) for s in range(steps + 1) for kind in ("deletion", "insertion")]
            for start in range(0, len(jobs), batch_size):
                chunk = jobs[start:start + batch_size]
                images = []
                for kind, i, s in chunk:
                    top = torch.zeros(h * w)
                    top[torch.from_numpy(ranks[i, :int(round(fractions[s] * h * w))])] = 1
                    top = top.view(1, h, w)
                    images.append(batch[i] * (1 - top) + mean[i] * top if kind == "deletion"
                                  else blurred[i] * (1 - top) + batch[i] * top)
                probs = model(torch.stack(images)).float().softmax(-1)
                for (kind, i, s), p in zip(chunk, probs):
                    curves[kind][i, s] = float(p[categories[i]])
    finally:
        torch.random.set_rng_state(state)
    trapezoid = np.trapezoid if hasattr(np, "trapezoid") else np.trapz
    auc = {kind: trapezoid(v, fractions, axis=1) for kind, v in curves.items()}
    return [dict(road_combined=(float(np.ravel(lerf)[i]) - float(np.ravel(morf)[i])) / 2,
                 road_morf=float(np.ravel(morf)[i]), road_lerf=float(np.ravel(lerf)[i]),
                 deletion_auc=float(auc["deletion"][i]), insertion_auc=float(auc["insertion"][i]),
                 keep_top_change=float(np.ravel(kept)[i])) for i in range(b)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, choices=(64, 224))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="64 px, one repeat: a smoke test, figures meaningless")
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeats = 64, 1
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before torch/numpy load
        os.environ[name] = str(args.threads)
    sys.path.insert(0, str(ROOT))

    import torch

    from visctl import building, cams, checkpoints, config, faithfulness, shapes, transforms

    torch.set_num_threads(args.threads)
    if args.size == 64:
        cfg = config.load_config(str(ROOT / "examples/demo_classifier/config.py"))
        model, _ = checkpoints.load_model(cfg, None)
        layer = "backbone.layer4"
    else:
        model = building.build_model(dict(type="resnet18")).eval()
        layer = "layer4"
    states = [transforms.ImageState(img=shapes.make_scene(s, size=args.size).image)
              for s in range(100_000, 100_000 + args.images)]
    batch = transforms.to_tensor(states, config.IMAGENET_MEAN, config.IMAGENET_STD, True)
    setup = cams.plan(model, batch[:1], [layer], None, None)
    engines = [cams.CamEngine(model, Method(m), setup.layers, setup.layouts, batch_size=args.images)
               for m in METHODS]
    logits_model = cams.build_cam_model(model, "none")
    with torch.no_grad():
        cats = logits_model(batch).argmax(-1).tolist()
    targets = [cams.ClassTarget(c) for c in cats]
    maps = [engine(batch, targets)[0] for engine in engines]
    results: dict[str, list] = {}

    def new() -> None:
        scorer = faithfulness.Scorer(logits_model, batch)
        results["visctl"] = [s.__dict__ for m in maps for s in scorer(m, cats)]

    def old() -> None:
        results["before"] = [s for m in maps for s in before(logits_model, batch, m, cats)]

    best = interleaved({"maps": lambda: [engine(batch, targets) for engine in engines], "before": old,
                        "visctl": new}, repeats=args.repeats)
    per = {k: v / args.images for k, v in best.items()}
    print(f"{args.images} image(s) at {args.size} px, {len(METHODS)} methods, {args.threads} thread(s), "
          f"best of {args.repeats}:")
    for arm in ("maps", "before", "visctl"):
        print(f"  {arm:<7} {per[arm]:8.2f} s/image  ({per[arm] / per['before']:.2f}x before, "
              f"{per[arm] / per['maps']:.1f}x the maps)")
    print(f"  --score: {per['before'] / per['visctl']:.2f}x faster than before "
          f"({faithfulness.FORWARDS_PER_IMAGE} + {len(METHODS)} x {faithfulness.forwards_per_map()} images "
          f"forwarded per image, before {len(METHODS)} x 40)")
    diff = {k: max(abs(a[k] - b[k]) for a, b in zip(results["visctl"], results["before"]))
            for k in faithfulness.SCORES}
    print("  max |visctl - before| over the maps: " + ", ".join(f"{k} {v:.1e}" for k, v in diff.items()))


if __name__ == "__main__":
    main()
