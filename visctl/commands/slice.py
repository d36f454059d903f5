"""`visctl slice`: sliced inference on huge images — tiles in batches, merged detections, COCO results."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.commands._shared import finish
from visctl.context import RunContext
from visctl.detection import Merge

EPILOG = """Examples:

  visctl slice big.png examples/demo_detector/config.py --patch-size 128 --patch-overlap-ratio 0.25

  visctl slice aerial/ det.py det.pth --merge wbf --full-image --debug

  visctl slice big.jpg yolov6.py yolov6.pth --deploy --debug --save-patch
"""


def slice_(
    args: Annotated[list[str], typer.Argument(
        metavar="IMG... CONFIG [CHECKPOINT]",
        help="Images (files, directories, globs), then a detector config or model name, then a checkpoint.",
        show_default=False)],
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
    merge_iou_thr: Annotated[float, typer.Option("--merge-iou-thr", "--merge_iou_thr", min=0.0, max=1.0,
                                                 help="Overlap at which boxes merge.")] = 0.5,
    merge_metric: Annotated[str, typer.Option("--merge-metric", help="iou, or ios (intersection over the smaller "
                                              "box: a box cut by a tile border merges with the whole one).")
                            ] = "ios",
    score_thr: Annotated[float, typer.Option("--score-thr", "--score_thr", min=0.0, max=1.0,
                                             help="Drop boxes below this before merging.")] = 0.3,
    full_image: Annotated[bool, typer.Option("--full-image", help="Also detect on the whole image scaled to one "
                                             "tile, and merge.")] = False,
    max_side: Annotated[int, typer.Option("--max-side", min=256, help="Longest side of the saved pictures.")
                        ] = 4096,
    unsafe_load_checkpoint: opt.UnsafeLoadCheckpoint = False,
    deploy: Annotated[bool, typer.Option("--deploy", help="Call switch_to_deploy() on the modules that have it "
                                         "(fuses RepVGG-style blocks) before inference.")] = False,
    tta: Annotated[bool, typer.Option("--tta", help="Not supported (mmyolo's test-time augmentation); an error "
                                      "says what to use instead.", hidden=True)] = False,
    save_patch: Annotated[bool, typer.Option("--save-patch", "--save_patch", help="With --debug: one picture per "
                                             "tile with that tile's boxes, in <image>_patch/.")] = False,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    batch_size: opt.BatchSize = 8,
    cfg_options: opt.CfgOptions = None,
    out_dir: opt.OutDir = None,
    backend: opt.Backend = None,
    show: opt.Show = False,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
    seed: opt.Seed = None,
    debug: Annotated[bool, typer.Option("--debug", help="Also draw the tile grid and every unmerged box; show "
                                        "tracebacks.")] = False,
    max_pixels: opt.MaxPixels = opt.SLICE_MAX_PIXELS,
) -> None:
    """Detect objects in huge images tile by tile, merge the boxes, write the picture and COCO results."""
    from visctl import config
    from visctl import images as imgs
    from visctl.library import slice as lib
    from visctl.session import RunOptions

    opts = RunOptions.of(locals())  # the shared options, one object
    with RunContext("slice", opts, out_dir=out_dir) as ctx:
        lib.check_options(merge=merge, merge_metric=merge_metric, merge_nms_type=merge_nms_type, tta=tta)
        args, extra_options = config.pop_cfg_options(args)
        ctx.cfg_options.extend(extra_options)
        img_specs, cfg_spec, checkpoint = config.split_inputs(args)
        paths = imgs.gather_images(img_specs, note=ctx.note)
        plan = lib.prepare(paths, cfg_spec, checkpoint, patch_size=patch_size,
                           patch_overlap_ratio=patch_overlap_ratio, merge=merge, merge_iou_thr=merge_iou_thr,
                           merge_metric=merge_metric, score_thr=score_thr, full_image=full_image, max_side=max_side,
                           batch_size=batch_size, debug=debug, deploy=deploy, save_patch=save_patch, session=ctx)
        writer = ctx.open_writer(plan.params)
        for note in plan.notes:
            writer.note(note)
        results: list[dict] = []
        started = time.time()
        for item in lib.iter_slice(plan):
            item.write(writer)
            results.extend(item.records)
        if ctx.world > 1:  # under torchrun: every rank's records, results and tiles, one image per turn
            from visctl import distributed

            parts = distributed.merge_records(writer, plan.mi.paths, 1,
                                              dict(results=[(r["file_name"], r) for r in results], tiles=plan.tiles))
            results = distributed.in_run_order([part["results"] for part in parts], plan.mi.paths, 1)
            plan.tiles = sum(part["tiles"] for part in parts)
        elapsed = time.time() - started
        lib.write_results(writer, results)
        writer.manifest["timings"]["slice_s"] = round(elapsed, 3)
        writer.manifest["timings"]["tiles_per_s"] = round(plan.tiles / elapsed, 2) if elapsed else None
        finish(ctx)
