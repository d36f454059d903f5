# Stand-in for mmselfsup's SimMIM Swin-L at 192 px: a SimMIM with a small ViT encoder (random weights) and
# the vis_pipeline whose SimMIMMaskGenerator makes the mask, as --use-vis-pipeline expects.
model = dict(type='visctl.mim_models:simmim_vit', img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=2)
data_preprocessor = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
vis_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), backend='pillow'),
    dict(type='SimMIMMaskGenerator', input_size=64, mask_patch_size=16, model_patch_size=8, mask_ratio=0.6),
    dict(type='PackSelfSupInputs', algorithm_keys=['mask'], meta_keys=['img_path']),
]
test_pipeline = vis_pipeline
