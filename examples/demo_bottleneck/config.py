# A MobileNetV2-style classifier (torchvision's MobileNetV2 with three short stages) whose CAM layer is a linear
# bottleneck: the last InvertedResidual's projection conv + BN, with no activation after it. Trained by
# examples/train_bottleneck.py on generated 64 px shape images (visctl.shapes.make_scene(seed, size=64)).
model = dict(type='mobilenet_v2', num_classes=4,
             inverted_residual_setting=[[1, 16, 1, 1], [4, 24, 1, 2], [4, 32, 1, 2]])
classes = ['circle', 'square', 'triangle', 'cross']
load_from = '{{ fileDirname }}/classifier.pth'
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64)),
    dict(type='PackInputs'),
]
# the linear bottleneck (8x8 at 64 px): the sign of its channel mean says nothing about the object
visctl = dict(target_layers=['features.3.conv.3'])
