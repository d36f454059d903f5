# The demo segmenter: a small fully convolutional model trained by examples/train_segmenter.py on generated
# scenes with one to three shapes; class 0 is the background.
model = dict(type='visctl.demo_models:shapes_segmenter', num_classes=5)
classes = ['background', 'circle', 'square', 'triangle', 'cross']
load_from = '{{ fileDirname }}/segmenter.pth'
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Pad', size_divisor=4), dict(type='PackInputs')]
visctl = dict(task='segmentation', target_layers=['backbone.layer4'])
