"""`visctl boxam`: box-level activation maps of a detector, drawn on the original images."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.context import RunContext

EPILOG = """Examples:

  visctl boxam img.jpg examples/demo_detector/config.py --method gradcam --per-box

  visctl boxam imgs/ fasterrcnn_resnet50_fpn ckpt.pth --target-layers backbone.body.layer4 --norm-in-bbox

  visctl boxam img.jpg examples/demo_detector/config.py --method eigencam --max-shape 8 8
"""


class BoxMethod(str, Enum):
    """grad-cam methods with a detection target."""

    gradcam = "gradcam"
    gradcamplusplus = "gradcam++"
    xgradcam = "xgradcam"
    eigencam = "eigencam"
    layercam = "layercam"
    ablationcam = "ablationcam"


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
    with RunContext("boxam", out_dir=out_dir, device=device, threads=threads, quiet=quiet, json_out=json_out,
                    debug=debug, seed=seed, cfg_options=cfg_options, backend=backend, show=show,
                    unsafe_load_checkpoint=unsafe_load_checkpoint, max_pixels=max_pixels) as ctx:
        _run(ctx, args, method=method, target_layers=target_layers, topk=topk, score_thr=score_thr,
             norm_in_bbox=norm_in_bbox, per_box=per_box, no_boxes=no_boxes, alpha=alpha, colormap=colormap,
             ratio=ratio_channels_to_ablate, save_raw=save_raw, preview_model=preview_model, batch_size=batch_size,
             max_shape=max_shape, panel_size=panel_size)


def _run(ctx: RunContext, args: list[str], *, method: BoxMethod, target_layers: list[str] | None, topk: int,
         score_thr: float, norm_in_bbox: bool, per_box: bool, no_boxes: bool, alpha: float, colormap: str,
         ratio: float, save_raw: bool, preview_model: bool, batch_size: int, max_shape: list[int] | None = None,
         panel_size: int | None = None) -> None:
    import numpy as np
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from visctl import cams, config, detection, models, output, render, transforms
    from visctl.classes import label
    from visctl.commands._shared import class_names, open_model, preview
    from visctl.errors import LayerError, VisctlError

    if not 0.0 <= score_thr <= 1.0:
        raise VisctlError(f"--score-thr {score_thr} is not a score", hint="use a value from 0 to 1, e.g. 0.3")
    colormap = render.check_colormap(colormap)
    cap = _max_shape(max_shape)
    mi = open_model(ctx, args)
    if preview_model:
        preview(ctx, mi)
        raise typer.Exit(0)
    model = mi.model
    in_hw = (int(mi.example.shape[2]), int(mi.example.shape[3]))
    pr = cams.probe(model, mi.example, logits=False)
    if target_layers:
        names = [models.find_layer(model, n)[0] for n in opt.split_list(target_layers)]
    elif config.tool_option(mi.cfg, "target_layers"):
        names = [models.find_layer(model, n)[0] for n in config.tool_option(mi.cfg, "target_layers")]
    else:
        name, where = detection.default_layer(pr)
        names = [name]
        ctx.log(f"default target layer: {name} (the last tensor-valued layer of the {where}; "
                "set --target-layers to change it)")
    layouts = []
    for n in names:
        shape = pr.shape_of(n)
        if isinstance(shape, str):
            raise LayerError(f"layer {n!r} returns a {shape}, and grad-cam's methods need one tensor",
                             hint="pick a tensor-valued layer inside it, e.g. an FPN level such as "
                             "backbone.fpn.layer_blocks.0 or the backbone stage backbone.body.layer4")
        cams.validate_layer_output(n, shape)
        layouts.append(cams.detect_layout(shape, in_hw, False, None, n))
    cam_method = cams.parse_method(method.value)[0]
    engine = cams.CamEngine(model, cam_method, names, layouts, batch_size=16, ratio_channels_to_ablate=ratio,
                            detection=True, max_shape=cap)
    classes = class_names(ctx, mi)
    writer = ctx.open_writer(dict(inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint,
                                  method=method.value, target_layers=names, topk=topk, score_thr=score_thr,
                                  norm_in_bbox=norm_in_bbox, per_box=per_box, device=ctx.device,
                                  max_shape=list(cap) if cap else None,
                                  panel_size=panel_size or f"the original's long side, {render.PANEL_FLOOR}..512"))
    sides_used: set[int] = set()
    stems = output.input_stems(mi.paths)
    layer_tag = "+".join(names).replace(".", "_")
    with ctx.progress(len(mi.paths), "boxam") as advance:
        for groups, failures in transforms.prepared_batches(mi.paths, mi.steps, batch_size, ctx.max_pixels):
            for p, message in failures:
                ctx.skip(p, message)
                advance()
            for group in groups:
                batch = transforms.to_tensor([s for _, _, s in group], mi.mean, mi.std, mi.rgb).to(ctx.device)
                found = detection.detect(model, batch)
                kept = []
                for out in found:
                    order = out["scores"].argsort(descending=True)
                    order = order[out["scores"][order] >= score_thr][:topk]
                    kept.append({k: v[order] for k, v in out.items()})
                # one CAM call per box slot with --per-box (the k-th box of every image), else one for all boxes
                slots = max((len(k["scores"]) for k in kept), default=0) if per_box else 1
                maps_per_image: list[list] = [[] for _ in group]
                for slot in range(slots):
                    targets = []
                    for k in kept:
                        sel = slice(slot, slot + 1) if per_box else slice(None)
                        targets.append(FasterRCNNBoxScoreTarget(labels=k["labels"][sel].to(ctx.device),
                                                                bounding_boxes=k["boxes"][sel].to(ctx.device)))
                    if cam_method is cams.Method.eigencam or any(len(t.labels) for t in targets):
                        maps, _ = engine(batch, targets)
                    else:
                        maps = np.zeros((len(group), *batch.shape[2:]), np.float32)
                    for i in range(len(group)):
                        if not per_box or slot < len(kept[i]["scores"]):
                            maps_per_image[i].append(maps[i])
                for i, (p, img, state) in enumerate(group):
                    dets = detection.to_original(kept[i], state)
                    side = render.panel_size(*img.shape[:2], panel_size, cap=512)
                    sides_used.add(side)
                    writer.manifest["params"]["panel_size"] = render.sizes_param(sides_used)
                    panels = []
                    raw_maps = []
                    for slot, m in enumerate(maps_per_image[i]):
                        full = transforms.to_original(m, state, img.shape[:2])
                        boxes_here = dets.boxes[slot:slot + 1] if per_box else dets.boxes
                        if norm_in_bbox:
                            full = render.normalize_in_boxes(full, boxes_here)
                        raw_maps.append(full)
                        shown = render.overlay(img, full, alpha, colormap)
                        if not no_boxes:
                            sel = slice(slot, slot + 1) if per_box else slice(None)
                            shown = render.draw_boxes(shown, dets.boxes[sel], dets.labels[sel], dets.scores[sel],
                                                      classes)
                        text = (f"box {slot}: {label(classes, dets.labels[slot])} {dets.scores[slot]:.2f}" if per_box
                                else f"{len(dets)} box(es) | {method.value} | {', '.join(names)}")
                        panels.append(render.caption(render.fit(shown, side), text))
                    if not panels:
                        panels = [render.caption(render.fit(img, side), f"no box scores >= {score_thr}")]
                    figure = render.grid(panels, cols=min(len(panels), 4))
                    writer.save_image(f"{stems[p]}_boxam_{method.value.replace('++', 'pp')}_{layer_tag}.png", figure,
                                      caption=f"{p.name}: {len(dets)} boxes", input=str(p), panel_size=side)
                    if save_raw:
                        for slot, full in enumerate(raw_maps):
                            tag = f"box{slot}" if per_box else "all"
                            writer.save_array(f"{stems[p]}_boxam_{tag}.npy", full.astype(np.float32), caption=tag,
                                              input=str(p), box=dets.boxes[slot].tolist() if per_box else None)
                    writer.add_input(p, boxes=[dict(box=[round(float(v), 1) for v in b], label=int(lab),
                                                    score=round(float(s), 4))
                                               for b, lab, s in zip(dets.boxes, dets.labels, dets.scores)])
                    advance()
    ctx.finish()


def _max_shape(values: list[int] | None) -> tuple[int, int] | None:
    """mmyolo's ``--max-shape``: one or two ints, one value for both sides, -1 anywhere for no cap."""
    from visctl.errors import VisctlError

    if not values:
        return None
    if len(values) > 2 or any(v < 1 and v != -1 for v in values):
        raise VisctlError(f"--max-shape {' '.join(map(str, values))}",
                          hint="give H W or one size for both, positive (or -1 for no cap), e.g. --max-shape 20")
    if -1 in values:
        return None
    return (values[0], values[-1])

