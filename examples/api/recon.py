"""Mask an image's patches and see what the demo masked autoencoder rebuilds; print the masked-patch MSE
against the mean-colour baseline, and save the CLI's figures and manifest (``visctl recon``) into a folder."""

import sys
import tempfile
from pathlib import Path

import visctl
from visctl.shapes import make_scene

config = Path(__file__).resolve().parents[1] / "demo_mae" / "config.py"
image = make_scene(7, size=64).image  # an RGB uint8 array; paths, folders and PIL images work too
result = visctl.recon(image, str(config), mask_ratio=0.75, seed=0)
for item in result.images:
    print(f"{Path(item.path).name}: masked-patch MSE {item.mse:.4f} (mean fill {item.mean_fill_mse:.4f}), "
          f"{item.mask.sum()} of {item.mask.size} patches masked")
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "recon"
print("saved", result.save(out))
