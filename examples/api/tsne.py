"""Embed the demo classifier's features of 40 generated shape images in 2-D (t-SNE), print how well the
classes separate (5-NN accuracy), and save the CLI's plot, page, CSV and features (``visctl tsne``)."""

import sys
import tempfile
from pathlib import Path

import visctl
from visctl.shapes import write_scenes

config = Path(__file__).resolve().parents[1] / "demo_classifier" / "config.py"
data = Path(tempfile.mkdtemp()) / "shapes"
write_scenes(data, range(100_000, 100_040))  # data/<class>/<seed>.png: one folder per class
result = visctl.tsne(str(config), max_num_samples_per_class=10, n_iter=500, perplexity=10, seed=0,
                     options=visctl.RunOptions(cfg_options=(f"test_dataloader.dataset.data_root={data}",)))
for layer in result.layers:
    print(f"{layer.label}: {layer.method}, 5-NN accuracy {layer.knn5_2d:.3f} in 2-D, "
          f"{layer.knn5_features:.3f} in feature space; coordinates {layer.coords.shape}")
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "tsne"
print("saved", result.save(out))
