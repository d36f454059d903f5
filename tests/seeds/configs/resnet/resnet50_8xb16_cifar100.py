# Stand-in for mmcls' configs/resnet/resnet50_8xb16_cifar100.py: CIFAR-100 from local python batches.
model = dict(type='seed_models:resnet', num_classes=100)
data_preprocessor = dict(num_classes=100, mean=[129.304, 124.070, 112.434], std=[68.170, 65.392, 70.418],
                         to_rgb=False)
train_pipeline = [dict(type='RandomCrop', crop_size=32, padding=4), dict(type='RandomFlip', prob=0.5),
                  dict(type='PackInputs')]
test_pipeline = [dict(type='PackInputs')]
train_dataloader = dict(batch_size=16, dataset=dict(type='CIFAR100', data_prefix='data/cifar100', test_mode=False,
                                                    pipeline=train_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(type='CIFAR100', data_prefix='data/cifar100', test_mode=True,
                                                  pipeline=test_pipeline))
test_dataloader = val_dataloader
