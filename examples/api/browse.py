"""A dataset after its whole pipeline, with class names: the demo shapes written as class folders, browsed
as `visctl browse` shows them (labelled grid pages)."""

import tempfile
from pathlib import Path

import visctl
from visctl.shapes import write_scenes

root = Path(tempfile.mkdtemp())
write_scenes(root / "train", range(8))  # <class>/<seed>.png
config = dict(train_dataloader=dict(dataset=dict(
    type="ImageFolder", root=str(root / "train"),
    pipeline=[dict(type="RandomResizedCrop", scale=64), dict(type="RandomFlip", prob=0.5)])))
result = visctl.browse(config, number=6, rows=2, cols=2)
for sample in result.samples:
    print(sample.caption, sample.views[0].shape)
print("pages:", [f.name for f in result.figures()])
