"""`visctl lr`: learning-rate, momentum and weight-decay schedules exactly as training steps them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import LogLevel, Parameter
from visctl.commands._shared import execute
from visctl.context import RunContext
from visctl.options import LrOptions

EPILOG = """Examples:

  visctl lr configs/resnet50_8xb32_in1k.py --dataset-size 1281167 --ngpus 8

  visctl lr cfg.py -d 50000 --batch-size 128 --drop-last --log-scale --csv lr.csv

  visctl lr cfg.py -d 50000 -p momentum      # only the momentum panel (the CSV keeps every column)
"""


@opt.shared("not_show", "cfg_options", "out_dir", "backend", "show", "json_out", "quiet", "debug",
            settings=LrOptions,
            json_out=opt.Param(Annotated[bool, typer.Option(
                "--json", help="Print the manifest and every iteration's values as JSON on stdout.")], False))
def lr(
    config_file: Annotated[str, typer.Argument(metavar="CONFIG", help="An mmengine config with optim_wrapper, "
                                               "param_scheduler and train_cfg.", show_default=False)],
    dataset_size: Annotated[Optional[int], typer.Option(
        "--dataset-size", "--dataset_size", "-d", min=1,
        help="Training images (no dataset is built) [default: counted from the config's dataset].")] = None,
    ngpus: Annotated[int, typer.Option("--ngpus", "-n", min=1, help="GPUs (total batch = batch x GPUs).")] = 1,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", "--batch_size", min=1, help="Per-GPU batch [default: train_dataloader.batch_size].")] = None,
    drop_last: Annotated[Optional[bool], typer.Option(
        "--drop-last/--no-drop-last", help="Whether the last incomplete batch is dropped (floor instead of ceil) "
        "[default: train_dataloader.drop_last].", show_default=False)] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Plot title [default: the config's name].")] = None,
    style: Annotated[Optional[str], typer.Option("--style", help="A matplotlib style, e.g. ggplot or "
                                                 "seaborn-v0_8-whitegrid.")] = None,
    window_size: Annotated[str, typer.Option("--window-size", "--window_size", help="Figure size W*H in inches.")
                           ] = "12*7",
    log_scale: Annotated[bool, typer.Option(
        "--log-scale", help="Logarithmic axis for the learning rate (or the --parameter plotted).")] = False,
    save_path: Annotated[Optional[Path], typer.Option("--save-path", "--save_path", "-s",
                                                      help="The plot's file [default: OUT_DIR/lr.png].")] = None,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Write every iteration's values as CSV.")] = None,
    parameter: Annotated[Optional[Parameter], typer.Option(
        "--parameter", "-p", case_sensitive=False, help="Plot only this: lr, momentum or wd (weight decay) "
        "[default: all that change].", show_default=False)] = None,
    log_level: Annotated[LogLevel, typer.Option(
        "--log-level", "--log_level", case_sensitive=False, help="DEBUG = --debug (tracebacks, every detail); "
        "INFO and above: the default messages.")] = LogLevel.WARNING,
    *,
    opts: opt.CommandOptions,
    settings: LrOptions,
) -> None:
    """Plot the LR (every param group), momentum and weight decay per iteration."""
    debug = opts.debug or log_level is LogLevel.DEBUG  # the seed's logger levels onto visctl's verbosity
    with RunContext("lr", opts.replace(debug=debug), out_dir=save_path.parent if save_path else opts.out_dir,
                    out_files=[("--save-path", save_path), ("--csv", csv)]) as ctx:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        from visctl.library import schedule as lib
        from visctl.output.checks import check_output_file

        lib.parse_window(settings.window_size)  # a bad --window-size before the output checks, as ever
        formats = tuple(f".{ext}" for ext in FigureCanvasAgg.get_supported_filetypes())
        check_output_file(save_path, "--save-path", formats if save_path and save_path.suffix else None)
        check_output_file(csv, "--csv", None)
        run = lib.plan(ctx.session, config_file, settings, plot_target=save_path, csv_target=csv)
        for flag, target in (("--save-path", save_path), ("--csv", csv)):  # before the folder's record
            lib.check_target(run.result.sources, target, flag)
        execute(ctx, run)
