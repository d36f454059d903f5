# Stand-in for mmpretrain's MobileNetV3-large: backbone.layer1..layer16.
_base_ = ['../_cls_data.py']
model = dict(type='seed_models:mobilenet_v3', num_classes=1000)
