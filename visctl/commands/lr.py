"""`visctl lr`: learning-rate, momentum and weight-decay schedules exactly as training steps them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from visctl import _options as opt
from visctl.context import RunContext

EPILOG = """Examples:

  visctl lr configs/resnet50_8xb32_in1k.py --dataset-size 1281167 --ngpus 8

  visctl lr cfg.py -d 50000 --batch-size 128 --drop-last --log-scale --csv lr.csv

  visctl lr cfg.py -d 50000 -p momentum      # only the momentum panel (the CSV keeps every column)
"""


class Parameter(str, Enum):
    """mmpretrain vis_scheduler's ``--parameter``: the one value to plot."""

    lr = "lr"
    momentum = "momentum"
    wd = "wd"


class LogLevel(str, Enum):
    """mmpretrain vis_scheduler's ``--log-level`` choices."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


#: --window-size bounds in inches: at 100 dpi, 50 inches is 5000 pixels (100 MB of RGBA)
WINDOW_MIN, WINDOW_MAX = 1.0, 50.0


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
    log_scale: Annotated[bool, typer.Option("--log-scale", help="Logarithmic learning-rate axis.")] = False,
    save_path: Annotated[Optional[Path], typer.Option("--save-path", "--save_path", "-s",
                                                      help="The plot's file [default: OUT_DIR/lr.png].")] = None,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Write every iteration's values as CSV.")] = None,
    parameter: Annotated[Optional[Parameter], typer.Option(
        "--parameter", "-p", case_sensitive=False, help="Plot only this: lr, momentum or wd (weight decay) "
        "[default: all that change].", show_default=False)] = None,
    not_show: Annotated[bool, typer.Option("--not-show", "--not_show", help="Accepted for the peer's habit; "
                                           "visctl shows only with --show.", hidden=True)] = False,
    log_level: Annotated[LogLevel, typer.Option(
        "--log-level", "--log_level", case_sensitive=False, help="DEBUG = --debug (tracebacks, every detail); "
        "INFO and above: the default messages.")] = LogLevel.WARNING,
    cfg_options: opt.CfgOptions = None,
    out_dir: opt.OutDir = None,
    backend: opt.Backend = None,
    show: opt.Show = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest and every iteration's values "
                                           "as JSON on stdout.")] = False,
    quiet: opt.Quiet = False,
    debug: opt.Debug = False,
) -> None:
    """Plot the LR (every param group), momentum and weight decay per iteration."""
    debug = debug or log_level is LogLevel.DEBUG  # the seed's logger levels onto visctl's verbosity
    with RunContext("lr", out_dir=save_path.parent if save_path else out_dir, quiet=quiet, json_out=json_out,
                    debug=debug, cfg_options=cfg_options, backend=backend, show=show,
                    out_files=[("--save-path", save_path), ("--csv", csv)]) as ctx:
        _run(ctx, config_file, dataset_size=dataset_size, ngpus=ngpus, batch_size=batch_size, drop_last=drop_last,
             title=title, style=style, window_size=window_size, log_scale=log_scale, save_path=save_path, csv=csv,
             parameter=parameter)


def _only(sched: Any, parameter: Parameter) -> tuple[Any, str]:
    """The schedule with ``parameter``'s values in the plotted lr slot and nothing else that changes."""
    import dataclasses

    from visctl.errors import ConfigError

    if parameter is Parameter.momentum and sched.momentum is None:
        raise ConfigError("the optimizer has no momentum (nor Adam betas) to plot",
                          hint="use --parameter lr or wd")
    values = {Parameter.lr: sched.lr, Parameter.momentum: sched.momentum, Parameter.wd: sched.weight_decay}[parameter]
    # weight_decay constant (zero) and no momentum: schedules.plot then draws one panel
    one = dataclasses.replace(sched, lr=values, momentum=None, weight_decay=values * 0.0)
    return one, {Parameter.lr: "learning rate", Parameter.momentum: "momentum", Parameter.wd: "weight decay"}[parameter]


def _run(ctx: RunContext, config_file: str, *, dataset_size: int | None, ngpus: int, batch_size: int | None,
         drop_last: bool | None, title: str | None, style: str | None, window_size: str, log_scale: bool,
         save_path: Path | None, csv: Path | None, parameter: Parameter | None = None) -> None:
    import io
    import time

    from visctl import config, output, schedules
    from visctl.errors import VisctlError

    try:
        w, h = (float(v) for v in window_size.lower().replace("x", "*").split("*"))
    except ValueError:
        raise VisctlError(f"--window-size {window_size!r}", hint="write W*H in inches, e.g. 12*7") from None
    if not (WINDOW_MIN <= w <= WINDOW_MAX and WINDOW_MIN <= h <= WINDOW_MAX):  # NaN fails too
        raise VisctlError(f"--window-size {window_size!r}: each side must be {WINDOW_MIN:g} to {WINDOW_MAX:g} inches "
                          "(the plot is drawn at 100 dpi)", hint="write W*H in inches, e.g. 12*7")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = tuple(f".{ext}" for ext in FigureCanvasAgg.get_supported_filetypes())
    if save_path is not None and save_path.suffix:
        output.check_output_file(save_path, "--save-path", formats)
    else:
        output.check_output_file(save_path, "--save-path", None)  # no suffix: a PNG
    output.check_output_file(csv, "--csv", None)
    if style:
        import matplotlib.style

        if style not in matplotlib.style.available and style != "default":
            raise VisctlError(f"unknown matplotlib style {style!r}",
                              hint=f"available: {', '.join(sorted(matplotlib.style.available))}")
    started = time.time()
    cfg = ctx.load_config(config_file)
    optim_cfg = cfg.get("optim_wrapper") or {}
    source = "--dataset-size"
    if dataset_size is None:
        found = schedules.dataset_size_from_config(config.cfg_get(cfg, "train_dataloader.dataset"))
        dataset_size, source = found if found else (None, "unknown")
    model = None
    if schedules.needs_model(optim_cfg) and cfg.get("model"):
        from visctl.errors import ModelError
        from visctl.models import build_model, config_dirs

        try:  # the real parameter names make paramwise_cfg's groups exact
            model = build_model(cfg.model, cfg.get("default_scope"), config_dirs(cfg))
        except ModelError as err:
            ctx.log(f"paramwise_cfg applied to stand-in parameters ({err.message})")
    sched = schedules.schedule_from_config(cfg, dataset_size=dataset_size, batch_size=batch_size, ngpus=ngpus,
                                           drop_last=drop_last, model=model)
    for note in sched.notes:
        ctx.log(note)
    size = f"dataset size {dataset_size} ({source}); " if dataset_size else ""
    ctx.log(f"{size}{sched.rule}; {sched.total_iters} iterations; {len(sched.groups)} distinct param group(s)")
    simulated = time.time() - started
    if parameter is None:
        fig = schedules.plot(sched, title or Path(config_file).stem, (w, h), style, log_scale)
    else:
        one, ylabel = _only(sched, parameter)
        fig = schedules.plot(one, title or f"{Path(config_file).stem} {ylabel}", (w, h), style, log_scale)
        fig.axes[0].set_ylabel(ylabel)
    writer = ctx.open_writer(dict(config=config_file, dataset_size_from=source, **sched.params,
                                  parameter=parameter.value if parameter else None),
                             out_dir=save_path.parent if save_path else None)
    for note in sched.notes:
        writer.note(note)
    target = save_path or writer.path("lr.png")
    buf = io.BytesIO()
    fig.savefig(buf, format=(target.suffix.lstrip(".") or "png"), dpi=100)
    writer.write_output("lr.png", buf.getvalue(), "image", caption=f"{title or Path(config_file).stem}: {sched.rule}",
                        target=target)
    values = sched.columns()
    if csv:
        writer.write_output("lr.csv", schedules.csv_text(values).encode(), "table", caption="per-iteration values",
                            target=csv)
    if ctx.json_out:
        writer.manifest["values"] = {k: v.tolist() for k, v in values.items()}
    writer.manifest["timings"]["simulate_s"] = round(simulated, 3)
    ctx.finish()
