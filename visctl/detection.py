"""Detectors behind one protocol, box geometry, merging, tiling, drawing-independent evaluation.

The detector protocol: ``model(batch)`` on a (N, 3, H, W) float batch (as visctl's pipeline and
``data_preprocessor`` make it) returns, in eval mode, one ``dict(boxes, scores, labels)`` per image with boxes
``(K, 4)`` xyxy in the batch's pixels. torchvision's detection models follow it as they are (visctl feeds them
0-1 images; they normalise and resize internally and answer in input pixels). Any other detector needs a
wrapper of a few lines (see examples/detector_adapter.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visctl.choices import Merge
from visctl.errors import VisctlError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from visctl.transforms import ImageState

TORCHVISION_DETECTORS = ("GeneralizedRCNN", "RetinaNet", "FCOS", "SSD")



@dataclass
class Detections:
    """Detections of one image in original-image pixels (numpy arrays)."""

    boxes: Any  # (K, 4) float32 xyxy
    scores: Any  # (K,)
    labels: Any  # (K,) int64

    def __len__(self) -> int:
        return len(self.scores)

    def keep(self, mask: Any) -> Detections:
        return Detections(self.boxes[mask], self.scores[mask], self.labels[mask])

    @staticmethod
    def concat(parts: list[Detections]) -> Detections:
        import numpy as np

        if not parts:
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return Detections(np.concatenate([p.boxes for p in parts]).astype(np.float32),
                          np.concatenate([p.scores for p in parts]).astype(np.float32),
                          np.concatenate([p.labels for p in parts]).astype(np.int64))


def is_torchvision_detector(model: nn.Module) -> bool:
    """Whether ``model`` is one of torchvision's detection models (they take 0-1 images)."""
    return any(cls.__name__ in TORCHVISION_DETECTORS for cls in type(model).__mro__)


def check_outputs(outputs: Any) -> None:
    """Raise a clear error when a model does not follow the detector protocol."""
    ok = isinstance(outputs, (list, tuple)) and all(
        isinstance(o, dict) and {"boxes", "scores", "labels"} <= set(o) for o in outputs)
    if not ok:
        raise VisctlError(f"the model returned {type(outputs).__name__}, not one dict(boxes, scores, labels) per "
                          "image", hint="wrap the detector as in examples/detector_adapter.py, or use a torchvision "
                          "detection model")


def default_layer(pr: Any) -> tuple[str, str]:
    """The last tensor-valued spatial layer of the neck/FPN, else of the backbone, in execution order (from
    :func:`visctl.layers.probe`); returns the layer and where it was found."""
    from visctl.errors import LayerError

    order = [(n, s) for n, s in pr.order if isinstance(s, tuple) and len(s) == 4 and s[2] > 1 and s[3] > 1]
    for prefix in ("neck", "backbone.fpn", "backbone"):
        hits = [n for n, _ in order if n == prefix or n.startswith(prefix + ".")]
        if hits:
            return hits[-1], prefix
    if order:
        return order[-1][0], "model"
    raise LayerError("no layer of this detector gives a spatial tensor", hint="name one with target_layers=")


def finest_neck_layer(pr: Any) -> str | None:
    """The neck's last tensor-valued layer at its largest spatial size, in execution order (an FPN's P3
    output: ``neck.fpn_convs.0`` in mmdet's FPN), from :func:`visctl.layers.probe`; None without a neck."""
    order = [(n, s) for n, s in pr.order if isinstance(s, tuple) and len(s) == 4 and s[2] > 1 and s[3] > 1
             and n.startswith("neck.")]
    if not order:
        return None
    area = max(s[2] * s[3] for _, s in order)
    return [n for n, s in order if s[2] * s[3] == area][-1]


def detect(model: nn.Module, batch: torch.Tensor) -> list[dict]:
    """Run a detector under no_grad; one dict of CPU tensors per image."""
    import torch

    with torch.no_grad():
        outputs = model(batch)
    return detached(outputs)


def detached(outputs: Any) -> list[dict]:
    """A detector's outputs (checked against the protocol) as one dict of detached CPU tensors per image."""
    check_outputs(outputs)
    return [{k: v.detach().cpu() for k, v in o.items() if k in ("boxes", "scores", "labels")} for o in outputs]


class BoxScoreTarget:
    """A detection's score for box CAMs: grad-cam's ``FasterRCNNBoxScoreTarget``, vectorised over the boxes.

    For every kept box (``bounding_boxes``, ``labels``): the output box with the highest IoU; when that IoU is
    above ``iou_threshold`` and its label is the kept one, IoU + score counts; the target is the sum.
    Follows pytorch_grad_cam/utils/model_targets.py (1.5.x) ``FasterRCNNBoxScoreTarget.__call__``: ``ious =
    box_iou(box, boxes); index = ious.argmax(); if ious[0, index] > iou_threshold and labels[index] == label:
    output = output + ious[0, index] + scores[index]``, the loop done as one IoU matrix (~1 ms per image less
    on the demo detector) and without importing grad-cam. tests/test_detection.py runs grad-cam's class on
    the same outputs and compares the value and the gradients.
    """

    def __init__(self, labels: Any = None, bounding_boxes: Any = None, iou_threshold: float = 0.5) -> None:
        self.labels = labels
        self.bounding_boxes = bounding_boxes
        self.iou_threshold = iou_threshold

    def __call__(self, model_outputs: dict) -> torch.Tensor:
        import torch

        boxes = model_outputs["boxes"]
        output = torch.zeros(1, device=boxes.device, dtype=boxes.dtype)
        count = 0 if self.bounding_boxes is None else len(self.bounding_boxes)
        if count != (0 if self.labels is None else len(self.labels)):
            raise ValueError(f"{count} boxes and {0 if self.labels is None else len(self.labels)} labels: "
                             "a box target needs one label per box")
        if len(boxes) == 0 or count == 0:
            return output
        wanted = torch.as_tensor(self.bounding_boxes, device=boxes.device, dtype=boxes.dtype).reshape(-1, 4)
        ious = _iou_matrix(wanted, boxes)  # (kept, found)
        index = ious.argmax(dim=1)  # the first of equal IoUs, as grad-cam's argmax of one row
        best = ious.gather(1, index[:, None])[:, 0]
        hit = (best > self.iou_threshold) & (model_outputs["labels"][index] == torch.as_tensor(
            self.labels, device=boxes.device).reshape(-1))
        if not bool(hit.any()):
            return output
        return output + (best[hit] + model_outputs["scores"][index[hit]]).sum()


def _iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torchvision's ``box_iou`` (the same operations, so the same values), except where two boxes have no
    area between them: 0 there, where ``box_iou`` divides 0 by 0. A random or collapsed head's zero-area box made
    grad-cam's target NaN, and with it every gradient and the whole map; the union is clamped before the
    division so that the backward has no 0/0 either."""
    import torch

    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[:, :2])
    rb = torch.min(a[:, None, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    union = area_a[:, None] + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def to_original(out: dict, state: ImageState, offset: tuple[float, float] = (0.0, 0.0),
                label_offset: int = 0) -> Detections:
    """Boxes in pipeline-output pixels -> original-image pixels (through the inverse of the pipeline's
    affine), then shifted by ``offset`` (a tile's position in the whole image)."""
    import numpy as np

    boxes = out["boxes"].numpy().astype(np.float64).reshape(-1, 4)
    sx, sy = state.scale
    tx, ty = state.shift
    x = (boxes[:, [0, 2]] - tx) / sx + offset[0]
    y = (boxes[:, [1, 3]] - ty) / sy + offset[1]
    fixed = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1)  # a flip swaps the corners
    return Detections(fixed.astype(np.float32), out["scores"].numpy().astype(np.float32),
                      out["labels"].numpy().astype(np.int64) - label_offset)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (torchvision.ops)."""
    import torch
    from torchvision.ops import box_iou as tv_iou

    return tv_iou(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)).numpy()


def box_ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, for every pair: a box cut by a tile border lies inside the
    whole object's box, so IoS sees them as one where IoU may not."""
    import numpy as np

    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-9)


def merge(dets: Detections, method: Merge, thr: float, metric: str = "iou") -> Detections:
    """Class-aware merging of overlapping detections, best score first.

    NMS keeps the best box of each overlapping group (torchvision.ops.batched_nms for IoU); NMM (greedy
    non-maximum merging) replaces the group by its union with the best score; WBF by the score-weighted
    average box with the mean score. ``metric`` is ``iou`` or ``ios`` (intersection over the smaller box).
    """
    import numpy as np
    import torch
    from torchvision.ops import batched_nms

    if len(dets) == 0:
        return dets
    if method is Merge.nms and metric == "iou":
        keep = batched_nms(torch.as_tensor(dets.boxes), torch.as_tensor(dets.scores), torch.as_tensor(dets.labels),
                           thr).numpy()
        return dets.keep(keep)
    out_b, out_s, out_l = [], [], []
    for c in np.unique(dets.labels):  # class-aware: groups never mix classes
        sel = dets.labels == c
        order = np.argsort(-dets.scores[sel], kind="stable")
        boxes, scores = dets.boxes[sel][order], dets.scores[sel][order]
        used = np.zeros(len(order), bool)
        for i in range(len(order)):
            if used[i]:
                continue
            # one row of overlaps at a time: O(N) memory even for the 10,000s of boxes of a huge image
            row = (box_ios if metric == "ios" else _iou_rows)(boxes[i:i + 1], boxes)[0]
            g = np.flatnonzero(~used & (row >= thr))
            g = g[g >= i]
            used[g] = True
            if method is Merge.nms:
                b, sc = boxes[i], scores[i]
            elif method is Merge.nmm:
                b = np.concatenate([boxes[g, :2].min(0), boxes[g, 2:].max(0)])
                sc = scores[g].max()
            else:  # wbf
                w = scores[g][:, None]
                b = (boxes[g] * w).sum(0) / w.sum()
                sc = scores[g].mean()
            out_b.append(b)
            out_s.append(sc)
            out_l.append(c)
    order = np.argsort(-np.array(out_s), kind="stable")
    return Detections(np.array(out_b, np.float32).reshape(-1, 4)[order], np.array(out_s, np.float32)[order],
                      np.array(out_l, np.int64)[order])


def _iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import numpy as np

    inter = box_ios(a, b) * np.minimum(((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None],
                                       ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :])
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    return inter / np.maximum(union - inter, 1e-9)


def tiles(h: int, w: int, patch: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Tile boxes (x0, y0, x1, y1) covering an h x w image; edge tiles are moved inside the image, so every
    tile is ``patch`` x ``patch`` (or the image, when it is smaller).

    sahi's grid (sahi/slicing.py ``get_slice_bboxes``, which mmyolo's large_image_demo slices with): the overlap
    is ``int(overlap * patch)`` pixels, truncated, so tiles step ``patch - int(overlap * patch)`` (167 px for a
    333 px patch at 0.5, not 166.5 rounded to 166).
    """
    if not 0 <= overlap < 1:
        raise VisctlError(f"patch_overlap_ratio={overlap} must be in [0, 1)")
    step = max(1, patch - int(overlap * patch))

    def starts(n: int) -> list[int]:
        if n <= patch:
            return [0]
        out = list(range(0, n - patch + 1, step))
        if out[-1] != n - patch:
            out.append(n - patch)  # snap the last tile inside the image
        return out

    return [(x, y, min(x + patch, w), min(y + patch, h)) for y in starts(h) for x in starts(w)]


def tile_batches(image: np.ndarray, boxes: list[tuple[int, int, int, int]], batch_size: int
                 ) -> Iterator[list[tuple[tuple[int, int, int, int], np.ndarray]]]:
    """Tiles cut lazily, ``batch_size`` at a time (a 10000 x 10000 image never has all its tiles in memory)."""
    for i in range(0, len(boxes), batch_size):
        yield [(b, image[b[1]:b[3], b[0]:b[2]]) for b in boxes[i:i + batch_size]]


def average_precision(preds: list[Detections], gts: list[tuple[np.ndarray, np.ndarray]], num_classes: int,
                      iou_thr: float = 0.5) -> tuple[float, list[float]]:
    """VOC-style all-point AP per class at ``iou_thr``, and their mean over classes with ground truth.

    Args:
        preds: detections per image.
        gts: ``(boxes (M, 4), labels (M,))`` per image.
        num_classes: number of classes.
        iou_thr: IoU for a true positive.
    """
    import numpy as np

    aps: list[float] = []
    for c in range(num_classes):
        records = []
        n_gt = 0
        for img, (pred, (gb, gl)) in enumerate(zip(preds, gts)):
            gt_c = np.asarray(gb)[np.asarray(gl) == c]
            n_gt += len(gt_c)
            mask = pred.labels == c
            for b, s in zip(pred.boxes[mask], pred.scores[mask]):
                records.append((float(s), img, b))
        if n_gt == 0:
            continue
        records.sort(key=lambda r: -r[0])
        taken: dict[int, np.ndarray] = {}
        tp = np.zeros(len(records))
        for k, (_, img, b) in enumerate(records):
            gb, gl = gts[img]
            gt_c = np.asarray(gb, np.float32)[np.asarray(gl) == c]
            if not len(gt_c):
                continue
            ious = box_iou(b[None], gt_c)[0]
            j = int(ious.argmax())
            flags = taken.setdefault(img, np.zeros(len(gt_c), bool))
            if ious[j] >= iou_thr and not flags[j]:
                flags[j] = True
                tp[k] = 1
        cum_tp = np.cumsum(tp)
        recall = cum_tp / n_gt
        precision = cum_tp / np.arange(1, len(records) + 1)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        aps.append(float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum()))
    return (float(np.mean(aps)) if aps else 0.0), aps


def recall(preds: list[Detections], gts: list[tuple[np.ndarray, np.ndarray]], iou_thr: float = 0.5) -> float:
    """The share of ground-truth boxes matched by a same-class detection with IoU >= ``iou_thr``."""
    import numpy as np

    hit = total = 0
    for pred, (gb, gl) in zip(preds, gts):
        gb, gl = np.asarray(gb, np.float32), np.asarray(gl)
        total += len(gb)
        if not len(gb) or not len(pred):
            continue
        ious = box_iou(gb, pred.boxes)
        same = gl[:, None] == pred.labels[None, :]
        hit += int(((ious >= iou_thr) & same).any(1).sum())
    return hit / total if total else 0.0


def coco_results(dets: Detections, image_id: int, file_name: str, class_names: list[str] | None) -> list[dict]:
    """COCO-style results: one dict per box with ``bbox`` as [x, y, w, h]."""
    from visctl.classes import label

    out = []
    for b, s, lab in zip(dets.boxes, dets.scores, dets.labels):
        x0, y0, x1, y1 = (float(v) for v in b)
        out.append(dict(image_id=image_id, file_name=file_name, bbox=[round(x0, 2), round(y0, 2),
                                                                      round(x1 - x0, 2), round(y1 - y0, 2)],
                        score=round(float(s), 5), category_id=int(lab),
                        category=label(class_names, lab)))
    return out
