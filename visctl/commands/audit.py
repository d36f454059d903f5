"""`visctl audit`: where a classifier looks over a whole labelled dataset, per class and per image; for CI."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import Phase
from visctl.context import RunContext
from visctl.options import AuditOptions

EPILOG = """Examples:

  visctl audit cfg.py ckpt.pth --annotations instances_val.json --fail-under pointing=0.8

  visctl audit cfg.py ckpt.pth --data val/ --region masks/ --compare last_week.pth

  visctl audit cfg.py ckpt.pth --agree-with layercam --json     # no annotations: border, entropy, agreement
"""


@opt.shared(*opt.MODEL, settings=AuditOptions)
def audit(
    config_file: Annotated[str, typer.Argument(metavar="CONFIG", help="A classifier's config (or model name).",
                                               show_default=False)],
    checkpoint: Annotated[Optional[str], typer.Argument(metavar="[CHECKPOINT]", help="Weights [default: load_from].",
                                                        show_default=False)] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", help="A folder of class folders (ROOT/<class>/*.jpg) [default: the config's test, else val, "
        "dataset].", show_default=False, rich_help_panel="Data")] = None,
    phase: Annotated[Optional[Phase], typer.Option(
        "--phase", "-p", help="The config's dataloader to audit [default: test, else val].", show_default=False,
        rich_help_panel="Data")] = None,
    annotations: Annotated[Optional[str], typer.Option(
        "--annotations", help="The objects' boxes: a COCO instances .json, a VOC .xml or a folder of them.",
        show_default=False, rich_help_panel="Data")] = None,
    region: Annotated[Optional[str], typer.Option(
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
    settings: AuditOptions,
) -> None:
    """Audit where a classifier looks over a labelled dataset: localisation per image and class, for CI."""
    from visctl.commands._shared import execute
    from visctl.library import audit as library

    with RunContext("audit", opts, out_dir=opts.out_dir) as ctx:
        execute(ctx, library.plan(ctx.session, config_file, checkpoint, settings))
