"""`visctl pipeline`: a dataset through its transforms, step by step."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import Mode, Phase
from visctl.context import RunContext
from visctl.options import PipelineOptions

EPILOG = """Examples:

  visctl pipeline cfg.py --phase train --number 8 --mode pipeline

  visctl pipeline cfg.py --mode concat --adaptive --min-edge-length 200 --max-edge-length 1000

  visctl pipeline cifar10.py -p val -m original -r 10 -c RGB     # mmpretrain's browse_dataset.py flags
"""


@opt.shared(*opt.SHOWING, *opt.DATA, seed=opt.seed("Seed of the random transforms (the same views each run)."),
            settings=PipelineOptions)
def pipeline(
    config_file: opt.DataConfig,
    phase: opt.PhaseOption = Phase.train,
    number: Annotated[int, typer.Option("--number", "--show-number", "--show_number", "-n",
                                        help="How many samples, from the first (-1: all).")] = 20,
    skip_type: Annotated[Optional[list[str]], typer.Option(
        "--skip-type", "--skip_type", help="Transform types left out (repeatable; replaces the default list) "
        "[default: ToTensor Normalize ImageToTensor Collect PackInputs].", show_default=False)] = None,
    mode: Annotated[Mode, typer.Option("--mode", "-m", help="original, transformed, concat (both), or pipeline "
                                       "(every step).")] = Mode.concat,
    adaptive: Annotated[bool, typer.Option("--adaptive", help="Scale each panel into the edge limits.")] = False,
    min_edge_length: Annotated[int, typer.Option("--min-edge-length", "--min_edge_length", min=1,
                                                 help="With --adaptive: the shortest a panel's short edge may be "
                                                 "(pixels).")] = 200,
    max_edge_length: Annotated[int, typer.Option("--max-edge-length", "--max_edge_length", min=1,
                                                 help="With --adaptive: the longest a panel's long edge may be "
                                                 "(pixels); wins over --min-edge-length.")] = 1000,
    bgr2rgb: Annotated[bool, typer.Option("--bgr2rgb", help="Swap the channels of the loaded images.")] = False,
    window_size: Annotated[str, typer.Option("--window-size", "--window_size", help="W*H inches of --show.")
                           ] = "12*7",
    rescale_factor: opt.RescaleFactor = None,
    channel_order: opt.ChannelOrderOption = None,
    *,
    opts: opt.CommandOptions,
    settings: PipelineOptions,
) -> None:
    """Show samples of a dataset through its pipeline: original, transformed, or every step."""
    with RunContext("pipeline", opts, out_dir=opts.out_dir) as ctx:
        from visctl.commands._shared import execute
        from visctl.library import pipeline as lib

        execute(ctx, lib.plan(ctx.session, config_file, None, settings))
