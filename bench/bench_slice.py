"""Sliced inference: tiles/s batched vs one tile at a time (same run, same threads), and the peak memory of
`visctl slice` on a 10000 x 10000 image.

    python bench/bench_slice.py [--threads 2] [--skip-huge]

The demo detector on 128 px tiles of a generated 1024 x 1024 scene. Target: batched >= 1.5x one at a time.
sahi is not compared: it needs opencv-python, which clashes with grad-cam's opencv-python-headless (README).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import interleaved

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
    from visctl.models import load_model
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
    if args.skip_huge:
        return
    with tempfile.TemporaryDirectory() as tmp:
        huge = Path(tmp) / "huge.png"
        canvas = np.zeros((10_000, 10_000, 3), np.uint8)
        tile = make_scene(5, 1000, n_objects=40, min_side=12, max_side=30).image
        canvas[:] = np.tile(tile, (10, 10, 1))
        cv2.imwrite(str(huge), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        del canvas
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "visctl", "slice", str(huge), str(CFG), "--patch-size", "512",
                        "--batch-size", "8", "--threads", str(args.threads), "-o", str(Path(tmp) / "out"), "-q"],
                       check=True, capture_output=True, env={**os.environ})
        elapsed = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"10000 x 10000 image, 512 px tiles: {elapsed:.1f} s, peak RSS {peak:.0f} MiB "
              f"(the decoded image alone is {10_000 * 10_000 * 3 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
