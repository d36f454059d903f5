# mmcls 0.x's name for the same ViT-B/16 384 px config.
_base_ = ['./vit-base-p16_64xb64_in1k-384px.py']
