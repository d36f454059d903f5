# Stand-in for mmpretrain's RepVGG-B3g4 200-epoch cosine schedule.
_base_ = ['../_cls_data.py']
model = dict(type='seed_models:resnet', num_classes=1000)
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0001),
                     paramwise_cfg=dict(bias_decay_mult=0.0, norm_decay_mult=0.0))
param_scheduler = dict(type='CosineAnnealingLR', T_max=200, by_epoch=True, begin=0, end=200)
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=1)
