"""grad-cam 1.4.8 and 1.5.x behind one API.

OpenMMLab environments pin grad-cam 1.4.x (mmpretrain's vis_cam.py passes ``use_cuda=``, which 1.5 removed);
visctl must run there as well as on 1.5. What differs for visctl:

* 1.5 keeps the last forward's output on the CAM object (``cam.outputs``); 1.4.8 keeps it in a local
  variable of ``BaseCAM.forward``. :func:`build` wraps the object's ``activations_and_grads`` (the callable
  that runs the model in both versions) so :func:`outputs` finds the output either way.
* 1.4.8 moves the model to CUDA only when told (``use_cuda``); leaving it False keeps the model where the
  caller put it, as 1.5 does.
"""

from __future__ import annotations

from typing import Any

from visctl.errors import DependencyError

SUPPORTED = ">=1.4.8,<1.6"
_MIN, _MAX = (1, 4, 8), (1, 6)


def _parse(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:  # 1.5.0rc1: stop at the pre-release tag
            break
    return tuple(parts)


def installed_version() -> str | None:
    """grad-cam's distribution version, or None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("grad-cam")
    except metadata.PackageNotFoundError:
        return None


def is_supported(version: str) -> bool:
    """Whether visctl works with grad-cam ``version``."""
    v = _parse(version)
    return _MIN <= v < _MAX


def check() -> str:
    """grad-cam's version, or a :class:`DependencyError` naming the version found and the range supported."""
    version = installed_version()
    if version is None:
        raise DependencyError("grad-cam is not installed (visctl supports grad-cam " + SUPPORTED + ")",
                              hint=f"pip install 'grad-cam{SUPPORTED}'")
    if not is_supported(version):
        raise DependencyError(f"grad-cam {version} is installed; visctl supports grad-cam {SUPPORTED}",
                              hint=f"pip install 'grad-cam{SUPPORTED}' (OpenMMLab's vis_cam.py needs 1.4.x)")
    return version


class _Recording:
    """Calls the wrapped ``ActivationsAndGradients`` and keeps its last output (the model's)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last: Any = None

    def __call__(self, x: Any) -> Any:
        self.last = self.inner(x)
        return self.last

    def __getattr__(self, name: str) -> Any:  # release(), activations, gradients, ...
        return getattr(self.inner, name)


# grad-cam classes that 1.4.8 does not have (pytorch_grad_cam/__init__.py of 1.4.8 and 1.5.x)
NEW_IN_1_5 = frozenset({"ShapleyCAM", "KPCA_CAM", "FEM"})


def available(name: str) -> bool:
    """Whether the installed grad-cam has class ``name`` (from its version: importing grad-cam takes seconds)."""
    version = installed_version()
    return name not in NEW_IN_1_5 or version is None or _parse(version) >= (1, 5)


def cam_class(name: str) -> type:
    """grad-cam's class ``name``, or a :class:`DependencyError` when this grad-cam version has none."""
    version = check()
    import pytorch_grad_cam as gc

    cls = getattr(gc, name, None)
    if cls is None:
        raise DependencyError(f"grad-cam {version} has no {name} (added in grad-cam 1.5)",
                              hint="choose another method=, or pip install 'grad-cam>=1.5,<1.6'")
    return cls


def build(cls: type, model: Any, target_layers: list[Any], **kwargs: Any) -> Any:
    """``cls(model, target_layers, **kwargs)`` for either grad-cam version, recording the model's output.

    1.4.x's ``use_cuda`` is left at its default, False: the model stays where visctl placed it.
    """
    cam = cls(model, target_layers, **kwargs)
    cam.activations_and_grads = _Recording(cam.activations_and_grads)
    return cam


def outputs(cam: Any) -> Any:
    """The model's output of the CAM's last forward (``cam.outputs`` in 1.5, recorded by :func:`build`)."""
    found = getattr(cam, "outputs", None)
    if found is not None:
        return found
    recorder = cam.activations_and_grads
    return recorder.last if isinstance(recorder, _Recording) else None


def release(cam: Any) -> None:
    """Remove the CAM's hooks from the model."""
    cam.activations_and_grads.release()
