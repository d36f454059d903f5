# Stand-in for mmselfsup's SimSiam config: two augmented views of each image (MultiView).
model = dict(type='seed_models:resnet', num_classes=1000)
view_pipeline = [
    dict(type='RandomResizedCrop', size=64, scale=(0.2, 1.0), backend='pillow'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=2, transforms=[view_pipeline]),
    dict(type='PackSelfSupInputs', meta_keys=['img_path']),
]
train_dataloader = dict(batch_size=32, dataset=dict(type='mmcls.ImageNet', data_root='data/imagenet',
                                                    data_prefix=dict(img_path='train/'), pipeline=train_pipeline))
