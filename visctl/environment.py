"""What a visctl run depends on, and what is wrong with it: the checks behind ``visctl doctor``.

Installed distributions are read with :mod:`importlib.metadata` (what pip installed, even where two
distributions own the same module: ``mmengine``/``mmengine-lite``, the four OpenCV wheels); modules are
imported only to ask them what metadata cannot tell (CUDA, cv2's GUI backend, grad-cam's API, registries).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from visctl import _gradcam
from visctl.errors import LITE_FIX, DependencyError, needs

MMENGINE_SUPPORTED = ">=0.10,<1"
_MMENGINE_MIN, _MMENGINE_MAX = (0, 10), (1,)
OPENCV_DISTS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
# what each optional package is for; openTSNE is not a --method: `tsne --method tsne` uses it when installed
# (FFT gradients), scikit-learn's TSNE otherwise
EXTRAS = {"openTSNE": "tsne --method tsne, faster (scikit-learn's t-SNE without it)", "umap-learn": "tsne (--method umap)",
          "tensorboard": "--backend tensorboard", "wandb": "--backend wandb", "timm": "timm.<name> models"}
# OpenMMLab distributions -> their module and a tiny model of their MODELS registry that `doctor` builds the
# way visctl builds a config's model (default_scope = the module); None: the registry is only imported
_MMDET_TINY = dict(
    type="RetinaNet", backbone=dict(type="ResNet", depth=18, base_channels=4, out_indices=(3,)),
    neck=dict(type="ChannelMapper", in_channels=[32], out_channels=8, kernel_size=1),
    bbox_head=dict(type="RetinaHead", num_classes=2, in_channels=8, stacked_convs=1, feat_channels=8,
                   anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=1,
                                         ratios=[1.0], strides=[32]),
                   bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                   loss_cls=dict(type="FocalLoss", use_sigmoid=True), loss_bbox=dict(type="L1Loss")),
    test_cfg=dict(nms_pre=10, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=10))
OPENMMLAB: dict[str, tuple[str, dict | None]] = {
    "mmpretrain": ("mmpretrain", dict(type="ImageClassifier", backbone=dict(type="LeNet5", num_classes=2))),
    "mmdet": ("mmdet", _MMDET_TINY),
    "mmyolo": ("mmyolo", dict(type="YOLOv5CSPDarknet", deepen_factor=0.33, widen_factor=0.0625)),
    "mmsegmentation": ("mmseg", dict(type="EncoderDecoder",
                                     backbone=dict(type="ResNetV1c", depth=18, base_channels=4, stem_channels=8),
                                     decode_head=dict(type="FCNHead", in_channels=32, in_index=3, channels=8,
                                                      num_convs=1, num_classes=3))),
    "mmselfsup": ("mmselfsup", None), "mmrazor": ("mmrazor", None), "mmcls": ("mmcls", None),
}
MMCV_DISTS = ("mmcv", "mmcv-lite", "mmcv-full")
DETECTOR_PACKAGES = ("mmdet", "mmyolo")


@dataclass
class Check:
    """One line of the report: ``status`` is ok, info or problem; a problem has a one-line ``fix``."""

    name: str
    status: str
    detail: str
    fix: str | None = None


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _parse(version: str) -> tuple[int, ...]:
    return _gradcam._parse(version)


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---- checks a run makes (one error line instead of a traceback) -------------------------------------


def require_mmengine(what: str = "visctl") -> str:
    """The installed mmengine's version, or a :class:`DependencyError` saying what to install.

    Args:
        what: what needs it, for the message (``visctl lr``, ``config x.py``).
    """
    flavours = {d: v for d in ("mmengine", "mmengine-lite") if (v := dist_version(d))}
    if not _module_present("mmengine"):
        if flavours:
            name, version = next(iter(flavours.items()))
            raise DependencyError(f"{name} {version} is listed by pip but its mmengine/ module is missing "
                                  "(uninstalling one of mmengine / mmengine-lite removes the other's files)",
                                  hint=f"pip install --force-reinstall --no-deps {name}=={version}")
        raise needs(what, "mmengine", "mmengine is not installed")
    for name, version in flavours.items():
        if not _MMENGINE_MIN <= _parse(version) < _MMENGINE_MAX:
            raise DependencyError(f"{name} {version} is installed; visctl supports {name} {MMENGINE_SUPPORTED}",
                                  hint=f"pip install '{name}{MMENGINE_SUPPORTED}'")
    return next(iter(flavours.values()), "unknown")


# ---- the doctor's report ----------------------------------------------------------------------------


def _torch_checks() -> list[Check]:
    out = []
    version = dist_version("torch")
    if version is None or not _module_present("torch"):
        return [Check("torch", "problem", "not installed", "pip install torch torchvision (pytorch.org for CUDA builds)")]
    import torch

    accel = []
    if torch.cuda.is_available():
        accel.append(f"CUDA {torch.version.cuda}: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    elif torch.version.cuda:
        accel.append(f"built for CUDA {torch.version.cuda}, no GPU visible")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        accel.append("MPS available")
    out.append(Check("torch", "ok", f"{torch.__version__} ({'; '.join(accel) or 'CPU only'})"))
    tv = dist_version("torchvision")
    if tv is None:
        out.append(Check("torchvision", "problem", "not installed", "pip install torchvision (the build matching torch)"))
    else:
        out.append(Check("torchvision", "ok", tv))
    return out


def _mmengine_checks() -> list[Check]:
    flavours = {d: v for d in ("mmengine", "mmengine-lite") if (v := dist_version(d))}
    if len(flavours) == 2:
        return [Check("mmengine", "problem",
                      f"mmengine {flavours['mmengine']} and mmengine-lite {flavours['mmengine-lite']} are both "
                      "installed: both own the mmengine/ module, so one overwrote the other and uninstalling "
                      "either deletes it", f"pip uninstall -y mmengine-lite && pip install --force-reinstall "
                      f"--no-deps mmengine=={flavours['mmengine']}")]
    if not flavours and not _module_present("mmengine"):  # a plain install: the fix every command prints too
        return [Check("mmengine", "problem", "not installed (OpenMMLab configs, lr, the registries need it)",
                      LITE_FIX)]
    try:
        version = require_mmengine()
    except DependencyError as err:
        return [Check("mmengine", "problem", err.message, err.hint)]
    name = next(iter(flavours), "mmengine")
    return [Check("mmengine", "ok", f"{name} {version}")]


def _gradcam_checks() -> list[Check]:
    version = _gradcam.installed_version()
    if version is None:
        return [Check("grad-cam", "problem", f"not installed (visctl supports {_gradcam.SUPPORTED})",
                      f"pip install 'grad-cam{_gradcam.SUPPORTED}'")]
    if not _gradcam.is_supported(version):
        return [Check("grad-cam", "problem", f"{version}; visctl supports grad-cam {_gradcam.SUPPORTED}",
                      f"pip install 'grad-cam{_gradcam.SUPPORTED}' (OpenMMLab's vis_cam.py needs 1.4.x)")]
    try:
        import inspect

        from pytorch_grad_cam import GradCAM
    except Exception as exc:  # a broken install can raise anything at import
        return [Check("grad-cam", "problem", f"{version} cannot be imported: {exc}",
                      f"pip install --force-reinstall 'grad-cam=={version}'")]
    api = "1.4 API (use_cuda=...)" if "use_cuda" in inspect.signature(GradCAM.__init__).parameters else "1.5 API"
    missing = sorted(n for n in _gradcam.NEW_IN_1_5 if not _gradcam.available(n))
    note = f"; without {', '.join(missing)}" if missing else ""
    return [Check("grad-cam", "ok", f"{version}, {api}{note}")]


def cv2_gui() -> str | None:
    """cv2's GUI backend from its build information ('NONE' for headless wheels), None without cv2."""
    try:
        import cv2
    except ImportError:
        return None
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip() or "NONE"
    return "NONE"


def _opencv_checks() -> list[Check]:
    found = {d: v for d in OPENCV_DISTS if (v := dist_version(d))}
    if not found:
        return [Check("opencv", "problem", "no OpenCV distribution installed", LITE_FIX)]
    gui = cv2_gui()
    listing = ", ".join(f"{d} {v}" for d, v in found.items())
    if gui is None:
        return [Check("opencv", "problem", f"{listing} installed but cv2 cannot be imported",
                      f"pip install --force-reinstall --no-deps {next(iter(found))}=={next(iter(found.values()))}")]
    if len(found) > 1:
        keep = next((d for d in found if "headless" not in d), next(iter(found)))
        drop = " ".join(d for d in found if d != keep)
        return [Check("opencv", "problem", f"{listing}: several wheels own the cv2 module and overwrite each "
                      f"other (the last installed wins; now GUI: {gui})",
                      f"pip uninstall -y {drop} {keep} && pip install {keep}=={found[keep]}")]
    return [Check("opencv", "ok", f"{listing} (GUI: {gui})")]


def _extras_checks() -> list[Check]:
    out = []
    for dist, use in EXTRAS.items():
        version = dist_version(dist)
        needed = f"optional, for {use}" if dist == "openTSNE" else f"needed for {use} only"
        out.append(Check(dist, "ok" if version else "info", f"{version} ({use})" if version else
                         f"not installed: {needed}"))
    return out


def build_tiny_model(module: str, model: dict) -> str:
    """Build ``model`` through ``module``'s registry as visctl builds a config's model (``default_scope``,
    the package's ``MODELS``); returns the built class's name. Raises what the build raises."""
    import warnings

    from visctl.building import build_model

    with warnings.catch_warnings():  # the packages' notices about their own defaults (mmseg's build_loss, ...)
        warnings.simplefilter("ignore")
        return type(build_model(dict(model), module)).__name__


def _missing_module(exc: BaseException) -> str | None:
    """The top-level module an import failure names (``ftfy`` of ``No module named 'ftfy'``), else None."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:  # mmengine wraps the constructor's error
        seen.add(id(node))
        if isinstance(node, ModuleNotFoundError) and node.name:
            return node.name.split(".")[0]
        node = node.__cause__ or node.__context__
    import re

    found = re.search(r"No module named '([\w.]+)'", str(exc))
    return found.group(1).split(".")[0] if found else None


def _one_line(exc: BaseException) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _openmmlab_package_check(dist: str, version: str, module: str, tiny: dict | None) -> Check:
    reinstall = f"pip install --force-reinstall {dist}=={version}"
    if not _module_present(module):
        return Check(dist, "problem", f"{version} is listed by pip but its {module}/ module is missing", reinstall)
    try:
        importlib.import_module(f"{module}.registry")
        built = build_tiny_model(module, tiny) if tiny is not None else None
    except Exception as exc:  # an OpenMMLab package that cannot import or build shows why in one line
        from visctl.errors import VisctlError

        what = f"a tiny {tiny['type']} cannot be built through its registry" if tiny else \
            f"{module}.registry cannot be imported"
        missing = _missing_module(exc)
        reason = exc.message if isinstance(exc, VisctlError) else _one_line(exc)
        fix = f"pip install {missing}" if missing and missing != module else reinstall
        return Check(dist, "problem", f"{version} installed but {what}: {reason}", fix)
    if built is None:
        return Check(dist, "ok", f"{version}; {module}.registry imports (no model is built to check it)")
    return Check(dist, "ok", f"{version}; built a tiny {built} through its registry (default_scope='{module}'), "
                 "as visctl builds its configs' models")


def mmcv_ops() -> tuple[bool, str]:
    """Whether mmcv has its compiled ops (``mmcv._ext``; nms run on two boxes), and what was found."""
    try:
        import torch
        from mmcv.ops import nms

        importlib.import_module("mmcv._ext")
        _, keep = nms(torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]]), torch.tensor([0.9, 0.8]), 0.5)
        return True, f"compiled ops present (nms kept {len(keep)} of 2 overlapping boxes)"
    except Exception as exc:  # mmcv-lite, or mmcv built without its ops
        return False, f"no compiled ops ({_one_line(exc)})"


def _openmmlab_checks() -> list[Check]:
    out = []
    for dist, (module, tiny) in OPENMMLAB.items():
        version = dist_version(dist)
        if version is not None:
            out.append(_openmmlab_package_check(dist, version, module, tiny))
    mmcv = [d for d in MMCV_DISTS if dist_version(d)]
    if len(mmcv) > 1:
        out.append(Check("mmcv", "problem", f"{' and '.join(mmcv)} are both installed: they own the same mmcv/ module",
                         f"pip uninstall -y {' '.join(mmcv)} && pip install {mmcv[0]}=={dist_version(mmcv[0])}"))
    elif mmcv:
        version = dist_version(mmcv[0])
        detectors = [d for d in DETECTOR_PACKAGES if dist_version(d)]
        ok, detail = mmcv_ops() if _module_present("mmcv") else (False, "its mmcv/ module is missing")
        if ok:
            out.append(Check(mmcv[0], "ok", f"{version}; {detail}"))
        else:
            need = (f"{' and '.join(detectors)} detectors need them (nms)" if detectors
                    else "mmdet/mmyolo detectors would need them (nms); classifiers and segmentors do not")
            fix = ("pip install mmcv (a build with ops for this torch: mmcv's install guide, or build it from "
                   "source with MMCV_WITH_OPS=1)")
            out.append(Check(mmcv[0], "problem" if detectors else "info", f"{version}; {detail}: {need}",
                             fix if detectors else None))
    if not out:
        out.append(Check("openmmlab", "info", "no OpenMMLab package installed (torchvision/timm/import-path models only)"))
    return out


def diagnose() -> list[Check]:
    """Every check, in report order."""
    checks = [Check("python", "ok", sys.version.split()[0])]
    for group in (_torch_checks, _mmengine_checks, _gradcam_checks, _opencv_checks, _extras_checks,
                  _openmmlab_checks):
        checks.extend(group())
    return checks


def as_dict(checks: list[Check]) -> dict[str, Any]:
    """The report as JSON-ready data: ``ok`` is False when any check is a problem."""
    return {"ok": not any(c.status == "problem" for c in checks), "checks": [asdict(c) for c in checks]}
