# Stand-in for mmcls' configs/resnet/resnet50_b16x8_cifar100.py (its schedule, written the 1.x way).
_base_ = ['./resnet50_8xb16_cifar100.py']
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0005))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[60, 120, 160], gamma=0.2)
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=1)
