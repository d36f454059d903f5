"""The learning rate of every param group at every iteration of a config's training, as mmengine steps it:
a linear warm-up then a cosine, on 8 GPUs; the CSV's columns as arrays, and the folder `visctl lr` writes."""

import sys
import tempfile

import visctl

config = dict(
    optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4)),
    param_scheduler=[dict(type="LinearLR", start_factor=0.01, by_epoch=True, end=2, convert_to_iter_based=True),
                     dict(type="CosineAnnealingLR", by_epoch=True, begin=2, T_max=18)],
    train_cfg=dict(by_epoch=True, max_epochs=20),
    train_dataloader=dict(batch_size=32),
)
result = visctl.lr(config, dataset_size=50_000, ngpus=8, title="warm-up + cosine")
print(result.rule, "-", result.total_iters, "iterations")
print("lr at the start of epochs 0, 2, 10:", result.epoch_values()["lr"][[0, 2, 10]])
out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
print("written:", result.save(out))  # lr.png, lr.csv, manifest.json, index.html
