"""Sliced inference: tiles/s batched vs one tile at a time (same run, same threads), and the peak memory of
`visctl slice` on a 10000 x 10000 image.

    python bench/bench_slice.py [--threads 2] [--skip-huge]

The demo detector on 128 px tiles of a generated 1024 x 1024 scene. Target: batched >= 1.5x one at a time.
With sahi importable, also the ratio to sahi's get_sliced_prediction with the same model (sahi runs a custom
model one slice at a time). sahi requires opencv-python, which would overwrite grad-cam's headless cv2, so
install it without its dependencies: pip install --no-deps sahi && pip install shapely fire requests
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import interleaved, run_measured, thread_env

from visctl.choices import Merge

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "examples" / "demo_detector" / "config.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-huge", action="store_true")
    args = parser.parse_args()

    import cv2
    import numpy as np
    import torch
    from mmengine.config import Config

    from visctl import config, detection, transforms
    from visctl.checkpoints import load_model
    from visctl.shapes import make_scene

    torch.set_num_threads(args.threads)
    cfg = Config.fromfile(str(CFG))
    model, _ = load_model(cfg, None)
    mean, std, rgb = config.normalization(cfg)
    img = make_scene(3, 1024, n_objects=60, min_side=12, max_side=24).image
    grid = detection.tiles(1024, 1024, 128, 0.25)

    def run(batch_size: int) -> None:
        for chunk in detection.tile_batches(img, grid, batch_size):
            states = [transforms.ImageState(img=t) for _, t in chunk]
            detection.detect(model, transforms.to_tensor(states, mean, std, rgb))

    run(8)
    t = interleaved({"one": lambda: run(1), "batched": lambda: run(16)}, 3)
    n = len(grid)
    print(f"demo detector, {n} tiles of 128 px (1024 x 1024 image, overlap 0.25), {args.threads} thread(s)")
    print(f"  one tile at a time : {n / t['one']:7.1f} tiles/s")
    print(f"  batches of 16      : {n / t['batched']:7.1f} tiles/s")
    print(f"  batched / single   : {t['one'] / t['batched']:.2f}x   (target >= 1.5x)")
    try:
        import sahi  # noqa: F401
    except ImportError:
        print("  sahi: not installed (see this script's docstring)")
    else:
        _sahi(model, img, mean, std, rgb, grid, args.repeats if hasattr(args, "repeats") else 3)
    if args.skip_huge:
        return
    with tempfile.TemporaryDirectory() as tmp:
        huge = Path(tmp) / "huge.png"
        canvas = np.zeros((10_000, 10_000, 3), np.uint8)
        tile = make_scene(5, 1000, n_objects=40, min_side=12, max_side=30).image
        canvas[:] = np.tile(tile, (10, 10, 1))
        cv2.imwrite(str(huge), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        del canvas
        # the child's own peak (bench/_peak.py): RUSAGE_CHILDREN would also count this process's RSS at the fork
        elapsed, peak_kib = run_measured(
            [sys.executable, "-m", "visctl", "slice", str(huge), str(CFG), "--patch-size", "512", "--batch-size", "8",
             "--threads", str(args.threads), "-o", str(Path(tmp) / "out"), "-q"], thread_env(args.threads))
        peak = peak_kib / 1024
        print(f"10000 x 10000 image, 512 px tiles: {elapsed:.1f} s, peak RSS {peak:.0f} MiB "
              f"(the decoded image alone is {10_000 * 10_000 * 3 / 2**20:.0f} MiB)")


def _sahi(model, img, mean, std, rgb, grid, repeats: int) -> None:  # noqa: ANN001
    import torch
    from sahi.models.torchvision import TorchVisionDetectionModel
    from sahi.predict import get_sliced_prediction

    from visctl import detection, transforms

    class DemoModel(TorchVisionDetectionModel):
        """sahi's torchvision adapter, fed the demo detector's normalisation."""

        def perform_inference(self, image, image_size=None):  # noqa: ANN001, ANN201
            batch = transforms.to_tensor([transforms.ImageState(img=image)], mean, std, rgb)
            with torch.no_grad():
                self._original_predictions = self.model(batch)

    names = {str(i): n for i, n in enumerate(["circle", "square", "triangle", "cross"])}
    sahi_model = DemoModel(model=model, confidence_threshold=0.3, category_mapping=names, device="cpu")

    def run_sahi() -> None:
        get_sliced_prediction(img, sahi_model, slice_height=128, slice_width=128, overlap_height_ratio=0.25,
                              overlap_width_ratio=0.25, perform_standard_pred=False, postprocess_type="GREEDYNMM",
                              postprocess_match_metric="IOS", postprocess_match_threshold=0.5, verbose=0)

    def run_visctl() -> None:
        parts = []
        for chunk in detection.tile_batches(img, grid, 16):
            states = [transforms.ImageState(img=t) for _, t in chunk]
            outs = detection.detect(model, transforms.to_tensor(states, mean, std, rgb))
            parts += [detection.to_original(o, s, offset=(b[0], b[1])) for (b, _), s, o in zip(chunk, states, outs)]
        dets = detection.Detections.concat(parts)
        detection.merge(dets.keep(dets.scores >= 0.3), Merge.nmm, 0.5, "ios")

    run_sahi()
    t = interleaved({"sahi": run_sahi, "visctl": run_visctl}, repeats)
    n = len(grid)
    print(f"  sahi get_sliced_prediction (GREEDYNMM/IOS): {n / t['sahi']:7.1f} tiles/s")
    print(f"  visctl slice, same merge                  : {n / t['visctl']:7.1f} tiles/s")
    print(f"  visctl / sahi                             : {t['sahi'] / t['visctl']:.2f}x")


if __name__ == "__main__":
    main()
