"""`visctl boxam`: box-level activation maps of a detector, drawn on the original images."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.context import RunContext
from visctl.library.boxam import BoxMethod

EPILOG = """Examples:

  visctl boxam img.jpg examples/demo_detector/config.py --method gradcam --per-box

  visctl boxam imgs/ fasterrcnn_resnet50_fpn ckpt.pth --target-layers backbone.body.layer4 --norm-in-bbox

  visctl boxam img.jpg examples/demo_detector/config.py --method eigencam --max-shape 8 8
"""


def boxam(
    args: Annotated[list[str], typer.Argument(
        metavar="IMG... CONFIG [CHECKPOINT]",
        help="Images (files, directories, globs), then a detector config or model name, then a checkpoint.",
        show_default=False)],
    method: Annotated[BoxMethod, typer.Option(
        "--method", "-m", case_sensitive=False,
        help="The CAM method; the gradient ones score each kept box [default: layercam, whose per-pixel "
        "gradients keep a box's map on the box; gradcam averages them over the whole map].",
        show_default=False)] = BoxMethod.layercam,
    target_layers: opt.TargetLayers = None,
    topk: Annotated[int, typer.Option("--topk", min=1, help="At most K boxes per image, best first.")] = 10,
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
    panel_size: opt.BoxamPanelSize = None,
    save_raw: opt.SaveRaw = False,
    preview_model: opt.PreviewModel = False,
    unsafe_load_checkpoint: opt.UnsafeLoadCheckpoint = False,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    batch_size: opt.BatchSize = 4,
    cfg_options: opt.CfgOptions = None,
    out_dir: opt.OutDir = None,
    backend: opt.Backend = None,
    show: opt.Show = False,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
    seed: opt.Seed = None,
    debug: opt.Debug = False,
    max_pixels: opt.MaxPixels = opt.DEFAULT_MAX_PIXELS,
) -> None:
    """Draw box-level activation maps (which pixels made each detection) on the original images."""
    from visctl import config, output, render
    from visctl import images as imgs
    from visctl.commands._shared import preview
    from visctl.library import boxam as lib
    from visctl.session import RunOptions

    opts = RunOptions.of(locals())  # the shared options, one object
    with RunContext("boxam", opts, out_dir=out_dir) as ctx:
        lib.check_options(score_thr=score_thr, colormap=colormap, max_shape=max_shape)  # before any work
        args, extra_options = config.pop_cfg_options(args)
        ctx.cfg_options.extend(extra_options)
        img_specs, cfg_spec, checkpoint = config.split_inputs(args)
        paths = imgs.gather_images(img_specs, note=ctx.note)

        def on_model(mi: object) -> None:
            if preview_model:
                preview(ctx, mi)  # type: ignore[arg-type]
                raise typer.Exit(0)

        plan = lib.prepare(paths, cfg_spec, checkpoint, method=method, target_layers=opt.split_list(target_layers),
                           topk=topk, score_thr=score_thr, norm_in_bbox=norm_in_bbox, per_box=per_box,
                           no_boxes=no_boxes, alpha=alpha, colormap=colormap,
                           ratio_channels_to_ablate=ratio_channels_to_ablate, max_shape=max_shape,
                           panel_size=panel_size, batch_size=batch_size, session=ctx, on_model=on_model)
        writer = ctx.open_writer(plan.params)
        writer.background(output.io_threads(ctx.threads), queue=batch_size)  # encoded and written beside the model
        sides: set[int] = set()
        for item in lib.iter_boxam(plan):
            sides.add(item.side)
            writer.manifest["params"]["panel_size"] = render.sizes_param(sides)
            item.write(writer, save_raw)
        ctx.finish()
