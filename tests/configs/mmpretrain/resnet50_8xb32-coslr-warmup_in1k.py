# a ResNet-50 ImageNet config with a linear warmup then cosine, written the mmpretrain 1.x way
_base_ = [
    '_base_/models/resnet50.py', '_base_/datasets/imagenet_bs32.py',
    '_base_/schedules/imagenet_bs256_coslr.py', '_base_/default_runtime.py'
]
param_scheduler = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=95, by_epoch=True, begin=5, end=100)
]
