"""Sliced inference of the demo detector over a 512 px generated scene in 128 px tiles: the merged boxes in
the original image's pixels, scores, labels and COCO-style records."""

import sys
import tempfile
from pathlib import Path

import visctl
from visctl.shapes import make_scene

ROOT = Path(__file__).resolve().parents[2]

scene = make_scene(7, 512, n_objects=12, min_side=12, max_side=24)  # RGB numpy image with 12 small shapes
result = visctl.slice(scene.image, ROOT / "examples" / "demo_detector" / "config.py", patch_size=128,
                      debug=True, options=visctl.RunOptions(device="cpu"))
img = result.images[0]
print(f"{len(img.tiles)} tiles, {img.boxes_before_merge} boxes before the merge, {len(img.boxes)} after "
      f"({len(scene.boxes)} objects)")
for rec in result.results[:3]:
    print(rec["category"], rec["bbox"], rec["score"])
with tempfile.TemporaryDirectory() as folder:
    manifest = result.save(Path(sys.argv[1]) if len(sys.argv) > 1 else folder)
    print("wrote", [p.name for p in sorted(manifest.parent.iterdir())])
