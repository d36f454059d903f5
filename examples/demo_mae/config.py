# The demo masked autoencoder: a small MAE (ViT encoder and decoder from timm blocks, reference MAE key
# names) trained by examples/train_mae.py on generated 64 px shapes.
model = dict(type='visctl.mim_models:mae_vit', img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4,
             decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=4, mask_ratio=0.75)
load_from = '{{ fileDirname }}/mae.pth'
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64)), dict(type='PackInputs')]
