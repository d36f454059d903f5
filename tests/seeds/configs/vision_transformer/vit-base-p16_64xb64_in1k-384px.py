# Stand-in for mmpretrain's ViT-B/16 at 384 px: backbone.layers.0..11 (ln1), a class token; 64 px here.
_base_ = ['../_cls_data.py']
model = dict(type='seed_models:vit', num_classes=1000, img_size=64)
