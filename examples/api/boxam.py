"""Box-level activation maps of the demo detector on a generated scene: each kept box (original pixels), its
score and label, and one float32 map per box at the image's size."""

import sys
import tempfile
from pathlib import Path

import visctl
from visctl.shapes import make_scene

ROOT = Path(__file__).resolve().parents[2]

scene = make_scene(200_002, 128, n_objects=3, min_side=10, max_side=36)  # RGB numpy image with 3 shapes
result = visctl.boxam(scene.image, ROOT / "examples" / "demo_detector" / "config.py", per_box=True,
                      options=visctl.RunOptions(device="cpu"))
img = result.images[0]
for k, (box, score, label, fmap) in enumerate(zip(img.boxes, img.scores, img.labels, img.maps)):
    y, x = divmod(int(fmap.argmax()), fmap.shape[1])
    print(f"box {k}: {[round(float(v), 1) for v in box]} class {label} score {score:.2f}, map peak at x={x} y={y}")
with tempfile.TemporaryDirectory() as folder:
    manifest = result.save(Path(sys.argv[1]) if len(sys.argv) > 1 else folder)
    print("wrote", [p.name for p in sorted(manifest.parent.iterdir())])
