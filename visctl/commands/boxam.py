"""`visctl boxam`: box-level activation maps of a detector, drawn on the original images."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import BoxMethod
from visctl.context import RunContext
from visctl.options import BoxamOptions

EPILOG = """Examples:

  visctl boxam img.jpg examples/demo_detector/config.py --method gradcam --per-box

  visctl boxam imgs/ fasterrcnn_resnet50_fpn ckpt.pth --target-layers backbone.body.layer4 --norm-in-bbox

  visctl boxam img.jpg examples/demo_detector/config.py --method eigencam --max-shape 8 8
"""


@opt.shared(*opt.FIGURES, *opt.after("max_pixels", "image_format"), settings=BoxamOptions, batch_size=4,
            panel_size=opt.Param(opt.BoxamPanelSize, None))
def boxam(
    args: opt.DetectorInputs,
    method: Annotated[Optional[BoxMethod], typer.Option(
        "--method", "-m", case_sensitive=False,
        help="The CAM method; the gradient ones score each kept box [default: layercam, whose per-pixel "
        "gradients keep a box's map on the box; gradcam averages them over the whole map. On mmyolo/mmdet "
        "YOLOv5/v6/X and RTMDet detectors: gradcam as mmyolo's boxam_vis_demo, on their loss].",
        show_default=False)] = None,
    target_layers: opt.TargetLayers = None,
    topk: Annotated[Optional[int], typer.Option(
        "--topk", help="At most K boxes per image, best first; -1: all [default: 10; on mmdet/mmyolo detectors -1, "
        "as boxam_vis_demo].", show_default=False)] = None,
    score_thr: Annotated[float, typer.Option("--score-thr", "--score_thr", help="Keep boxes scoring at least this.")
                         ] = 0.3,
    norm_in_bbox: Annotated[bool, typer.Option("--norm-in-bbox", "--norm_in_bbox",
                                               help="Normalise the map inside each box, zero outside.")] = False,
    per_box: Annotated[bool, typer.Option("--per-box", help="One map per box instead of one for all boxes.")
                       ] = False,
    no_boxes: Annotated[bool, typer.Option("--no-boxes", help="Do not draw the boxes.")] = False,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Heatmap opacity.")] = 0.5,
    colormap: Annotated[str, typer.Option("--colormap", help="OpenCV or matplotlib colormap.")] = "jet",
    ratio_channels_to_ablate: Annotated[float, typer.Option(
        "--ratio-channels-to-ablate", min=0.0, max=1.0,
        help="AblationCAM: ablate only this fraction of channels (top and bottom), fewer forwards.")] = 1.0,
    max_shape: Annotated[Optional[list[int]], typer.Option(
        "--max-shape", "--max_shape", help="Cap on the map size: H W, or one number for both; a larger layer "
        "output is resized bilinearly to at most this before the CAM, as mmyolo's boxam (-1: no cap).",
        show_default=False)] = None,
    *,
    opts: opt.CommandOptions,
    settings: BoxamOptions,
) -> None:
    """Draw box-level activation maps (which pixels made each detection) on the original images."""
    from visctl.commands._shared import execute, preview_hook, split_args
    from visctl.library import boxam as lib

    with RunContext("boxam", opts, out_dir=opts.out_dir) as ctx:
        lib.check_options(settings)  # before any work
        paths, cfg_spec, checkpoint = split_args(ctx, args)
        run = lib.plan(ctx.session, paths, cfg_spec, checkpoint, settings, on_model=preview_hook(ctx, opts.preview_model))
        execute(ctx, run)
