"""Class names of a model's outputs: from the config, the model itself, or the local class list of the
weights family it belongs to (torchvision's weight enums, timm's ImageNet info); nothing is downloaded."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ClassNames:
    """A model's class names (None when nothing names them) and where they came from."""

    names: list[str] | None
    source: str | None = None

    def label(self, index: int) -> str:
        """The name of class ``index``, or the index itself as text."""
        return label(self.names, index)


def label(names: list[str] | None, index: Any) -> str:
    """The name of class ``index`` from ``names``, or the index as text when it has none."""
    i = int(index)
    return names[i] if names and 0 <= i < len(names) else str(i)


def caption(names: list[str] | None, index: Any) -> str:
    """``class 282 tiger cat``, or ``class 282`` when the class has no name."""
    i = int(index)
    name = label(names, i)
    return f"class {i} {name}" if name != str(i) else f"class {i}"


_GENERIC = re.compile(r"LABEL_\d+")  # transformers' placeholder names of a config without labels


def _as_list(value: Any) -> list[str] | None:
    """A class list from a list/tuple, or from an ``{index: name}`` mapping (transformers' ``id2label``)."""
    if isinstance(value, dict):
        try:
            items = sorted((int(k), str(v)) for k, v in value.items())
        except (TypeError, ValueError):
            return None
        if [k for k, _ in items] != list(range(len(items))):
            return None
        value = [v for _, v in items]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        if all(_GENERIC.fullmatch(v) for v in value):
            return None
        return [str(v) for v in value]
    return None


def from_model(model: Any) -> tuple[list[str], str] | None:
    """Names a model carries: ``classes``, ``CLASSES``, ``class_names``, ``dataset_meta['classes']``
    (mmengine models), ``config.id2label`` (transformers); on the model or its ``module`` (a wrapper)."""
    for owner, prefix in ((model, ""), (getattr(model, "module", None), "module.")):
        if owner is None:
            continue
        for attr in ("classes", "CLASSES", "class_names"):
            names = _as_list(getattr(owner, attr, None))
            if names:
                return names, f"the model's {prefix}{attr}"
        meta = getattr(owner, "dataset_meta", None)
        if isinstance(meta, dict):
            names = _as_list(meta.get("classes"))
            if names:
                return names, f"the model's {prefix}dataset_meta['classes']"
        config = getattr(owner, "config", None)
        names = _as_list(getattr(config, "id2label", None))
        if names:
            return names, f"the model's {prefix}config.id2label"
    return None


def dataset_metainfo(cfg: Any) -> tuple[str, str, dict] | None:
    """``(scope, dataset type, METAINFO)`` of the config's dataset class as its OpenMMLab package declares it
    (mmseg's ``CityscapesDataset``/``ADE20KDataset``, mmpretrain's ``ImageNet``, mmdet's ``CocoDataset``, ...):
    the test, val or train dataloader's ``dataset.type`` (through dataset wrappers) looked up in the
    ``default_scope`` package's ``DATASETS`` registry, as the Runner would build it; nothing is read from disk."""
    import importlib.util

    from visctl import config

    scope = cfg.get("default_scope") if hasattr(cfg, "get") else None
    if not isinstance(scope, str) or not scope or importlib.util.find_spec(scope) is None:
        return None
    for key in ("test_dataloader.dataset", "val_dataloader.dataset", "train_dataloader.dataset"):
        dataset = config.cfg_get(cfg, key)
        for _ in range(4):  # RepeatDataset(dataset=...), ClassBalancedDataset(dataset=...)
            if not hasattr(dataset, "get") or not isinstance(dataset.get("dataset"), dict):
                break
            dataset = dataset["dataset"]
        kind = dataset.get("type") if hasattr(dataset, "get") else None
        if not isinstance(kind, str):
            continue
        try:
            import importlib

            # the package's own registry: its get() imports the package's datasets and asks its parents
            cls = importlib.import_module(f"{scope}.registry").DATASETS.get(kind)
        except Exception:  # a package that cannot import: no names from it
            return None
        meta = getattr(cls, "METAINFO", None)
        if isinstance(meta, dict):
            return scope, kind, meta
    return None


def from_dataset(cfg: Any, num_classes: int | None = None) -> tuple[list[str], str] | None:
    """The classes of the config's dataset class (:func:`dataset_metainfo`), when it has ``num_classes`` of
    them (when known)."""
    found = dataset_metainfo(cfg)
    if found is None:
        return None
    scope, kind, meta = found
    names = _as_list(meta.get("classes"))
    if names and (num_classes is None or len(names) == num_classes):
        return names, f"{scope}'s {kind}.METAINFO classes"
    return None


def dataset_palette(cfg: Any, num_classes: int) -> list[tuple[float, float, float]] | None:
    """The config's dataset class's ``METAINFO['palette']`` (RGB 0-255, as mmseg's visualizer paints each
    class) as 0-1 colours, when it has one per class."""
    found = dataset_metainfo(cfg)
    palette = found[2].get("palette") if found else None
    try:
        colors = [tuple(float(v) / 255.0 for v in c) for c in palette or ()]
    except (TypeError, ValueError):
        return None
    if len(colors) != num_classes or any(len(c) != 3 for c in colors):
        return None
    return [(c[0], c[1], c[2]) for c in colors]


def output_classes(model: Any) -> int | None:
    """The number of classes a model predicts, where it says: ``num_classes`` (timm and others), or the box
    classifier of a torchvision detector."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    for path in ("roi_heads.box_predictor.cls_score.out_features", "head.classification_head.num_classes",
                 "head.classification_head.num_columns"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, int) and obj > 0:
            return obj
    return None


def from_torchvision(model_type: str, num_classes: int) -> tuple[list[str], str] | None:
    """The categories of a torchvision model's first weights whose class count matches (the enum's ``meta``
    ships with torchvision: nothing is downloaded)."""
    import torchvision.models as tvm

    bare = model_type.removeprefix("torchvision.").removeprefix("models.").lower()
    try:
        weights = tvm.get_model_weights(bare)
    except (ValueError, KeyError):
        return None
    for w in weights:
        cats = w.meta.get("categories") or []
        if len(cats) == num_classes:
            return [str(c) for c in cats], f"torchvision's {type(w).__name__}.{w.name} categories"
    return None


def from_timm(model: Any, num_classes: int) -> tuple[list[str], str] | None:
    """ImageNet-1k/12k/21k/22k class names (the first WordNet lemma) for a timm model with that many classes,
    from the files inside the timm package."""
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset
    except ImportError:
        return None
    subset = infer_imagenet_subset(model)
    if not subset:
        return None
    try:
        info = ImageNetInfo(subset)
    except (AssertionError, OSError, ValueError):
        return None
    if info.num_classes() != num_classes:
        return None
    names = [d.split(",")[0].strip() for d in info.label_descriptions()]
    return names, f"timm's {subset} class names"


def class_names(cfg: Any, model: nn.Module | None = None, num_classes: int | None = None,
                checkpoint_classes: list[str] | None = None) -> ClassNames:
    """The class names of a model's outputs, first found of:

    1. the config's ``classes`` / ``dataset_meta.classes`` / the test dataset's classes (they always win);
    2. the checkpoint's ``meta`` (``dataset_meta['classes']``, mmcls 0.x's ``CLASSES``);
    2b. the config's dataset class's ``METAINFO`` in its OpenMMLab package (:func:`from_dataset`);
    3. the model's own ``classes``, ``CLASSES``, ``dataset_meta['classes']`` or ``config.id2label``;
    4. for a torchvision model, the categories of its weights enum with as many classes (ImageNet-1k, COCO, ...);
    5. for a timm model with 1000 (or 11k, 12k, 21k, 22k) classes, timm's ImageNet class names.

    Args:
        cfg: the run's config.
        model: the built model.
        num_classes: the number of outputs, when known (a probe's logits); else read from the model.
        checkpoint_classes: the class names in the loaded checkpoint's meta (``summary['classes']``).
    """
    from visctl import config

    names = config.class_names(cfg)
    if names:
        return ClassNames(names, "the config's classes")
    if checkpoint_classes:
        return ClassNames(list(checkpoint_classes), "the checkpoint's meta")
    found = from_dataset(cfg, num_classes or (output_classes(model) if model is not None else None))
    if found:
        return ClassNames(*found)
    if model is None:
        return ClassNames(None)
    found = from_model(model)
    if found:
        return ClassNames(*found)
    n = num_classes or output_classes(model)
    if not n:
        return ClassNames(None)
    spec = str(config.cfg_get(cfg, "model.type") or "")
    found = None
    if spec and not spec.startswith("timm.") and ":" not in spec:
        found = from_torchvision(spec, n)
    elif spec.startswith("torchvision.") and ":" in spec:  # torchvision.models.segmentation:fcn_resnet50
        found = from_torchvision(spec.rsplit(":", 1)[1], n)
    elif type(model).__module__.startswith("timm.") or spec.startswith("timm."):
        found = from_timm(model, n)
    return ClassNames(*found) if found else ClassNames(None)
