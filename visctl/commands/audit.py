"""`visctl audit`: where a classifier looks over a whole labelled dataset, per class and per image; for CI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import Phase
from visctl.commands._shared import finish
from visctl.context import RunContext

EPILOG = """Examples:

  visctl audit cfg.py ckpt.pth --annotations instances_val.json --fail-under pointing=0.8

  visctl audit cfg.py ckpt.pth --data val/ --region masks/ --compare last_week.pth

  visctl audit cfg.py ckpt.pth --agree-with layercam --json     # no annotations: border, entropy, agreement
"""


@opt.shared(*opt.MODEL)
def audit(
    config_file: Annotated[str, typer.Argument(metavar="CONFIG", help="A classifier's config (or model name).",
                                               show_default=False)],
    checkpoint: Annotated[Optional[str], typer.Argument(metavar="[CHECKPOINT]", help="Weights [default: load_from].",
                                                        show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="A folder of class folders (ROOT/<class>/*.jpg) [default: the config's test, else val, "
        "dataset].", show_default=False, rich_help_panel="Data")] = None,
    phase: Annotated[Optional[Phase], typer.Option(
        "--phase", "-p", help="The config's dataloader to audit [default: test, else val].", show_default=False,
        rich_help_panel="Data")] = None,
    annotations: Annotated[Optional[Path], typer.Option(
        "--annotations", help="The objects' boxes: a COCO instances .json, a VOC .xml or a folder of them.",
        show_default=False, rich_help_panel="Data")] = None,
    region: Annotated[Optional[Path], typer.Option(
        "--region", help="A folder of object masks named like the images (.png or .npy, nonzero inside).",
        show_default=False, rich_help_panel="Data")] = None,
    method: Annotated[str, typer.Option(
        "--method", "-m", help="The CAM method of every map [default: gradcam, the gradient method that ranks "
        "first by faithfulness on the demo classifier].", rich_help_panel="CAM")] = "gradcam",
    agree_with: Annotated[Optional[str], typer.Option(
        "--agree-with", help="A second method: the agreement of its maps with --method's (Spearman, top-region "
        "IoU) is measured too.", show_default=False, rich_help_panel="CAM")] = None,
    target_layers: opt.TargetLayers = None,
    tolerance: Annotated[float, typer.Option(
        "--tolerance", min=0.0, help="Pointing game: a peak this many pixels from the object is a hit (Zhang et "
        "al. 2018 use 15).", rich_help_panel="Measures")] = 15.0,
    top_percent: Annotated[float, typer.Option(
        "--top-percent", max=100.0, help="The map's top region for the IoU measures, in % of the "
        "pixels (above 0).", rich_help_panel="Measures")] = 20.0,
    border: Annotated[float, typer.Option(
        "--border", max=0.5, help="The border band's width, as a share of the image's short side (above 0; "
        "at least 1 px).",
        rich_help_panel="Measures")] = 0.1,
    worst: Annotated[int, typer.Option(
        "--worst", min=0, help="Thumbnails of the N worst images (and N most-moved with --compare) in the "
        "report.", rich_help_panel="Output")] = 48,
    compare: Annotated[Optional[str], typer.Option(
        "--compare", help="A second checkpoint of the same config: audited on the same images, and what moved "
        "per class and per image (audit_compare.csv, the report).", show_default=False,
        rich_help_panel="Measures")] = None,
    fail_under: Annotated[Optional[list[str]], typer.Option(
        "--fail-under", help="NAME=VALUE: exit 1 when the run's mean of NAME is under VALUE (repeatable or "
        "comma-separated); NAME is accuracy, pointing, energy, iou, border, entropy, spearman, agreement_iou "
        "or right_reason.", show_default=False, rich_help_panel="Measures")] = None,
    *,
    opts: opt.CommandOptions,
) -> None:
    """Audit where a classifier looks over a labelled dataset: localisation per image and class, for CI."""
    import sys
    import time

    from visctl import audits
    from visctl.library import audit as library

    with RunContext("audit", opts, out_dir=opts.out_dir) as ctx:
        thresholds = audits.parse_thresholds(fail_under)  # before anything loads
        run = library.start(ctx.session, config_file, checkpoint, data=data, phase=phase.value if phase else None,
                            annotations=annotations, region=region, method=method, agree_with=agree_with,
                            target_layers=opt.split_list(target_layers), tolerance=tolerance, top_percent=top_percent,
                            border=border, worst=worst, compare=compare, fail_under=thresholds,
                            batch_size=opts.batch_size or 16)
        writer = ctx.open_writer(run.params)
        writer.background(1)  # the thumbnails, written while the report is made
        rows = library.CsvStream(writer, library.CSV_NAME, audits.csv_header())
        pairs = library.CsvStream(writer, library.COMPARE_CSV, library.compare_header()) if run.other else None
        done: list[str] = []  # listed as inputs once the CSV holding their rows is in place (an interrupt: none)
        try:
            for row, pair in run.items():  # each row on disk as it is made; nothing per image is kept but its path
                rows.write(audits.csv_line(row))
                if pairs is not None and pair is not None:
                    pairs.write(library.compare_line(pair))
                if ctx.world > 1:  # torchrun: the ranks' inputs are merged below
                    writer.add_input(row["path"])
                else:
                    done.append(row["path"])
            run.merge_ranks(writer)  # under torchrun: every rank's records and tallies, on every rank
            summary = run.summary()
            streams = [(rows, "one row per image: every measure")]
            if pairs is not None:
                streams.append((pairs, "both checkpoints per image, and what moved"))
            for stream, caption in streams:
                if ctx.world > 1:  # rank 0 merges every rank's rows in the run's order
                    from visctl import distributed

                    parts = distributed.gather(stream.part())
                    if not ctx.rank:
                        stream.merge(parts, caption)
                else:
                    stream.close(caption)
            for path in done:
                writer.add_input(path)
        finally:
            rows.abort()
            if pairs is not None:
                pairs.abort()
        if not ctx.rank:
            library.write_report(writer, summary, run.worst.kept, run.moved.kept if run.moved else [])
        writer.manifest["timings"]["audit_s"] = round(time.time() - run.started, 3)
        for line in audits.table(summary):
            ctx.log(line)
        code = 0
        try:
            finish(ctx)
        except typer.Exit as done:
            code = done.exit_code
        if summary["failed"]:  # every rank: torchrun's status is the ranks'
            if not ctx.rank:
                print("failed: " + "; ".join(summary["failed"]) + " (--fail-under)", file=sys.stderr)
            code = code or 1
        if code:
            raise typer.Exit(code)
