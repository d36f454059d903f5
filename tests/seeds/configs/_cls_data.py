# Shared by the classification stand-ins: ImageNet-style folders under data/imagenet (written by the test).
data_preprocessor = dict(num_classes=1000, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=73, edge='short'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=32, num_workers=0,
                        dataset=dict(type='ImageNet', data_root='data/imagenet', data_prefix='train',
                                     pipeline=train_pipeline))
val_dataloader = dict(batch_size=32, num_workers=0,
                      dataset=dict(type='ImageNet', data_root='data/imagenet', data_prefix='val',
                                   pipeline=test_pipeline))
test_dataloader = val_dataloader
