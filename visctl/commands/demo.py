"""`visctl demo`: every command on the shipped demo models and generated data, one gallery."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt

EPILOG = """Examples:

  visctl demo

  visctl demo -o /tmp/visctl-demo --images 16
"""


def examples_dir() -> Path:
    """The examples/ folder of the checkout visctl runs from (demo configs and checkpoints)."""
    here = Path(__file__).resolve().parents[2] / "examples"
    return here


def demo(
    images: Annotated[int, typer.Option("--images", min=1, max=200, help="Generated images per command.")] = 8,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", "-o", help="Output root.")] = None,
    threads: opt.Threads = None,
    quiet: opt.Quiet = False,
) -> None:
    """Run every command on the demo models and print the gallery's path."""
    from visctl.context import RunContext
    from visctl.errors import InputError

    root = out_dir or Path("visctl-out") / "demo"
    with RunContext("demo", out_dir=root, threads=threads, quiet=quiet) as ctx:
        cfg = examples_dir() / "demo_classifier" / "config.py"
        if not cfg.is_file():
            raise InputError(f"demo models not found under {examples_dir()}",
                             hint="run visctl demo from a clone of the repository installed with pip install -e .")
        from visctl.shapes import write_scenes

        data = root / "data"
        write_scenes(data, range(100_000, 100_000 + images))
        from visctl.commands.cam import cam

        ctx.log("cam: GradCAM, LayerCAM and EigenCAM of the demo classifier, top-2 classes")
        import contextlib
        import io

        # each command prints its outputs on stdout; the demo's stdout is the gallery path alone
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                cam([str(data), str(cfg)], method="gradcam,layercam,eigencam", topk=2, out_dir=root / "cam",
                    threads=ctx.threads, quiet=True, seed=0)
            except typer.Exit as exc:
                if exc.exit_code:
                    raise
        from visctl.output import write_root_index

        index = write_root_index(root)
        print(index)
