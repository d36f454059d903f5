"""A data pipeline step by step on an image in memory: every intermediate image with its step's name, and the
figure `visctl pipeline --mode pipeline` draws of it."""

import visctl
from visctl.shapes import make_scene

config = dict(test_pipeline=[dict(type="ResizeEdge", scale=160, edge="short"), dict(type="CenterCrop", crop_size=128),
                             dict(type="RandomFlip", prob=1.0), dict(type="PackInputs")])
image = make_scene(seed=7, size=(90, 120)).image  # an RGB uint8 array
result = visctl.pipeline(config, image, phase="test", mode="pipeline")
(sample,) = result.samples
for step, img in zip(sample.steps[0], sample.images[0]):
    print(f"{step:40s} {img.shape}")
print("figure:", result.figures()[0].name, result.figures()[0].image.shape)
