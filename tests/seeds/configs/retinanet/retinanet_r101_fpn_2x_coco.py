# Stand-in for mmdet's RetinaNet-R101-FPN: a 4-level backbone tuple and a 5-level neck (p3-p7) over the demo
# detector, whose checkpoint keys are revised here.
model = dict(type='seed_models:retinanet', num_classes=4)
classes = ['circle', 'square', 'triangle', 'cross']
checkpoint_revise_keys = [(r'^backbone\.layer', 'backbone.stage'), (r'^neck\.', 'neck.out_layers.4.'),
                          (r'^head\.', 'bbox_head.')]
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Pad', size_divisor=4), dict(type='PackInputs')]
visctl = dict(task='detection')
