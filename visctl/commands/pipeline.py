"""`visctl pipeline`: a dataset through its transforms, step by step."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.context import RunContext

EPILOG = """Examples:

  visctl pipeline cfg.py --phase train --number 8 --mode pipeline

  visctl pipeline cfg.py --mode concat --adaptive --min-edge-length 200 --max-edge-length 1000
"""

SKIP = ["ToTensor", "Normalize", "ImageToTensor", "Collect", "PackInputs"]  # = visctl.library.pipeline.SKIP


class Phase(str, Enum):
    """A dataloader of the config."""

    train = "train"
    val = "val"
    test = "test"


class Mode(str, Enum):
    """What each output shows."""

    original = "original"
    transformed = "transformed"
    concat = "concat"
    pipeline = "pipeline"


#: the dataset commands' (pipeline, browse) positional CONFIG and --phase
DataConfig = Annotated[str, typer.Argument(metavar="CONFIG", help="A config with <phase>_dataloader.dataset.",
                                           show_default=False)]
PhaseOption = Annotated[Phase, typer.Option("--phase", "-p", help="Which dataloader's dataset and pipeline.")]


@opt.shared(*opt.DATA, seed=opt.seed("Seed of the random transforms (the same views each run)."))
def pipeline(
    config_file: DataConfig,
    phase: PhaseOption = Phase.train,
    number: Annotated[int, typer.Option("--number", "-n", help="How many samples, from the first (-1: all).")] = 20,
    skip_type: Annotated[Optional[list[str]], typer.Option(
        "--skip-type", "--skip_type", help="Transform types left out (repeatable) "
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
    *,
    opts: opt.CommandOptions,
) -> None:
    """Show samples of a dataset through its pipeline: original, transformed, or every step."""
    with RunContext("pipeline", opts, out_dir=opts.out_dir) as ctx:
        from visctl.library import pipeline as lib

        run = lib.plan(config_file, phase=phase, number=number, skip_type=skip_type, mode=mode, adaptive=adaptive,
                       min_edge_length=min_edge_length, max_edge_length=max_edge_length, bgr2rgb=bgr2rgb, seed=opts.seed,
                       record=mode is Mode.pipeline, session=ctx, config_name=config_file)
        writer = ctx.open_writer(run.params)
        for view in lib.iter_pipeline_views(run, ctx):
            view.write(writer)
        ctx.finish()
