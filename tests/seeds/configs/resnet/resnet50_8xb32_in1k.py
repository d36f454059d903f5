# Stand-in for mmpretrain's configs/resnet/resnet50_8xb32_in1k.py: the same layer names (backbone.layer4.2),
# a tiny width, random weights (the test saves them as the checkpoint the seed line names).
_base_ = ['../_cls_data.py']
model = dict(type='seed_models:resnet', num_classes=1000)
# mmpretrain's imagenet_bs256 schedule
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0001))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
