# The demo classifier: a small CNN trained by examples/train_classifier.py on generated shape images.
model = dict(type='visctl.demo_models:shapes_classifier', num_classes=4)
classes = ['circle', 'square', 'triangle', 'cross']
load_from = '{{ fileDirname }}/classifier.pth'
# mean/std in 0-255 as mmpretrain writes them; the model takes RGB
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[64.0, 64.0, 64.0], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64)),
    dict(type='PackInputs'),
]
visctl = dict(target_layers=['backbone.layer4'])
# generated held-out shapes (visctl demo writes them here); tsne/browse read this dataset
test_dataloader = dict(batch_size=32, dataset=dict(type='CustomDataset', data_root='{{ fileDirname }}/../../visctl-out/demo/data', pipeline=test_pipeline))
