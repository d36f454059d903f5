# Stand-in for mmyolo's YOLOv5-m (the large-image demo's model): the same stand-in as YOLOv5-s.
_base_ = ['./yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py']
