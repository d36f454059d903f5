"""`visctl slice`: sliced inference on huge images — tiles in batches, merged detections, COCO results."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import Merge
from visctl.commands._shared import finish
from visctl.context import RunContext
from visctl.images import SLICE_MAX_PIXELS

EPILOG = """Examples:

  visctl slice big.png examples/demo_detector/config.py --patch-size 128 --patch-overlap-ratio 0.25

  visctl slice aerial/ det.py det.pth --merge wbf --full-image --debug

  visctl slice big.jpg yolov6.py yolov6.pth --deploy --debug --save-patch
"""


@opt.shared(*opt.after("unsafe_load_checkpoint", "deploy", "tta", "save_patch"), batch_size=8,
            max_pixels=SLICE_MAX_PIXELS, debug=opt.Param(Annotated[bool, typer.Option(
                "--debug", help="Also draw the tile grid and every unmerged box; show tracebacks.")], False))
def slice_(
    args: opt.DetectorInputs,
    patch_size: Annotated[Optional[int], typer.Option("--patch-size", "--patch_size", min=8,
                                                      help="Tile side in pixels [default: visctl.patch_size, "
                                                      "else 640].", show_default=False)] = None,
    patch_overlap_ratio: Annotated[float, typer.Option("--patch-overlap-ratio", "--patch_overlap_ratio", min=0.0,
                                                       max=0.95, help="Overlap of neighbouring tiles.")] = 0.25,
    merge: Annotated[Merge, typer.Option("--merge", case_sensitive=False, help="nms, nmm or wbf (class-aware).")
                     ] = Merge.nms,
    merge_nms_type: Annotated[Optional[str], typer.Option(
        "--merge-nms-type", "--merge_nms_type", help="The seed's name for --merge nms (mmcv's soft_nms and "
        "rotated types are not supported).", show_default=False)] = None,
    merge_iou_thr: Annotated[Optional[float], typer.Option(
        "--merge-iou-thr", "--merge_iou_thr", min=0.0, max=1.0, show_default=False,
        help="Overlap at which boxes merge [default: 0.25 on an mmdet/mmyolo detector, as large_image_demo.py; "
        "else 0.5].")] = None,
    merge_metric: Annotated[Optional[str], typer.Option(
        "--merge-metric", show_default=False,
        help="iou, or ios (intersection over the smaller box: a box cut by a tile border merges with the whole "
        "one) [default: iou on an mmdet/mmyolo detector, as large_image_demo.py; else ios].")] = None,
    score_thr: Annotated[float, typer.Option("--score-thr", "--score_thr", min=0.0, max=1.0,
                                             help="Drop boxes below this before merging.")] = 0.3,
    full_image: Annotated[bool, typer.Option("--full-image", help="Also detect on the whole image scaled to one "
                                             "tile, and merge.")] = False,
    max_side: Annotated[int, typer.Option("--max-side", min=256, help="Longest side of the saved pictures.")
                        ] = 4096,
    deploy: Annotated[bool, typer.Option("--deploy", help="Call switch_to_deploy() on the modules that have it "
                                         "(fuses RepVGG-style blocks) before inference.")] = False,
    tta: Annotated[bool, typer.Option("--tta", help="Not supported (mmyolo's test-time augmentation); an error "
                                      "says what to use instead.", hidden=True)] = False,
    save_patch: Annotated[bool, typer.Option("--save-patch", "--save_patch", help="With --debug: one picture per "
                                             "tile with that tile's boxes, in <image>_patch/.")] = False,
    *,
    opts: opt.CommandOptions,
) -> None:
    """Detect objects in huge images tile by tile, merge the boxes, write the picture and COCO results."""
    from visctl.commands._shared import split_args
    from visctl.library import slice as lib

    with RunContext("slice", opts, out_dir=opts.out_dir) as ctx:
        lib.check_options(merge=merge, merge_metric=merge_metric, merge_nms_type=merge_nms_type, tta=tta)
        paths, cfg_spec, checkpoint = split_args(ctx, args)
        plan = lib.prepare(paths, cfg_spec, checkpoint, patch_size=patch_size,
                           patch_overlap_ratio=patch_overlap_ratio, merge=merge, merge_iou_thr=merge_iou_thr,
                           merge_metric=merge_metric, score_thr=score_thr, full_image=full_image, max_side=max_side,
                           batch_size=opts.batch_size, debug=opts.debug, deploy=deploy, save_patch=save_patch,
                           session=ctx.session)
        writer = ctx.open_writer(plan.params)
        lib.write_run(plan, writer)
        finish(ctx)
