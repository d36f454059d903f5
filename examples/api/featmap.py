"""Feature maps of the demo classifier's last stage on a generated image: float32 maps at the image's size,
and the figures ``visctl featmap`` would write (``result.save(folder)`` writes them)."""

import sys
import tempfile
from pathlib import Path

import visctl
from visctl.shapes import make_scene

ROOT = Path(__file__).resolve().parents[2]

scene = make_scene(100_000)  # an RGB image (numpy) with one shape in it
result = visctl.featmap(scene.image, ROOT / "examples" / "demo_classifier" / "config.py",
                        target_layers=["backbone.layer4"], channel_reduction="select_max",
                        options=visctl.RunOptions(device="cpu"))
layer = result.images[0]["backbone.layer4"]
fmap = layer.maps[0]
print(f"{layer.layer}: {fmap.channel}, {fmap.array.shape} {fmap.array.dtype}, peak at "
      f"{tuple(int(v) for v in divmod(int(fmap.array.argmax()), fmap.array.shape[1]))}, box {scene.boxes[0]}")
with tempfile.TemporaryDirectory() as folder:
    manifest = result.save(Path(sys.argv[1]) if len(sys.argv) > 1 else folder)
    print("wrote", [p.name for p in sorted(manifest.parent.iterdir())])
