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
from visctl.errors import DependencyError

MMENGINE_SUPPORTED = ">=0.10,<1"
_MMENGINE_MIN, _MMENGINE_MAX = (0, 10), (1,)
OPENCV_DISTS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
EXTRAS = {"openTSNE": "tsne (--method opentsne)", "umap-learn": "tsne (--method umap)",
          "tensorboard": "--backend tensorboard", "wandb": "--backend wandb", "timm": "timm.<name> models"}
# OpenMMLab packages and the module holding their registries
OPENMMLAB = {"mmpretrain": "mmpretrain.registry", "mmdet": "mmdet.registry", "mmyolo": "mmyolo.registry",
             "mmseg": "mmseg.registry", "mmselfsup": "mmselfsup.registry", "mmrazor": "mmrazor.registry",
             "mmcls": "mmcls.registry", "mmcv": None, "mmcv-lite": None, "mmcv-full": None}


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


def require_mmengine() -> str:
    """The installed mmengine's version, or a :class:`DependencyError` saying what to install."""
    flavours = {d: v for d in ("mmengine", "mmengine-lite") if (v := dist_version(d))}
    if not _module_present("mmengine"):
        if flavours:
            name, version = next(iter(flavours.items()))
            raise DependencyError(f"{name} {version} is listed by pip but its mmengine/ module is missing "
                                  "(uninstalling one of mmengine / mmengine-lite removes the other's files)",
                                  hint=f"pip install --force-reinstall --no-deps {name}=={version}")
        raise DependencyError("mmengine is not installed (visctl reads configs with it)",
                              hint="pip install mmengine-lite, or mmengine in an OpenMMLab environment "
                              "(see `visctl doctor`)")
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
        return [Check("opencv", "problem", "no OpenCV distribution installed",
                      "pip install opencv-python-headless (or opencv-python for windows)")]
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
        out.append(Check(dist, "ok" if version else "info", f"{version} ({use})" if version else
                         f"not installed: needed for {use} only"))
    return out


def _openmmlab_checks() -> list[Check]:
    out = []
    for dist, registry in OPENMMLAB.items():
        version = dist_version(dist)
        if version is None:
            continue
        if registry is None:
            out.append(Check(dist, "ok", version))
            continue
        try:
            module = importlib.import_module(registry)
        except Exception as exc:  # an OpenMMLab package that cannot import shows why in one line
            out.append(Check(dist, "problem", f"{version} installed but {registry} cannot be imported: "
                             f"{type(exc).__name__}: {exc}".splitlines()[0],
                             f"pip install the missing module, or pip install --force-reinstall {dist}=={version}"))
            continue
        models = getattr(module, "MODELS", None)
        count = len(models.module_dict) if models is not None and hasattr(models, "module_dict") else 0
        out.append(Check(dist, "ok", f"{version}; registry {registry} ({count} models registered at import; "
                         f"configs with default_scope='{dist}' build through it)"))
    mmcv = [d for d in ("mmcv", "mmcv-lite", "mmcv-full") if dist_version(d)]
    if len(mmcv) > 1:
        out.append(Check("mmcv", "problem", f"{' and '.join(mmcv)} are both installed: they own the same mmcv/ module",
                         f"pip uninstall -y {' '.join(mmcv)} && pip install {mmcv[0]}=={dist_version(mmcv[0])}"))
    if mmcv:
        out.append(_mmcv_ops_check(mmcv[0]))
    if not out:
        out.append(Check("openmmlab", "info", "no OpenMMLab package installed (torchvision/timm/import-path models only)"))
    return out


def _mmcv_ops_check(dist: str) -> Check:
    """Whether mmcv has its compiled ops (``mmcv._ext``: NMS, RoIAlign, ...), which every mmdet/mmyolo detector
    needs; mmcv-lite and a wheel built for another torch have none. A problem where mmdet or mmyolo is installed."""
    version = dist_version(dist)
    try:
        importlib.import_module("mmcv._ext")
    except Exception as exc:  # not built (ModuleNotFoundError), or built against another torch (undefined symbol)
        needed = [d for d in ("mmdet", "mmyolo") if dist_version(d)]
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        detail = f"{dist} {version} has no compiled ops (mmcv._ext: {reason})"
        if needed:
            return Check("mmcv-ops", "problem", f"{detail}; {' and '.join(needed)} detectors need them (NMS) for "
                         "visctl boxam, slice and featmap", "pip uninstall -y mmcv-lite; install an mmcv with ops built "
                         "for this torch (MMCV_WITH_OPS=1 pip install mmcv --no-binary mmcv, or OpenMMLab's wheel for "
                         "your torch and CUDA)")
        return Check("mmcv-ops", "info", f"{detail}: fine for classification; mmdet/mmyolo detectors need them")
    return Check("mmcv-ops", "ok", f"{dist} {version}: compiled ops (mmcv._ext) load")


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
