# mmcls 0.x's name for the same MobileNetV3-large config.
_base_ = ['./mobilenet-v3-large_8xb128_in1k.py']
