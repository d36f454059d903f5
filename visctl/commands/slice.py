"""`visctl slice`: sliced inference on huge images — tiles in batches, merged detections, COCO results."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import Merge, MergeMetric
from visctl.context import RunContext
from visctl.images import SLICE_MAX_PIXELS
from visctl.options import SliceOptions

EPILOG = """Examples:

  visctl slice big.png examples/demo_detector/config.py --patch-size 128 --patch-overlap-ratio 0.25

  visctl slice aerial/ det.py det.pth --merge wbf --full-image --debug

  visctl slice big.jpg yolov6.py yolov6.pth --deploy --debug --save-patch
"""


@opt.shared(*opt.after("unsafe_load_checkpoint", "deploy", "tta", "save_patch"), batch_size=8,
            max_pixels=SLICE_MAX_PIXELS, settings=SliceOptions, debug=opt.Param(Annotated[bool, typer.Option(
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
    merge_metric: Annotated[Optional[MergeMetric], typer.Option(
        "--merge-metric", show_default=False, case_sensitive=False,
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
    settings: SliceOptions,
) -> None:
    """Detect objects in huge images tile by tile, merge the boxes, write the picture and COCO results."""
    from visctl.commands._shared import execute, open_model
    from visctl.library import slice as lib

    with RunContext("slice", opts, out_dir=opts.out_dir) as ctx:
        _check_seed_flags(settings, merge_nms_type, tta)
        mi = open_model(ctx, args)
        execute(ctx, lib.plan(ctx.session, mi, settings))


def _check_seed_flags(settings: SliceOptions, merge_nms_type: str | None, tta: bool) -> None:
    """Refuse mmyolo's large_image_demo.py flags that visctl slice does not support, before any work."""
    from visctl.errors import VisctlError

    if tta:
        raise VisctlError("--tta (test-time augmentation) is not supported by visctl slice",
                          hint="leave it out; --full-image adds a whole-image pass, and --merge wbf fuses "
                          "overlapping boxes instead of dropping them")
    if merge_nms_type is not None:
        if merge_nms_type.lower() != "nms":
            raise VisctlError(f"--merge-nms-type {merge_nms_type}: only nms is supported",
                              hint="use --merge-nms-type nms, or --merge nms|nmm|wbf (soft_nms and the "
                              "rotated-box types of mmcv are not)")
        if settings.merge is not Merge.nms:
            raise VisctlError(f"--merge-nms-type nms and --merge {settings.merge.value} disagree",
                              hint="give one of them")
