# Stand-in for mmselfsup's configs/tsne/resnet50_imagenet.py: its extract_dataloader, scoped type names and
# annotation file; the model is the demo classifier's architecture (its checkpoint replaces the URL).
model = dict(type='visctl.demo_models:shapes_classifier', num_classes=4)
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
extract_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='mmcls.ResizeEdge', scale=73, edge='short'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='mmcls.PackClsInputs'),
]
extract_dataloader = dict(
    batch_size=8, num_workers=0,
    dataset=dict(type='mmcls.ImageNet', data_root='data/imagenet', ann_file='meta/val.txt', data_prefix='val',
                 pipeline=extract_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
