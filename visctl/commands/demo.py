"""`visctl demo`: every command on the shipped demo models and generated data, one gallery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from visctl import _options as opt

EPILOG = """Examples:

  visctl demo

  visctl demo -o /tmp/visctl-demo --images 16
"""


def examples_dir() -> Path:
    """The examples/ folder of the checkout visctl runs from (demo configs and checkpoints)."""
    return Path(__file__).resolve().parents[2] / "examples"


@opt.shared("threads", "quiet")
def demo(
    images: Annotated[int, typer.Option("--images", min=4, max=200, help="Generated images per dataset.")] = 12,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", "-o", help="Output root.")] = None,
    *,
    opts: opt.CommandOptions,
) -> None:
    """Run every command on the demo models and print the path of the gallery that links the results."""
    import time

    from visctl.context import RunContext
    from visctl.errors import VisctlError, missing_optional
    from visctl.gallery import write_root_index

    root = (out_dir or Path("visctl-out") / "demo").resolve()
    with RunContext("demo", opts, out_dir=root) as ctx:
        configs = _configs()
        data = _write_data(root, images)
        for name, call in _steps(configs, data, images, ctx.threads):
            started = time.time()
            try:
                result = call()
            except Exception as exc:  # a plain install (no mmengine): the steps that need it are left out
                missing = exc if isinstance(exc, VisctlError) else missing_optional(exc, f"visctl demo's {name} step")
                if getattr(missing, "missing", None) != "mmengine":
                    raise
                ctx.warn(f"{name} left out: {missing.message}")  # type: ignore[union-attr]
                continue
            result.save(root / name)
            for path, error in result.failures:
                ctx.warn(f"{name}: {path}: {error}")
            ctx.log(f"{name:16s} {time.time() - started:5.1f} s  -> {root / name}")
        ctx.result(str(write_root_index(root)))  # on the real stdout: RunContext sends print() to stderr


def _configs() -> dict[str, Path]:
    """The demo models' configs in examples/: classifier, detector, mae, segmenter."""
    from visctl.errors import InputError

    ex = examples_dir()
    configs = {kind: ex / f"demo_{kind}" / "config.py" for kind in ("classifier", "detector", "mae", "segmenter")}
    for cfg in configs.values():
        if not cfg.is_file():
            raise InputError(f"demo config not found: {cfg}",
                             hint="run visctl demo from a clone of the repository (pip install -e .)")
    return configs


def _steps(configs: dict[str, Path], data: dict[str, Path], images: int, threads: int | None,
           ) -> list[tuple[str, Callable[[], Any]]]:
    """Each step is a library call; its result is saved as the command would save it."""
    import visctl
    from visctl.session import RunOptions

    cls_cfg, det_cfg, mae_cfg, seg_cfg = (configs[k] for k in ("classifier", "detector", "mae", "segmenter"))
    data_root = f"test_dataloader.dataset.data_root={data['embedding']}"
    train_root = f"train_dataloader.dataset.data_root={data['classes']}"
    base = RunOptions(threads=threads)
    seeded = base.replace(seed=0)
    classes, first4 = str(data["classes"]), [str(p) for p in sorted(data["classes"].rglob("*.png"))[:4]]
    return [
        ("cam", lambda: visctl.cam(classes, cls_cfg, method="gradcam,layercam,eigencam", topk=2, options=seeded)),
        ("cam-score", lambda: visctl.cam(first4, cls_cfg, method="gradcam,layercam,eigencam", score=True,
                                         options=seeded)),
        ("cam-segmentation", lambda: visctl.cam(str(data["seg"]), seg_cfg, method="gradcam,layercam", options=base)),
        ("featmap", lambda: visctl.featmap(classes, cls_cfg, target_layers=["backbone.layer2", "backbone.layer4"],
                                           options=base)),
        ("tsne", lambda: visctl.tsne(cls_cfg, n_iter=500, options=base.replace(cfg_options=[data_root]))),
        ("pipeline", lambda: visctl.pipeline(cls_cfg, number=4, mode="pipeline",
                                             options=base.replace(cfg_options=[train_root]))),
        ("browse", lambda: visctl.browse(cls_cfg, number=images, options=base.replace(cfg_options=[train_root]))),
        ("lr", lambda: visctl.lr(cls_cfg, dataset_size=6000, options=base)),
        ("boxam", lambda: visctl.boxam(str(data["scenes"]), det_cfg, per_box=True, options=base)),
        ("slice", lambda: visctl.slice(str(data["big"]), det_cfg, patch_size=128, debug=True, options=base)),
        ("recon", lambda: visctl.recon(str(data["mae"]), mae_cfg, seed=0, options=base)),
    ]


def _write_data(root: Path, n: int) -> dict[str, Path]:
    import cv2

    from visctl.shapes import make_scene, write_scenes

    out = {"classes": root / "data", "scenes": root / "scenes", "mae": root / "mae", "big": root / "big.png",
           "embedding": root / "data-tsne", "seg": root / "seg"}
    write_scenes(out["classes"], range(100_000, 100_000 + n))
    write_scenes(out["embedding"], range(110_000, 110_160))  # 40 per class for the t-SNE
    for key, folder, size, count, objects in (("scenes", out["scenes"], 128, 4, 3), ("mae", out["mae"], 64, 4, 1)):
        folder.mkdir(parents=True, exist_ok=True)
        base = 200_000 if key == "scenes" else 300_000
        for s in range(base, base + count):
            scene = make_scene(s, size, objects, 10, 26 if key == "mae" else 36, clutter=key != "mae")
            cv2.imwrite(str(folder / f"{s}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    out["seg"].mkdir(parents=True, exist_ok=True)
    for s in range(100_002, 100_006):  # as the segmenter was trained: 96 px, one to three shapes
        scene = make_scene(s, 96, 1 + s % 3)
        cv2.imwrite(str(out["seg"] / f"{s}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    big = make_scene(7, (512, 768), n_objects=24, min_side=12, max_side=28)
    cv2.imwrite(str(out["big"]), cv2.cvtColor(big.image, cv2.COLOR_RGB2BGR))
    return out
