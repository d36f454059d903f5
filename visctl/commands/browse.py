"""`visctl browse`: a dataset as the model receives it, after its whole pipeline, in labelled grids."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.arguments import WORKERS_MAX
from visctl.choices import BrowseMode, Phase
from visctl.context import RunContext
from visctl.library.pipeline import SKIP

EPILOG = """Examples:

  visctl browse cfg.py --phase train --number 64 --rows 4 --cols 4

  visctl browse simclr.py --num-workers 2       # every view of a multi-view pipeline

  visctl browse resnet18_8xb32_in1k.py -o out -n 10 -m concat     # mmpretrain's browse_dataset.py flags

  visctl browse cifar10.py -p val -m original -r 10 -c RGB
"""



@opt.shared(*opt.DATA, seed=opt.seed("Seed of the random transforms."))
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
    show_interval: opt.ShowInterval = 2.0,
    not_show: opt.NotShow = False,
    *,
    opts: opt.CommandOptions,
) -> None:
    """Browse a dataset after its pipeline, in grids with class names (multi-view and masks included)."""
    with RunContext("browse", opts, out_dir=opts.out_dir) as ctx:
        ctx.show_interval = show_interval
        if mode is not BrowseMode.grid:  # mmpretrain's modes: one figure per sample, as `visctl pipeline` draws
            from visctl.errors import InputError
            from visctl.library import pipeline as per_sample

            if rows is not None or cols is not None:
                raise InputError(f"--rows/--cols lay out the grid pages; --mode {mode.value} draws one figure per "
                                 "sample", hint="leave out --rows/--cols, or --mode (grid pages)")

            views = per_sample.plan(config_file, phase=phase, number=number, skip_type=skip_type, mode=mode.value,
                                    rescale_factor=rescale_factor, channel_order=channel_order, seed=opts.seed,
                                    record=mode is BrowseMode.pipeline, num_workers=num_workers, session=ctx.session,
                                    config_name=config_file)
            writer = ctx.open_writer(views.params)
            for view in per_sample.iter_pipeline_views(views, ctx.session):
                view.write(writer)
            ctx.finish()
            return
        from visctl.library import browse as lib
        from visctl.library.pipeline import check_rescale

        check_rescale(rescale_factor, "grid")
        run = lib.plan(config_file, phase=phase, number=number, skip_type=skip_type, rows=rows or 4, cols=cols or 4,
                       num_workers=num_workers, channel_order=channel_order, seed=opts.seed, session=ctx.session,
                       config_name=config_file)
        writer = ctx.open_writer(run.params)
        # a page is drawn, encoded and written in one thread while the next one's samples load. One, not
        # output.io_threads(ctx.threads): browse has no --threads, so ctx.threads is every core (at most 16) and
        # that is 1 anyway, or up to 8 beyond 16 cores; and a page (~10 ms to draw, ~30 to encode) comes every 16
        # samples (~65 ms of pipeline), so a second writer would only queue, or take a core from torch's threads
        writer.background(1, queue=2)
        for page in lib.iter_pages(run, ctx.session, draw_in_writer=True):
            page.write(writer)
        ctx.finish()
