"""mmdet 3.x / mmyolo 0.x detectors behind visctl's detector protocol (see :mod:`visctl.detection`).

An OpenMMLab detector takes a batch that its own ``test_pipeline`` and ``data_preprocessor`` made, and answers
with ``DetDataSample.pred_instances`` in the original image's pixels. Here:

* :class:`PackagePipeline` runs the config's test pipeline through the package's TRANSFORMS registry (as
  ``mmdet.apis.inference_detector`` does: ``LoadImageFromNDArray`` first), pads to the data preprocessor's
  ``pad_size_divisor``, and records the geometry the pipeline wrote in its results (``scale_factor``,
  ``pad_param``) as the :class:`~visctl.transforms.ImageState` affine, so maps and boxes go back to the
  original exactly as the package's ``rescale`` does;
* :class:`MMDetAdapter` holds the detector's modules under their own names (``backbone``, ``neck.out_layers.2``,
  ...) and answers ``model(batch)`` with one ``dict(boxes, scores, labels)`` per image in batch pixels (the
  package's ``predict(rescale=True)``, carried by the same affine), after the data preprocessor's padding value;
* :class:`LossTarget` is mmyolo's boxam target for the gradient methods (``DetBoxScoreTarget`` on the loss: the
  kept boxes as ground truth, the losses summed but the family's ignored one), see mmyolo's
  demo/boxam_vis_demo.py and mmyolo/utils/boxam_utils.py.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from visctl import openmmlab
from visctl.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from visctl.transforms import ImageState

# mmyolo demo/boxam_vis_demo.py IGNORE_LOSS_PARAMS (chosen there by a word of the config's path; here by the head).
# The demo knows these four and stops on any other config; YOLOv8 (whose head subclasses YOLOv5's but has no
# loss_obj: cls, bbox, dfl) leaves out loss_cls as the other task-aligned heads (YOLOv6, RTMDet) do. YOLOv7's head
# is a YOLOv5 head (loss_obj), PPYOLOE's a YOLOv6 one (loss_cls).
IGNORE_LOSS = {"yolov5": ["loss_obj"], "yolov6": ["loss_cls"], "yolox": ["loss_obj"], "rtmdet": ["loss_cls"],
               "yolov8": ["loss_cls"]}


def is_mm_detector(model: Any) -> bool:
    """Whether ``model`` is an mmdet 3.x detector (mmdet's or mmyolo's: they subclass mmdet's BaseDetector)."""
    return any(c.__name__ == "BaseDetector" and c.__module__.startswith("mmdet.") for c in type(model).__mro__)


def loss_family(detector: Any, cfg: Any = None) -> str | None:
    """The key of :data:`IGNORE_LOSS` for this detector: by its head's class (a YOLOv5, YOLOv6, YOLOX or
    RTMDet head of mmyolo or mmdet), else by a word of the config's file name as mmyolo's demo decides; None
    for detectors mmyolo's boxam does not cover (RetinaNet, Faster R-CNN, ...)."""
    head = getattr(detector, "bbox_head", None)
    if head is None or not hasattr(detector, "loss"):
        return None
    for cls in type(head).__mro__:
        name = cls.__name__
        if name.startswith("RTMDet"):
            return "rtmdet"
        for prefix, family in (("YOLOv8", "yolov8"), ("YOLOv5", "yolov5"), ("YOLOv6", "yolov6"), ("YOLOX", "yolox")):
            if name.startswith(prefix) and "Head" in name:
                return family
    filename = str(getattr(cfg, "filename", "") or "")
    return next((k for k in IGNORE_LOSS if k in filename), None)


def test_pipeline_cfg(cfg: Any) -> list[dict]:
    """The test pipeline as ``mmdet.utils.get_test_pipeline_cfg`` finds it (the test dataset's, through
    dataset wrappers), else ``test_pipeline``."""
    from visctl import config

    def find(dataset: Any) -> Any:
        if not isinstance(dataset, dict):
            return None
        if "pipeline" in dataset:
            return dataset["pipeline"]
        if "dataset" in dataset:
            return find(dataset["dataset"])
        if dataset.get("datasets"):
            return find(dataset["datasets"][0])
        return None

    pipe = find(config.cfg_get(cfg, "test_dataloader.dataset")) or config.cfg_get(cfg, "test_pipeline")
    if not pipe:
        raise ConfigError("this detector's config has no test pipeline (test_dataloader.dataset.pipeline or "
                          "test_pipeline)", hint="add the package's test pipeline, e.g. from its configs' _base_")
    return [dict(step) for step in pipe]


class PackagePipeline:
    """The config's test pipeline run by the package (a visctl pipeline step, ``OpenMMLabPipeline``).

    As ``inference_detector`` on an array: the first step becomes ``mmdet.LoadImageFromNDArray`` (visctl has
    read the image already, with OpenCV as mmcv does), annotation loading is left out (mmyolo's boxam wrapper
    does the same). The result is the packed image (BGR in the package, RGB in visctl), padded bottom and
    right to the data preprocessor's ``pad_size_divisor`` as its ``stack_batch`` pads; the affine from the
    original is ``scale_factor`` and the left/top of ``pad_param`` (mmyolo's LetterResize), which is exactly
    what the package's ``rescale`` undoes.
    """

    def __init__(self, cfg: Any, pad_size_divisor: int = 1) -> None:
        from mmcv.transforms import Compose

        steps = test_pipeline_cfg(cfg)
        kept = [s for s in steps if not str(s.get("type", "")).endswith("LoadAnnotations")]
        if kept and "Load" in str(kept[0].get("type", "")):
            # as inference_detector: only the type changes; the step's arguments stay (CenterNet's to_float32=True,
            # which its RandomCenterCropPad asserts)
            kept[0] = dict(kept[0], type="mmdet.LoadImageFromNDArray")
        else:
            kept.insert(0, dict(type="mmdet.LoadImageFromNDArray"))
        self.scope = cfg.get("default_scope")
        self.names = [str(s.get("type")) for s in kept]
        self.divisor = max(1, int(pad_size_divisor or 1))
        try:
            with openmmlab.scope(self.scope):
                self.compose = Compose(kept)
        except Exception as exc:  # the config names a transform its packages do not register, or bad arguments
            raise ConfigError(f"the test pipeline does not build in {self.scope}: {' '.join(str(exc).split())}",
                              hint="check the config's test pipeline; its transforms come from the installed "
                              "OpenMMLab packages") from exc

    def __call__(self, state: ImageState) -> None:
        import cv2
        import numpy as np

        bgr = np.ascontiguousarray(state.img[..., ::-1])
        # no registry lookups here (the steps were built in __init__): safe in the batch readers' threads
        data = self.compose(dict(img=bgr, img_id=0))
        if data is None:
            raise ConfigError("the test pipeline dropped the image", hint="check its filtering steps")
        packed = data["inputs"]
        sample = data["data_samples"]
        img = np.ascontiguousarray(packed.numpy().transpose(1, 2, 0)[..., ::-1]) if hasattr(packed, "numpy") \
            else np.ascontiguousarray(np.asarray(packed)[..., ::-1])
        meta = dict(sample.metainfo)
        sx, sy = (float(v) for v in meta.get("scale_factor", (1.0, 1.0)))
        left, top = placement(meta)
        state.then(sx, sy, left, top)
        h, w = img.shape[:2]
        ph, pw = math.ceil(h / self.divisor) * self.divisor, math.ceil(w / self.divisor) * self.divisor
        if (ph, pw) != (h, w):  # the data preprocessor's stack_batch: bottom and right, then its pad_value
            img = cv2.copyMakeBorder(img, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        meta["img_shape"] = tuple(meta.get("img_shape", (h, w)))
        meta["pad_shape"] = (ph, pw)
        state.img = img
        state.meta = meta


def placement(meta: dict[str, Any]) -> tuple[float, float]:
    """Where the resized original's top-left corner lies in the packed image, from what the pipeline recorded:
    mmyolo's LetterResize ``pad_param`` (top, bottom, left, right), mmdet's RandomCenterCropPad (CenterNet's test
    mode) ``border`` (top, bottom, left, right of the original inside the padded image; its head subtracts
    ``border[2]``, ``border[0]`` from the boxes), else the corner itself."""
    for key in ("pad_param", "border"):
        values = meta.get(key)
        if values is not None:
            return float(values[2]), float(values[0])
    return 0.0, 0.0


@contextlib.contextmanager
def package_errors(detector: Any) -> Iterator[None]:
    """An error raised inside the detector's own package code, with no visctl code between, is the package's
    (mmdet 3.3's SSDHead reads a ``loss_cls`` it does not have, and its ``inference_detector`` fails alike): one
    ``error:`` line naming the package and the class, not an "internal error" of visctl. ``--debug`` shows
    the traceback."""
    import traceback

    try:
        yield
    except Exception as exc:
        frames = [f.filename.replace("\\", "/") for f in traceback.extract_tb(exc.__traceback__)]
        first = next((i for i, f in enumerate(frames) if any(f"/{n}/" in f for n in ("mmyolo", "mmdet", "mmcv"))),
                     None)
        if first is None or any("/visctl/" in f for f in frames[first:]):  # visctl's code below: visctl's bug
            raise
        package = next(n for n in ("mmyolo", "mmdet", "mmcv") if f"/{n}/" in frames[first])
        raise ModelError(f"{package}'s {type(detector).__name__} fails on this input: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())}",
                         hint=f"the error is {package}'s own (its inference_detector fails alike on this config "
                         "and checkpoint); its traceback (the CLI's --debug) shows where") from exc


def dataset_meta(cfg: Any) -> dict[str, Any]:
    """The test dataset's metainfo as its class makes it (``METAINFO`` updated by the config's ``metainfo``):
    COCO's 80 names for a CocoDataset; empty when the class cannot be found."""
    from visctl import config

    dataset = config.cfg_get(cfg, "test_dataloader.dataset")
    while isinstance(dataset, dict) and "type" not in dataset and "dataset" in dataset:
        dataset = dataset["dataset"]
    if not isinstance(dataset, dict) or not dataset.get("type"):
        return {}
    try:
        from mmengine.registry import DATASETS

        # the default scope's registry (as building.py builds): its get() imports the package's dataset modules
        with openmmlab.registry(DATASETS, cfg.get("default_scope")) as registry:
            cls = registry.get(dataset["type"]) if isinstance(dataset["type"], str) else dataset["type"]
            if cls is None or not hasattr(cls, "_load_metainfo"):
                return {}
            return dict(cls._load_metainfo(dataset.get("metainfo")))
    except Exception:  # a dataset class that cannot be imported names no classes: visctl says so elsewhere
        return {}


def adapt(detector: Any, cfg: Any) -> nn.Module:
    """``detector`` (an mmdet/mmyolo model, built and loaded) behind visctl's detector protocol."""
    return _adapter_class()(detector, cfg)


_CLASS: list[type] = []


def _adapter_class() -> type:
    if _CLASS:
        return _CLASS[0]
    import torch
    from torch import nn

    class Adapter(nn.Module):
        """An mmdet/mmyolo detector that answers ``model(batch)`` with visctl's detections (batch pixels).

        Its children are the detector's own (``backbone``, ``neck``, ``bbox_head``, ...), so layer paths are
        the package's (``neck.out_layers[2]``). Before a forward, :meth:`bind` gives the batch's pipeline
        states (their ``meta``: ``img_shape``, ``scale_factor``, ``pad_param``, ``ori_shape``); unbound (a
        probe), the batch is taken as the image itself.
        """

        is_openmmlab_detector = True

        def __init__(self, detector: Any, cfg: Any) -> None:
            super().__init__()
            for name, child in detector.named_children():
                self.add_module(name, child)
            object.__setattr__(self, "detector", detector)  # not a child: its modules are ours already
            self.cfg = cfg
            dp: Any = getattr(detector, "data_preprocessor", None)
            self.pad_size_divisor = int(getattr(dp, "pad_size_divisor", 1) or 1)
            self.pad_value = float(getattr(dp, "pad_value", 0) or 0)
            normalize = bool(getattr(dp, "_enable_normalize", False))
            self.mean = tuple(float(v) for v in dp.mean.flatten()) if normalize else (0.0, 0.0, 0.0)
            self.std = tuple(float(v) for v in dp.std.flatten()) if normalize else (1.0, 1.0, 1.0)
            # the packed image is BGR; the preprocessor flips it to RGB when bgr_to_rgb (visctl's image is RGB)
            self.rgb = bool(getattr(dp, "_channel_conversion", False))
            meta = dict(getattr(detector, "dataset_meta", None) or {}) or dataset_meta(cfg)
            self.dataset_meta = meta
            self.family = loss_family(detector, cfg)
            self._states: list[Any] = []
            self.loss_mode = False  # boxam's gradient methods: outputs carry what LossTarget needs
            self.keep_graph = False  # boxam's gradient methods on the box scores: predictions keep their graph
            self.pipeline = PackagePipeline(cfg, self.pad_size_divisor)

        def bind(self, states: list[Any]) -> None:
            """The pipeline states of the next batches' images (one each, or one for a repeated image)."""
            self._states = list(states)

        def metas(self, batch: torch.Tensor) -> list[dict[str, Any]]:
            n, _, h, w = batch.shape
            states = self._states
            if len(states) == 1 and n > 1:  # one image repeated (AblationCAM's copies)
                states = states * n
            if states and len(states) != n:  # stale or wrong states would give wrong boxes without a word
                raise RuntimeError(f"the detector was given {len(states)} images' pipeline states for a batch of "
                                   f"{n} (bind the batch's states, one each, or one for a repeated image)")
            out = []
            for i in range(n):
                meta = dict(getattr(states[i], "meta", None) or {}) if states else {}
                meta.setdefault("img_shape", (h, w))
                meta.setdefault("ori_shape", meta["img_shape"])
                meta.setdefault("scale_factor", (1.0, 1.0))
                meta.setdefault("pad_shape", (h, w))
                meta["batch_input_shape"] = (h, w)
                out.append(meta)
            return out

        def samples(self, metas: list[dict[str, Any]]) -> list[Any]:
            from mmdet.structures import DetDataSample

            return [DetDataSample(metainfo=m) for m in metas]

        def prepared(self, batch: torch.Tensor, metas: list[dict[str, Any]]) -> torch.Tensor:
            """The batch with the preprocessor's ``pad_value`` where it padded (visctl padded with 0 before
            normalising)."""
            h, w = batch.shape[2:]
            if all(tuple(m["img_shape"][:2]) == (h, w) for m in metas):
                return batch
            keep = torch.zeros((batch.shape[0], 1, h, w), dtype=torch.bool, device=batch.device)
            for i, m in enumerate(metas):
                keep[i, :, :int(m["img_shape"][0]), :int(m["img_shape"][1])] = True
            return torch.where(keep, batch, torch.full_like(batch, self.pad_value))

        @staticmethod
        def to_batch_pixels(boxes: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
            """Original-image boxes -> batch pixels (the pipeline's affine, what ``rescale`` undid)."""
            sx, sy = (float(v) for v in meta.get("scale_factor", (1.0, 1.0)))
            left, top = placement(meta)
            return boxes * boxes.new_tensor([sx, sy, sx, sy]) + boxes.new_tensor([left, top, left, top])

        def forward(self, batch: torch.Tensor) -> list[dict[str, Any]]:
            metas = self.metas(batch)
            x = self.prepared(batch, metas)
            det: Any = self.__dict__["detector"]
            if self.loss_mode and self.family is not None:
                # the features once (in a CAM's forward, their graph starts at the target layer): each image's
                # loss target is computed from them, after the boxes of this very forward are kept
                feats = det.extract_feat(x)
                with torch.no_grad(), package_errors(det):
                    found = det.bbox_head.predict(tuple(f.detach() for f in feats), self.samples(metas),
                                                  rescale=True)
                outputs = self._outputs(found, metas)
                for i, out in enumerate(outputs):
                    out["loss_inputs"] = (tuple(f[i:i + 1] for f in feats), metas[i])
                return outputs
            with undetached() if self.keep_graph else contextlib.nullcontext(), package_errors(det):
                results = det.predict(x, self.samples(metas), rescale=True)
            return self._outputs([r.pred_instances for r in results], metas)

        def _outputs(self, found: list[Any], metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
            out = []
            for inst, meta in zip(found, metas):
                boxes = inst.bboxes if isinstance(inst.bboxes, torch.Tensor) else inst.bboxes.tensor
                out.append(dict(boxes=self.to_batch_pixels(boxes.reshape(-1, 4), meta), scores=inst.scores,
                                labels=inst.labels.long()))
            return out

        def losses(self, loss_inputs: Any, boxes: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
            """The detector head's losses of one image with ``boxes`` (batch pixels) as its ground truth, as
            mmyolo's BoxAMDetectorWrapper computes them (the head in training mode, ``featmap_sizes`` reset)."""
            from mmdet.structures import DetDataSample
            from mmengine.logging import MessageHub
            from mmengine.structures import InstanceData

            feats, meta = loss_inputs
            boxes = boxes.detach().reshape(-1, 4).float()
            labels = labels.detach().reshape(-1).long()
            head: Any = self.__dict__["detector"].bbox_head
            if any(c.__name__ == "YOLOv5Head" and c.__module__.startswith("mmyolo.") for c in type(head).__mro__):
                # mmyolo's heads (YOLOv5/v6/v7/v8, YOLOX, RTMDet) train on its packed ground truth, (n, 6) rows of
                # [image, label, x0, y0, x1, y1] with img_metas (some, YOLOX's, accept no other form)
                rows = torch.cat([boxes.new_zeros((len(boxes), 1)), labels[:, None].to(boxes.dtype), boxes], 1)
                gt: Any = dict(bboxes_labels=rows, img_metas=[meta])
            else:
                sample = DetDataSample(metainfo=meta)
                sample.gt_instances = InstanceData(bboxes=boxes, labels=labels)
                gt = [sample]
            hub = MessageHub.get_current_instance()
            added = "epoch" not in hub.runtime_info
            if added:  # boxam_vis_demo: "required in some algorithms"; taken out again after
                hub.update_info("epoch", 0)
            owner = head.head_module if hasattr(head, "head_module") else head
            was = owner.training
            owner.training = True
            try:
                if hasattr(head, "featmap_sizes"):
                    head.featmap_sizes = None
                with openmmlab.scope(self.cfg.get("default_scope")):
                    return head.loss(feats, gt)
            finally:
                owner.training = was
                if hasattr(head, "featmap_sizes"):
                    head.featmap_sizes = None
                if added:
                    hub.runtime_info.pop("epoch", None)

    _CLASS.append(Adapter)
    return Adapter


@contextlib.contextmanager
def undetached() -> Iterator[None]:
    """mmdet's dense heads predict from ``select_single_mlvl(..., detach=True)``: for a box-score CAM the scores
    must keep their graph, so for the duration every loaded mmdet/mmyolo module's copy keeps it."""
    import sys

    from mmdet.models.utils import misc

    original = misc.select_single_mlvl

    def keep(mlvl_tensors: Any, batch_id: int, detach: bool = True) -> Any:
        return original(mlvl_tensors, batch_id, detach=False)

    patched = [m for name, m in list(sys.modules.items()) if name.startswith(("mmdet.", "mmyolo."))
               and getattr(m, "select_single_mlvl", None) is original]
    for module in patched:
        module.select_single_mlvl = keep  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module in patched:
            module.select_single_mlvl = original  # type: ignore[attr-defined]


class LossTarget:
    """mmyolo's ``DetBoxScoreTarget`` for the gradient methods: the detector's losses with the kept boxes as
    ground truth, every ``loss`` key summed except the family's ignored one (``loss_obj`` for YOLOv5 and
    YOLOX, ``loss_cls`` for YOLOv6 and RTMDet); filled like :class:`visctl.detection.BoxScoreTarget`."""

    def __init__(self, model: Any, ignore: list[str], labels: Any = None, bounding_boxes: Any = None) -> None:
        self.model = model
        self.ignore = list(ignore)
        self.labels = labels
        self.bounding_boxes = bounding_boxes

    def __call__(self, output: dict[str, Any]) -> torch.Tensor:
        import torch

        total = torch.zeros(1, device=output["boxes"].device)
        if self.bounding_boxes is None or len(self.bounding_boxes) == 0:
            return total
        losses = self.model.losses(output["loss_inputs"], torch.as_tensor(self.bounding_boxes),
                                   torch.as_tensor(self.labels))
        for key, value in losses.items():
            if "loss" not in key or key in self.ignore:
                continue
            total = total + (sum(value) if isinstance(value, (list, tuple)) else value)
        return total


def bind(model: Any, states: list[Any]) -> None:
    """Give an adapted detector the pipeline states of its next batch (nothing for any other model); ``[]``
    unbinds them. Prefer :func:`bound`, which unbinds after."""
    fn = getattr(model, "bind", None)
    if callable(fn) and getattr(model, "is_openmmlab_detector", False):
        fn(states)


@contextlib.contextmanager
def bound(model: Any, states: list[Any]) -> Iterator[None]:
    """``states`` bound to an adapted detector for the duration, unbound after (a later call never reads this
    batch's metas)."""
    bind(model, states)
    try:
        yield
    finally:
        bind(model, [])
