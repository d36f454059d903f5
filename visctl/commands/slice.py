"""`visctl slice`: sliced inference on huge images — tiles in batches, merged detections, COCO results."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from visctl import _options as opt
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
    with RunContext("slice", out_dir=out_dir, device=device, threads=threads, quiet=quiet, json_out=json_out,
                    debug=debug, seed=seed, cfg_options=cfg_options, backend=backend, show=show,
                    unsafe_load_checkpoint=unsafe_load_checkpoint, max_pixels=max_pixels) as ctx:
        from visctl.errors import VisctlError

        if merge_metric not in ("iou", "ios"):
            raise VisctlError(f"--merge-metric {merge_metric!r}", hint="use iou or ios")
        if tta:
            raise VisctlError("--tta (test-time augmentation) is not supported by visctl slice",
                              hint="leave it out; --full-image adds a whole-image pass, and --merge wbf fuses "
                              "overlapping boxes instead of dropping them")
        if merge_nms_type is not None:
            if merge_nms_type.lower() != "nms":
                raise VisctlError(f"--merge-nms-type {merge_nms_type}: only nms is supported",
                                  hint="use --merge-nms-type nms, or --merge nms|nmm|wbf (soft_nms and the "
                                  "rotated-box types of mmcv are not)")
            if merge is not Merge.nms:
                raise VisctlError(f"--merge-nms-type nms and --merge {merge.value} disagree",
                                  hint="give one of them")
        _run(ctx, args, patch_size=patch_size, overlap=patch_overlap_ratio, merge=merge, iou=merge_iou_thr,
             metric=merge_metric,
             score_thr=score_thr, full_image=full_image, max_side=max_side, batch_size=batch_size, debug=debug,
             deploy=deploy, save_patch=save_patch)


def _run(ctx: RunContext, args: list[str], *, patch_size: int | None, overlap: float, merge: Merge, iou: float,
         metric: str,
         score_thr: float, full_image: bool, max_side: int, batch_size: int, debug: bool, deploy: bool = False,
         save_patch: bool = False) -> None:
    import time

    import cv2

    from visctl import config, detection, images, models, output, render, transforms
    from visctl.commands._shared import class_names, open_model
    from visctl.errors import VisctlError

    mi = open_model(ctx, args)
    notes = []
    if deploy:
        switched = models.switch_to_deploy(mi.model)
        if switched:
            notes.append(f"--deploy: switch_to_deploy() on {len(switched)} module(s): {', '.join(switched[:5])}"
                         + (" ..." if len(switched) > 5 else ""))
            ctx.log(notes[-1])
        else:
            notes.append("--deploy does not apply: no module of this model has switch_to_deploy() (only "
                         "re-parameterisable blocks such as RepVGG's do)")
            ctx.warn(notes[-1])
    if save_patch and not debug:
        notes.append("--save-patch does not apply without --debug (as mmyolo's large_image_demo): add --debug")
        ctx.warn(notes[-1])
    patch = patch_size or int(config.tool_option(mi.cfg, "patch_size", 640))
    classes = class_names(ctx, mi)
    writer = ctx.open_writer(dict(inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint,
                                  patch_size=patch, patch_overlap_ratio=overlap, merge=merge.value,
                                  merge_iou_thr=iou, merge_metric=metric, score_thr=score_thr, full_image=full_image,
                                  batch_size=batch_size, device=ctx.device, deploy=deploy,
                                  save_patch=save_patch and debug))
    for note in notes:
        writer.note(note)
    stems = output.input_stems(mi.paths)
    results: list[dict] = []
    n_tiles = 0
    started = time.time()
    for image_id, p in enumerate(mi.paths):
        try:
            img = images.read_image(p, ctx.max_pixels)
        except VisctlError as err:
            ctx.skip(p, err.message)
            continue
        h, w = img.shape[:2]
        grid = detection.tiles(h, w, patch, overlap)
        n_tiles += len(grid)
        parts = []
        per_tile: dict[tuple, detection.Detections] = {}  # tile box -> its boxes (original pixels), --save-patch
        with ctx.progress(len(grid), f"{p.name}: {len(grid)} tiles") as advance:
            for chunk in detection.tile_batches(img, grid, batch_size):
                states = [(box, transforms.run_pipeline(tile, mi.steps)) for box, tile in chunk]
                by_shape: dict[tuple, list] = {}
                for box, st in states:
                    by_shape.setdefault(st.img.shape, []).append((box, st))
                for members in by_shape.values():
                    batch = transforms.to_tensor([st for _, st in members], mi.mean, mi.std, mi.rgb).to(ctx.device)
                    for (box, st), out in zip(members, detection.detect(mi.model, batch)):
                        parts.append(detection.to_original(out, st, offset=(box[0], box[1])))
                        per_tile[box] = parts[-1]
                advance(len(chunk))
        if full_image:
            f = patch / max(h, w)
            small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
            st = transforms.run_pipeline(small, mi.steps)
            out = detection.detect(mi.model, transforms.to_tensor([st], mi.mean, mi.std, mi.rgb).to(ctx.device))[0]
            whole = detection.to_original(out, st)
            whole.boxes = whole.boxes / f  # the small image's pixels -> the original's
            parts.append(whole)
        raw = detection.Detections.concat(parts)
        raw = raw.keep(raw.scores >= score_thr)
        merged = detection.merge(raw, merge, iou, metric)
        results.extend(detection.coco_results(merged, image_id, str(p), classes))
        scale = min(1.0, max_side / max(h, w))
        view = img if scale == 1.0 else cv2.resize(img, (round(w * scale), round(h * scale)),
                                                   interpolation=cv2.INTER_AREA)
        annotated = render.draw_boxes(view, merged.boxes * scale, merged.labels, merged.scores, classes)
        writer.save_image(f"{stems[p]}_slice.png", annotated, caption=f"{p.name}: {len(merged)} boxes "
                          f"({len(raw)} before {merge.value}, {len(grid)} tiles)", input=str(p))
        if debug:
            dbg = render.draw_boxes(view, raw.boxes * scale, raw.labels, None, classes, thickness=1)
            for x0, y0, x1, y1 in grid:
                cv2.rectangle(dbg, (round(x0 * scale), round(y0 * scale)), (round(x1 * scale) - 1,
                              round(y1 * scale) - 1), (255, 255, 255), 1)
            writer.save_image(f"{stems[p]}_slice_debug.png", dbg, caption=f"{p.name}: tile grid and "
                              f"{len(raw)} unmerged boxes", input=str(p))
            if save_patch:  # mmyolo: <out>/<stem>_patch/<name>_slice_<i>_result.jpg, each tile with its boxes
                for i, (x0, y0, x1, y1) in enumerate(grid):
                    dets = per_tile[(x0, y0, x1, y1)]
                    dets = dets.keep(dets.scores >= score_thr)
                    shown = render.draw_boxes(img[y0:y1, x0:x1], dets.boxes - [x0, y0, x0, y0], dets.labels,
                                              dets.scores, classes)
                    writer.save_image(f"{stems[p]}_patch/{stems[p]}_slice_{i}_result.png", shown,
                                      caption=f"{p.name}: tile {i} ({x0}, {y0})-({x1}, {y1}), {len(dets)} boxes",
                                      input=str(p), tile=[x0, y0, x1, y1])
        writer.add_input(p, size=[h, w], tiles=len(grid), boxes_before_merge=len(raw), boxes=len(merged))
    elapsed = time.time() - started
    target = writer.write_bytes("results.json", output.to_json(results, indent=1).encode())
    writer.add_output(target, "table", caption=f"COCO-style results, {len(results)} boxes")
    writer.manifest["timings"]["slice_s"] = round(elapsed, 3)
    writer.manifest["timings"]["tiles_per_s"] = round(n_tiles / elapsed, 2) if elapsed else None
    ctx.finish()
