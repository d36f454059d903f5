"""`visctl browse`: a dataset as the model receives it, after its whole pipeline, in labelled grids."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.arguments import WORKERS_MAX
from visctl.choices import BrowseMode, Phase
from visctl.context import RunContext
from visctl.library.pipeline import SKIP
from visctl.options import BrowseOptions

EPILOG = """Examples:

  visctl browse cfg.py --phase train --number 64 --rows 4 --cols 4

  visctl browse simclr.py --num-workers 2       # every view of a multi-view pipeline

  visctl browse resnet18_8xb32_in1k.py -o out -n 10 -m concat     # mmpretrain's browse_dataset.py flags

  visctl browse cifar10.py -p val -m original -r 10 -c RGB
"""



@opt.shared(*opt.SHOWING, *opt.DATA, seed=opt.seed("Seed of the random transforms."), settings=BrowseOptions)
def browse(
    config_file: opt.DataConfig,
    phase: opt.PhaseOption = Phase.train,
    number: Annotated[int, typer.Option("--number", "--show-number", "-n", help="Samples, from the first (-1: all).")
                      ] = 32,
    skip_type: Annotated[Optional[list[str]], typer.Option(
        "--skip-type", "--skip_type", help="Transform types left out (repeatable; replaces the default list) "
        f"[default: {' '.join(SKIP)}].", show_default=False)] = None,
    mode: Annotated[BrowseMode, typer.Option(
        "--mode", "-m", help="grid: pages of samples after the pipeline; original, transformed, concat (both) or "
        "pipeline (every step): one figure per sample, as mmpretrain's browse_dataset.py.")] = BrowseMode.grid,
    rescale_factor: opt.RescaleFactor = None,
    channel_order: opt.ChannelOrderOption = None,
    rows: Annotated[Optional[int], typer.Option(
        "--rows", min=1, show_default=False, help="Grid rows per page [default: 4] (-r is --rescale-factor).")] = None,
    cols: Annotated[Optional[int], typer.Option(
        "--cols", min=1, show_default=False, help="Grid columns per page [default: 4] (-c is --channel-order).")
    ] = None,
    num_workers: Annotated[int, typer.Option("--num-workers", "--num_workers", "-j", min=0, max=WORKERS_MAX,
                                             help="DataLoader worker processes.")] = 0,
    *,
    opts: opt.CommandOptions,
    settings: BrowseOptions,
) -> None:
    """Browse a dataset after its pipeline, in grids with class names (multi-view and masks included)."""
    with RunContext("browse", opts, out_dir=opts.out_dir) as ctx:
        from visctl.commands._shared import execute
        from visctl.library import browse as lib

        # a --mode other than grid: one figure per sample, as `visctl pipeline` draws (mmpretrain's modes)
        execute(ctx, lib.plan(ctx.session, config_file, settings))
