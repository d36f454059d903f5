# Stand-in for mmselfsup's MAE ViT-H/16: the demo MAE's architecture (its checkpoint replaces the URL).
model = dict(type='visctl.mim_models:mae_vit', img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4,
             decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=4, mask_ratio=0.75, norm_pix_loss=True)
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64)), dict(type='PackInputs')]
