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


def demo(
    images: Annotated[int, typer.Option("--images", min=4, max=200, help="Generated images per dataset.")] = 12,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", "-o", help="Output root.")] = None,
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """Run every command on the demo models and print the path of the gallery that links the results."""
    import contextlib
    import io
    import time

    from visctl.context import RunContext
    from visctl.errors import InputError

    root = (out_dir or Path("visctl-out") / "demo").resolve()
    with RunContext("demo", out_dir=root, threads=threads, quiet=quiet) as ctx:
        ex = examples_dir()
        cls_cfg, det_cfg, mae_cfg, seg_cfg = (ex / d / "config.py" for d in (
            "demo_classifier", "demo_detector", "demo_mae", "demo_segmenter"))
        for cfg in (cls_cfg, det_cfg, mae_cfg, seg_cfg):
            if not cfg.is_file():
                raise InputError(f"demo config not found: {cfg}",
                                 hint="run visctl demo from a clone of the repository (pip install -e .)")
        data = _write_data(root, images)
        from visctl.commands import boxam, browse, cam, featmap, lr, pipeline, recon, slice, tsne

        data_root = f"test_dataloader.dataset.data_root={data['embedding']}"
        train_root = f"train_dataloader.dataset.data_root={data['classes']}"
        common = dict(threads=ctx.threads, quiet=True)
        steps: list[tuple[str, Callable[..., Any], dict]] = [
            ("cam", cam.cam, dict(args=[str(data["classes"]), str(cls_cfg)], method="gradcam,layercam,eigencam",
                                  topk=2, seed=0)),
            ("cam-score", cam.cam, dict(args=[*map(str, sorted(data["classes"].rglob("*.png"))[:4]), str(cls_cfg)],
                                        method="gradcam,layercam,eigencam", score=True, seed=0)),
            ("cam-segmentation", cam.cam, dict(args=[str(data["seg"]), str(seg_cfg)], method="gradcam,layercam")),
            ("featmap", featmap.featmap, dict(args=[str(data["classes"]), str(cls_cfg)],
                                              target_layers=["backbone.layer2,backbone.layer4"])),
            ("tsne", tsne.tsne, dict(config_file=str(cls_cfg), cfg_options=[data_root], n_iter=500)),
            ("pipeline", pipeline.pipeline, dict(config_file=str(cls_cfg), cfg_options=[train_root], number=4,
                                                 mode=pipeline.Mode.pipeline)),
            ("browse", browse.browse, dict(config_file=str(cls_cfg), cfg_options=[train_root], number=images)),
            ("lr", lr.lr, dict(config_file=str(cls_cfg), dataset_size=6000)),
            ("boxam", boxam.boxam, dict(args=[str(data["scenes"]), str(det_cfg)], per_box=True)),
            ("slice", slice.slice_, dict(args=[str(data["big"]), str(det_cfg)], patch_size=128, debug=True)),
            ("recon", recon.recon, dict(args=[str(data["mae"]), str(mae_cfg)], seed=0)),
        ]
        for name, fn, kwargs in steps:
            started = time.time()
            kwargs.setdefault("out_dir", root / name)
            if name not in ("lr", "pipeline", "browse"):
                kwargs.update(common)
            else:
                kwargs["quiet"] = True
            # each command prints its outputs on stdout; the demo's stdout is the gallery path alone
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    fn(**kwargs)
                except typer.Exit as exc:
                    if exc.exit_code:
                        ctx.warn(f"{name} exited with {exc.exit_code}")
            ctx.log(f"{name:16s} {time.time() - started:5.1f} s  -> {root / name}")
        from visctl.output import write_root_index

        ctx.result(str(write_root_index(root)))  # on the real stdout: RunContext sends print() to stderr


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
