"""`visctl pipeline`: a dataset through its transforms, step by step."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.context import RunContext

EPILOG = """Examples:

  visctl pipeline cfg.py --phase train --number 8 --mode pipeline

  visctl pipeline cfg.py --mode concat --adaptive --min-edge-length 200 --max-edge-length 1000
"""

SKIP = ["ToTensor", "Normalize", "ImageToTensor", "Collect", "PackInputs"]


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


def pipeline(
    config_file: Annotated[str, typer.Argument(metavar="CONFIG", help="A config with <phase>_dataloader.dataset.",
                                               show_default=False)],
    phase: Annotated[Phase, typer.Option("--phase", "-p", help="Which dataloader's dataset and pipeline.")
                     ] = Phase.train,
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
    cfg_options: opt.CfgOptions = None,
    out_dir: opt.OutDir = None,
    backend: opt.Backend = None,
    show: opt.Show = False,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
    seed: Annotated[int, typer.Option(
        "--seed", min=0, max=opt.SEED_MAX, help="Seed of the random transforms (the same views each run).")
                    ] = 0,
    debug: opt.Debug = False,
    max_pixels: opt.MaxPixels = opt.DEFAULT_MAX_PIXELS,
) -> None:
    """Show samples of a dataset through its pipeline: original, transformed, or every step."""
    with RunContext("pipeline", out_dir=out_dir, quiet=quiet, json_out=json_out, debug=debug, seed=seed,
                    cfg_options=cfg_options, backend=backend, show=show, max_pixels=max_pixels) as ctx:
        from visctl import datasets, output, render

        cfg = ctx.load_config(config_file)
        ds_cfg, steps = datasets.dataset_config(cfg, phase.value)
        dataset = datasets.build_dataset(ds_cfg, phase.value, warn=ctx.warn, max_pixels=ctx.max_pixels)
        skip = tuple(skip_type if skip_type is not None else SKIP)
        samples = datasets.PipelineSamples(dataset, steps, seed=seed, record=mode is Mode.pipeline, skip_types=skip)
        count = len(dataset) if number < 0 else min(number, len(dataset))
        writer = ctx.open_writer(dict(config=config_file, phase=phase.value, number=count, mode=mode.value,
                                      skip_type=list(skip), adaptive=adaptive, seed=seed,
                                      steps=[s for s in samples.steps]))
        names = [dataset.name(i) for i in range(count)]
        ctx.protect(*names)
        stems = output.input_stems([Path(n) for n in names])
        with ctx.progress(count, "pipeline") as advance:
            for item in datasets.iterate(samples, list(range(count))):
                advance()
                name = names[item["index"]]
                if item["error"]:
                    ctx.skip(name, item["error"])
                    continue
                class_name = dataset.class_name(item["label"])
                label = ("no label" if item["label"] is None else f"label {item['label']}" +
                         (f": {class_name}" if class_name is not None else ""))
                figure = render.pipeline_figure(item, mode.value, label, adaptive, min_edge_length,
                                                max_edge_length, bgr2rgb)
                writer.save_image(f"{stems[Path(name)]}_{mode.value}.png", figure,
                                  caption=f"{Path(name).name}: {label}", input=name)
                writer.add_input(name, label=item["label"], class_name=class_name, views=len(item["views"]))
        ctx.finish()
