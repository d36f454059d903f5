# Stand-in for mmpretrain's T2T-ViT-t-14: backbone.encoder.0..13 (ln1), a class token.
_base_ = ['../_cls_data.py']
model = dict(type='seed_models:t2t_vit', num_classes=1000, img_size=64)
