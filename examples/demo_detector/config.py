# The demo detector: a small CenterNet-style model trained by examples/train_detector.py on generated scenes
# with several shapes of several sizes. It follows visctl's detector protocol (see README "Detectors").
model = dict(type='visctl.demo_models:shapes_detector', num_classes=4)
classes = ['circle', 'square', 'triangle', 'cross']
load_from = '{{ fileDirname }}/detector.pth'
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
# the model is fully convolutional: any size divisible by 4 works; pad to that
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Pad', size_divisor=4), dict(type='PackInputs')]
visctl = dict(task='detection', target_layers=['neck'])
