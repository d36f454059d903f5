"""Grad-CAM and LayerCAM of the demo classifier on a generated image: the maps come back as arrays at the
image's size (``result[0].maps[(method, class)]``); ``result.save(folder)`` writes what ``visctl cam`` writes."""

import sys
import tempfile
from pathlib import Path

import visctl
from visctl.shapes import make_scene

CONFIG = Path(__file__).resolve().parents[1] / "demo_classifier" / "config.py"

scene = make_scene(seed=100_000, size=96)  # an RGB numpy image with one shape, and its box
result = visctl.cam(scene.image, CONFIG, method="gradcam,layercam", topk=2)
item = result[0]
for (method, cls), fmap in item.maps.items():
    print(f"{method} class {cls}: map {fmap.shape} {fmap.dtype}, peak at {divmod(int(fmap.argmax()), fmap.shape[1])}")
print("top class:", item.targets[0], "p =", round(float(item.probabilities.max()), 3))

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
print("written:", result.save(out))
