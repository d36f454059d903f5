# Loading an mmpretrain / mmselfsup MAE checkpoint into visctl's MAE: the same tensors under OpenMMLab names.
# Use it with the reference ViT-B/16 MAE:  visctl recon img.jpg examples/demo_mae/mmpretrain_keys.py mae_mm.pth
model = dict(type='visctl.mim_models:mae_vit_base_patch16')
data_preprocessor = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(224, 224)), dict(type='PackInputs')]
checkpoint_revise_keys = [
    (r'^backbone\.patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^backbone\.layers\.', 'blocks.'),
    (r'^backbone\.ln1\.', 'norm.'),
    (r'^backbone\.', ''),
    (r'^neck\.decoder_blocks\.', 'decoder_blocks.'),
    (r'^neck\.ln1\.', 'decoder_norm.'),
    (r'^neck\.', ''),
    (r'\.ln1\.', '.norm1.'),
    (r'\.ln2\.', '.norm2.'),
    (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'),
    (r'\.ffn\.layers\.1\.', '.mlp.fc2.'),
]
