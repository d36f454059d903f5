# The demo classifier: a small CNN trained by examples/train_classifier.py on generated shape images.
model = dict(type='visctl.demo_models:shapes_classifier', num_classes=4)
classes = ['circle', 'square', 'triangle', 'cross']
load_from = '{{ fileDirname }}/classifier.pth'
# mean/std in 0-255 as mmpretrain writes them; the model takes RGB
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64)),
    dict(type='PackInputs'),
]
visctl = dict(target_layers=['backbone.layer4'])
# what examples/train_classifier.py does: 6000 generated images resized to 64 px, random horizontal flips,
# AdamW with a one-cycle schedule over 6 epochs of batch 64 (visctl lr ... --dataset-size 6000)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=3e-3, weight_decay=1e-4))
param_scheduler = dict(type='OneCycleLR', eta_max=3e-3, total_steps=6 * 94, by_epoch=False)
train_cfg = dict(by_epoch=True, max_epochs=6)
# generated held-out shapes (visctl demo writes them to visctl-out/demo/data; point data_root elsewhere with
# --cfg-options test_dataloader.dataset.data_root=PATH)
_data = '{{ fileDirname }}/../../visctl-out/demo/data'
train_dataloader = dict(batch_size=64, dataset=dict(type='CustomDataset', data_root=_data, pipeline=train_pipeline))
test_dataloader = dict(batch_size=32, dataset=dict(type='CustomDataset', data_root=_data, pipeline=test_pipeline))
