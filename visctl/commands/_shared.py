"""The model commands' wiring from a command line to the library: ``IMG... CONFIG [CHECKPOINT]``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from visctl.context import RunContext
from visctl.library._common import ModelInputs, class_names, load_model, preview

__all__ = ["ModelInputs", "class_names", "finish", "load_model", "open_model", "preview"]


def open_model(ctx: RunContext, args: list[str], *,
               check_paths: Callable[[list[Path]], object] | None = None) -> ModelInputs:
    """Split ``IMG... CONFIG [CHECKPOINT]``, load the config and the model, and prepare one example.

    ``check_paths`` sees the gathered images before anything is loaded (to refuse an option that does not
    fit their number).
    """
    from visctl import config
    from visctl import images as imgs
    from visctl.library import _common

    args, extra_options = config.pop_cfg_options(args)
    ctx.cfg_options.extend(extra_options)
    img_specs, cfg_spec, checkpoint = config.split_inputs(args)
    paths = imgs.gather_images(img_specs, note=ctx.note)
    if check_paths is not None:
        check_paths(paths)
    return _common.open_model(ctx, cfg_spec, checkpoint, paths)


def finish(ctx: RunContext) -> None:
    """``ctx.finish()``, and under torchrun the end of every rank: rank 0 writes the run's one manifest and
    gallery (from the records that ``distributed.merge_records`` gathered) and prints the results while the
    other ranks wait (torchrun stops every rank as soon as one exits with a failure), then all leave the
    process group with the same status: 1 when an input failed on any rank."""
    if ctx.world <= 1:
        ctx.finish()
        return
    from visctl import distributed

    code = 0
    try:
        ctx.finish()
    except typer.Exit as done:
        code = done.exit_code
    distributed.leave()
    if code:
        raise typer.Exit(code)
