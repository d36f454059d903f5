# Stand-in for mmpretrain's Swin-T: norm3 on tokens, no class token.
_base_ = ['./swin_base_224_b16x64_300e_imagenet.py']
