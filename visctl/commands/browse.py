"""`visctl browse`: a dataset as the model receives it, after its whole pipeline, in labelled grids."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.commands.pipeline import SKIP, Phase
from visctl.context import RunContext

EPILOG = """Examples:

  visctl browse cfg.py --phase train --number 64 --rows 4 --cols 4

  visctl browse simclr.py --num-workers 2       # every view of a multi-view pipeline

  visctl browse simsiam.py --skip-type RandomResizedCrop ColorJitter
"""


def browse(
    config_file: Annotated[str, typer.Argument(metavar="CONFIG", help="A config with <phase>_dataloader.dataset.",
                                               show_default=False)],
    phase: Annotated[Phase, typer.Option("--phase", "-p", help="Which dataloader's dataset and pipeline.")
                     ] = Phase.train,
    number: Annotated[int, typer.Option("--number", "--show-number", "-n", help="Samples, from the first (-1: all).")
                      ] = 32,
    skip_type: Annotated[Optional[list[str]], typer.Option(
        "--skip-type", "--skip_type", help="Transform types left out (repeatable) "
        f"[default: {' '.join(SKIP)}].", show_default=False)] = None,
    rows: Annotated[int, typer.Option("--rows", "-r", min=1, help="Grid rows per page.")] = 4,
    cols: Annotated[int, typer.Option("--cols", "-c", min=1, help="Grid columns per page.")] = 4,
    num_workers: Annotated[int, typer.Option("--num-workers", "--num_workers", "-j", min=0, max=opt.WORKERS_MAX,
                                             help="DataLoader worker processes.")] = 0,
    show_interval: Annotated[float, typer.Option("--show-interval", "-i", min=0.0,
                                                 help="Seconds per page with --show.")] = 2.0,
    not_show: Annotated[bool, typer.Option("--not-show", help="Accepted for the peer's habit; visctl shows only "
                                           "with --show.", hidden=True)] = False,
    cfg_options: opt.CfgOptions = None,
    out_dir: opt.OutDir = None,
    backend: opt.Backend = None,
    show: opt.Show = False,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
    seed: Annotated[int, typer.Option("--seed", min=0, max=opt.SEED_MAX, help="Seed of the random transforms.")] = 0,
    debug: opt.Debug = False,
    max_pixels: opt.MaxPixels = opt.DEFAULT_MAX_PIXELS,
) -> None:
    """Browse a dataset after its pipeline, in grids with class names (multi-view and masks included)."""
    with RunContext("browse", out_dir=out_dir, quiet=quiet, json_out=json_out, debug=debug, seed=seed,
                    cfg_options=cfg_options, backend=backend, show=show, max_pixels=max_pixels) as ctx:
        ctx.show_interval = show_interval
        from visctl import datasets, output, render

        cfg = ctx.load_config(config_file)
        ds_cfg, steps = datasets.dataset_config(cfg, phase.value)
        dataset = datasets.build_dataset(ds_cfg, phase.value, warn=ctx.warn, max_pixels=ctx.max_pixels)
        skip = tuple(skip_type if skip_type is not None else SKIP)
        samples = datasets.PipelineSamples(dataset, steps, seed=seed, skip_types=skip)
        count = len(dataset) if number < 0 else min(number, len(dataset))
        ctx.protect(*(dataset.name(i) for i in range(count)))
        writer = ctx.open_writer(dict(config=config_file, phase=phase.value, number=count, rows=rows, cols=cols,
                                      num_workers=num_workers, seed=seed, skip_type=list(skip)))
        per_page = rows * cols
        cells: list = []
        drawn: list[tuple[str, dict]] = []  # the samples on the page being filled: inputs once it is written
        pages = 0

        def flush() -> None:
            nonlocal pages, cells
            if cells:
                page = render.grid(cells, cols=cols)
                first = pages * per_page
                with output.uninterrupted():  # a page and its samples are listed together
                    writer.save_image(f"browse_{phase.value}_{pages:03d}.png", page,
                                      caption=f"{phase.value} samples {first}-{first + len(cells) - 1}")
                    for name, info in drawn:
                        writer.add_input(name, **info)
                pages += 1
                cells = []
                drawn.clear()

        with ctx.progress(count, "browse") as advance:
            for item in datasets.iterate(samples, list(range(count)), num_workers=num_workers):
                advance()
                if item["error"]:
                    ctx.skip(item["name"], item["error"])
                    continue
                label = item["label"]
                name = dataset.class_name(label)
                text = "no label" if label is None else f"{label}: {name}" if name is not None else str(label)
                views = [render.draw_mask(v, m) if m is not None else v for v, m in zip(item["views"], item["masks"])]
                strip = render.grid([render.fit(v, 160) for v in views], cols=len(views), gap=2)
                text = f"#{item['index']} {text}" + (f" ({len(views)} views)" if len(views) > 1 else "")
                cells.append(render.caption(strip, text))
                drawn.append((item["name"], dict(label=label, class_name=name, caption=text, page=pages,
                                                 views=len(views), shape=list(item["views"][0].shape[:2]))))
                if len(cells) == per_page:
                    flush()
        flush()
        ctx.finish()
