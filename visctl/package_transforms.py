"""Transforms of an installed OpenMMLab package, run through its own ``TRANSFORMS`` registry.

A config's pipeline may name transforms visctl does not write itself: mmpretrain's ``RandAugment``,
``EfficientNetRandomCrop``, ``RandomErasing``, ``ColorJitter``, mmcv's ``RandomApply``, ... Where the config's
``default_scope`` (or the step's own ``scope.Name`` prefix) is an installed OpenMMLab package whose registry
holds the name, the step runs as that package's tools run it: built by the registry, called on a results dict
whose ``img`` is BGR (as ``LoadImageFromFile`` gives it), its random draws made from numpy's, Python's and torch's
global generators, seeded from visctl's per-sample generator (browse, pipeline, tsne's datasets; model commands
pass none and seed 0, so a random step in a test pipeline draws the same for every image) and put back after, so
``--seed`` repeats the same views and the caller's random state is untouched. The names visctl implements
itself (:data:`visctl.transforms.TRANSFORMS`, written to mmcv's and mmpretrain's numbers) keep running as
visctl's, with their geometry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from typing import Any

from visctl.errors import ConfigError, DependencyError, VisctlError

#: scopes whose transforms visctl writes itself where it has the name (mmcv's and mmpretrain's numbers);
#: a step prefixed with another scope (``mmdet.RandomCrop``) runs that package's transform even then
OWN_SCOPES = ("mmcv", "mmengine", "mmpretrain", "mmcls", "mmselfsup", "torchvision")

#: transforms that change pixel values only, never where they are: the map back to the original stays known
PIXELWISE = {"ColorJitter", "Lighting", "RandomGrayscale", "GaussianBlur", "Brightness", "Contrast",
             "ColorTransform", "Equalize", "Posterize", "Solarize", "SolarizeAdd", "AutoContrast", "Invert",
             "Sharpness", "RandomErasing", "Albu", "Albumentations", "PhotoMetricDistortion",
             "YOLOXHSVRandomAug"}

#: transforms that stretch the whole image to the ``img_shape`` they record (a random scale included), with any
#: padding at the bottom/right: the map back to the original stays known
RESIZES = {"Resize", "ResizeToMultiple", "RandomResize", "FixShapeResize", "Pad"}

# (scope, name, frozen kwargs) -> the built transform; (scope, name) -> the registry has it (True / False).
# Only answers are kept: a registry that cannot import (a missing dependency) raises each time it is asked.
_BUILT: dict[Any, Any] = {}
_KNOWN: dict[tuple[str, str], bool] = {}


def _registry_has(scope: str, name: str) -> bool:
    """Whether ``scope`` is an installed OpenMMLab package whose transform registry resolves ``name``; a package
    whose registry cannot import its transforms is a :class:`~visctl.errors.DependencyError`."""
    key = (scope, name)
    if key not in _KNOWN:
        _KNOWN[key] = _lookup(scope, name) is not None
    return _KNOWN[key]


@contextlib.contextmanager
def _registry(scope: str) -> Iterator[Any]:
    """``scope``'s transform registry with ``scope`` as mmengine's default scope (as its Runner and tools build
    transforms, nested ones included; under :data:`visctl.openmmlab.LOCK`, so reader threads never switch the
    scope at once), or None where ``scope`` is no installed OpenMMLab package."""
    from visctl import openmmlab

    if scope in ("mmcv", "mmengine"):  # mmcv has no `registry` module: its transforms are in mmengine's root one
        if not openmmlab.is_package("mmcv"):
            yield None
            return
        try:
            from mmcv.transforms import TRANSFORMS as ROOT
        except ImportError as exc:
            raise openmmlab.dependency_error("mmcv", exc) from exc
        with openmmlab.scope(None):  # the lock only: builds read the current scope
            yield ROOT
        return
    if not openmmlab.is_package(scope):
        yield None
        return
    openmmlab.import_registry(scope)
    from mmengine.registry import TRANSFORMS

    # as mmengine's build_from_cfg: the scope's registry, whose get() imports the package's transforms first
    with openmmlab.registry(TRANSFORMS, scope) as registry:
        yield registry


def _lookup(scope: str, name: str) -> Any:
    from visctl import openmmlab

    with _registry(scope) as registry:
        if registry is None:
            return None
        try:
            return registry.get(name)
        except ImportError as exc:  # its `locations` import a module that is missing (mmseg 1.2.2 needs ftfy)
            raise openmmlab.dependency_error(scope, exc) from exc


def qualify(steps: list[dict], scope: str | None, own: Collection[str]) -> list[dict]:
    """``steps`` with each name visctl does not implement (not in ``own``, visctl's transforms) written
    ``scope.Name`` where the ``default_scope`` package's registry holds it (MultiView's branches too), so
    :func:`visctl.transforms.apply_step` runs it through that registry. Without a scope, or where the package is
    not installed, the steps are returned as they are."""
    if not scope or not isinstance(scope, str):
        return steps
    out: list[dict] = []
    pil: list[dict] | None = None  # the steps between ToPIL and ToNumpy, which work on a PIL image
    for step in steps:
        step = dict(step)
        kind = str(step.get("type", ""))
        if pil is not None:
            pil.append(step)
            if kind.split(".")[-1] in _TO_NUMPY:
                out.append(_compose(pil, scope))
                pil = None
            continue
        if kind.split(".")[-1] in _TO_PIL and _registry_has(scope, kind.split(".")[-1]):
            pil = [step]
            continue
        if kind == "MultiView" and isinstance(step.get("transforms"), (list, tuple)):
            step["transforms"] = [qualify([dict(s) for s in branch], scope, own) if isinstance(branch, (list, tuple))
                                  else branch for branch in step["transforms"]]
        elif kind and "." not in kind and kind not in own and _registry_has(scope, kind):
            step["type"] = f"{scope}.{kind}"
        out.append(step)
    if pil is not None:
        out.append(_compose(pil, scope))
    return out


# mmpretrain's PIL round trip: `ToPIL`, then `torchvision/<Name>` steps on the PIL image, then `ToNumpy`
_TO_PIL = ("ToPIL", "NumpyToPIL")
_TO_NUMPY = ("ToNumpy", "PILToNumpy")


def _compose(steps: list[dict], scope: str) -> dict:
    """One step of the package's ``Compose`` over ``steps`` (its image is a PIL image between them)."""
    return {"type": f"{scope}.Compose", "transforms": steps}


def runs_in_package(scope: str, name: str, own: bool) -> bool:
    """Whether a step typed ``scope.name`` runs through ``scope``'s registry (else visctl's or torchvision's);
    ``own``: visctl implements ``name``."""
    if not scope or (own and scope in OWN_SCOPES):
        return False
    return _registry_has(scope, name)


def _build(scope: str, name: str, kwargs: dict) -> Any:
    from visctl.generators import frozen_key

    try:
        key: Any = (scope, name, frozen_key(kwargs))
    except TypeError:
        key = None
    if key is not None and key in _BUILT:
        return _BUILT[key]
    from visctl import openmmlab

    with _registry(scope) as registry:
        if registry is None:
            raise not_installed(scope, name)
        try:
            transform = registry.build({"type": name, **kwargs})
        except ImportError as exc:  # the transform's module needs a package that is missing
            raise openmmlab.dependency_error(scope, exc) from exc
        except Exception as exc:  # mmengine wraps the constructor's error: the step's parameters
            raise ConfigError(f"{scope} cannot build {name}: {_one_line(exc)}",
                              hint=f"check this step's parameters against {scope}'s {name}") from exc
    if key is not None:
        if len(_BUILT) >= 256:
            _BUILT.clear()
        _BUILT[key] = transform
    return transform


def apply(state: Any, scope: str, name: str, kwargs: dict, rng: Any) -> None:
    """Run ``scope``'s transform ``name(**kwargs)`` on ``state`` (a :class:`visctl.transforms.ImageState`) in
    place (see the module's docstring)."""
    import random

    import numpy as np

    from visctl.generators import generator_lock, randint

    transform = _build(scope, name, kwargs)
    h0, w0 = state.img.shape[:2]
    results: dict[str, Any] = {"img": np.ascontiguousarray(state.img[..., ::-1]), "img_shape": (h0, w0),
                               "ori_shape": (h0, w0)}
    seed = randint(rng, 0, 2**31) if rng is not None else 0
    # the package draws from the global generators (numpy's, Python's; torch's CPU one in its torchvision
    # wrappers): seeded per sample and step, and put back after
    import torch

    generator = torch.default_generator
    with generator_lock():
        saved_np, saved_py, saved_torch = np.random.get_state(), random.getstate(), generator.get_state()
        try:
            np.random.seed(seed)
            random.seed(seed)
            generator.manual_seed(seed)
            try:
                out = transform(results)
            except Exception as exc:  # the package's own transform failed (its tools fail alike)
                raise ConfigError(f"{scope}'s {name} failed: {_one_line(exc)}",
                                  hint=f"the error is {scope}'s own transform's: check the step's parameters and "
                                  f"the package's versions, or leave {name} out of the config's pipeline "
                                  "(browse and pipeline: skip_type=)") from exc
        finally:
            np.random.set_state(saved_np)
            random.setstate(saved_py)
            generator.set_state(saved_torch)
    if out is None:
        raise ConfigError(f"{scope}'s {name} dropped the sample (it returned None)")
    img = out.get("img") if isinstance(out, dict) else None
    if isinstance(img, (list, tuple)) and img:
        img = img[0]  # a transform that makes several images (two-pic crops): the model's input is the first
    if img is not None and not isinstance(img, np.ndarray):
        raise ConfigError(f"{scope}'s {name} leaves a {type(img).__name__}, not an image array",
                          hint="a ToPIL step needs its ToNumpy after the steps that work on the PIL image")
    if img is None:
        raise ConfigError(f"{scope}'s {name} returned no image", hint="a formatting step belongs after the image "
                          "steps: leave it out of the config's pipeline (browse and pipeline: skip_type=)")
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.dtype != np.uint8:  # a float result on the 0-255 scale (Lighting, RandomErasing with noise)
        img = np.clip(np.round(img.astype(np.float64)), 0, 255).astype(np.uint8)
    state.img = np.ascontiguousarray(img[..., ::-1])
    h1, w1 = state.img.shape[:2]
    shape = out.get("img_shape")
    if (h1, w1) != (h0, w0) and name in RESIZES and shape is not None and shape[0] <= h1 and shape[1] <= w1:
        # a stretch of the whole image to the img_shape it records, padded at the bottom/right after it (mmcv's
        # Resize and Pad, mmseg's ResizeToMultiple record so); mmseg's postprocess_result undoes it likewise
        state.then(float(shape[1]) / w0, float(shape[0]) / h0, 0.0, 0.0)
    elif (h1, w1) != (h0, w0):  # an approximate stretch, so maps still cover the image; not exact
        state.then(w1 / w0, h1 / h0, 0.0, 0.0)
        state.geometry_known = False
    elif name not in PIXELWISE:  # rotations, shears, translations keep the size and move the pixels
        state.geometry_known = False
    if out.get("mask") is not None:
        state.mask = np.asarray(out["mask"]).astype(bool)


def not_installed(scope: str, name: str) -> DependencyError:
    """The error for a step typed ``scope.name`` whose scope is no installed OpenMMLab package (visctl never runs
    torchvision's class of that name in its place)."""
    return DependencyError(f"transform {scope}.{name}: {scope} is not installed (or is no OpenMMLab package)",
                           hint=f"pip install {scope}, or write the step's type without the {scope}. prefix")


def not_found(scope: str, name: str) -> VisctlError:
    """Why a step typed ``scope.name`` does not run in ``scope``'s registry: the package is not installed, or its
    registry has no such transform."""
    from visctl import openmmlab

    if not openmmlab.is_package("mmcv" if scope in ("mmcv", "mmengine") else scope):
        return not_installed(scope, name)
    return ConfigError(f"{scope}'s transform registry has no {name!r}",
                       hint="check the step's type against the package's transforms, or leave its prefix out")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
