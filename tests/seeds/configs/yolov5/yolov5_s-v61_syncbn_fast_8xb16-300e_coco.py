# Stand-in for mmyolo's YOLOv5-s: mmyolo's module names (backbone.stage1..4 returning three levels,
# neck.out_layers[0..2], bbox_head) over the trained demo detector, whose checkpoint keys are revised here.
model = dict(type='seed_models:yolo', num_classes=4)
classes = ['circle', 'square', 'triangle', 'cross']
checkpoint_revise_keys = [(r'^backbone\.layer', 'backbone.stage'), (r'^neck\.', 'neck.out_layers.2.'),
                          (r'^head\.', 'bbox_head.')]
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Pad', size_divisor=4), dict(type='PackInputs')]
visctl = dict(task='detection')
