# Stand-in for mmdet's RetinaNet-R50-FPN: the same architecture as the R101 stand-in (the feature difference
# of two models needs layers of the same shape).
_base_ = ['./retinanet_r101_fpn_2x_coco.py']
