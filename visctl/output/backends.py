"""mmengine vis backends (``--backend local|tensorboard|wandb``): checked before the run, fed after it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BACKENDS = ("local", "tensorboard", "wandb")


def _present(module: str) -> bool:
    """Whether ``module`` can be imported (found, without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing, or a broken module entry
        return False


def check_backend(name: str) -> None:
    """Fail before any work (before the config, the model or the data) when a vis backend cannot run: every
    backend is mmengine's Visualizer (not in a plain install), which reads the images back with OpenCV, and
    tensorboard or wandb need their own package."""
    from visctl.errors import VisctlError, needs

    if name not in BACKENDS:
        raise VisctlError(f"unknown --backend {name!r}", hint=f"use one of {', '.join(BACKENDS)}")
    for module, label in (("mmengine", "mmengine"), ("cv2", "OpenCV")):
        if not _present(module):
            raise needs(f"--backend {name} (mmengine's vis backends)", module, f"{label} is not installed")
    if not _present("mmengine.visualization"):
        raise VisctlError(f"--backend {name}: this mmengine has no mmengine.visualization (its vis backends)",
                          hint='install the full mmengine or mmengine-lite >= 0.10 (pip install "visctl[lite]")')
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name)
    if package and not _present(package):
        raise VisctlError(f"--backend {name} needs the {package} package",
                          hint=f'pip install "visctl[{name}]" (or pip install {package})')


def push_to_backend(name: str, out_dir: Path, images: list[tuple[str, Path]], command: str) -> Path:
    """Log the run's images through an mmengine vis backend (LocalVisBackend, TensorboardVisBackend or
    WandbVisBackend, offline unless wandb is configured); returns the backend's save directory."""
    import uuid

    import cv2
    from mmengine.visualization import Visualizer

    kind = {"local": "LocalVisBackend", "tensorboard": "TensorboardVisBackend", "wandb": "WandbVisBackend"}[name]
    backend: dict[str, Any] = dict(type=kind)
    if name == "wandb":
        backend["init_kwargs"] = dict(project="visctl", name=command, dir=str(out_dir))
        if not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
            # never upload unless the user set wandb up; passed to wandb.init, not set in os.environ, so the
            # caller's process (a notebook's later wandb runs) is left as it was
            backend["init_kwargs"]["mode"] = "offline"
    # mmengine's Visualizer writes to <save_dir>/vis_data itself (peers doc §10): give it the run directory
    instance = f"visctl-{uuid.uuid4().hex}"
    vis = Visualizer.get_instance(instance, vis_backends=[backend], save_dir=str(out_dir))
    try:
        for step, (tag, path) in enumerate(images):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None:
                vis.add_image(tag, cv2.cvtColor(img, cv2.COLOR_BGR2RGB), step=step)
    finally:
        vis.close()
        # mmengine keeps every named instance in a class-level registry: drop ours, the run is over
        getattr(Visualizer, "_instance_dict", {}).pop(instance, None)
    return Path(out_dir) / "vis_data"
