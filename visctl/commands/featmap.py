"""`visctl featmap`: feature maps of any layers, aligned on the original images; or two models' difference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from visctl import _options as opt
from visctl.commands._shared import class_names, load_model, open_model, preview
from visctl.context import RunContext
from visctl.featmaps import Normalize, Reduction

EPILOG = """Examples:

  visctl featmap img.jpg cfg.py ckpt.pth --target-layers backbone.layer3,backbone.layer4

  visctl featmap imgs/ cfg.py --channel-reduction none --topk 8 --arrangement 2 4 --normalize per-layer

  visctl featmap img.jpg student.py s.pth --compare teacher.py,t.pth --signed
"""


def featmap(
    args: Annotated[list[str], typer.Argument(
        metavar="IMG... CONFIG [CHECKPOINT]",
        help="Images (files, directories, globs), then a config file or model name, then a checkpoint.",
        show_default=False)],
    target_layers: opt.TargetLayers = None,
    channel_reduction: Annotated[Reduction, typer.Option(
        "--channel-reduction", "--channel_reduction", help="How channels become one map (none: the top-k channels).",
        case_sensitive=False)] = Reduction.squeeze_mean,
    topk: Annotated[int, typer.Option("--topk", help="With --channel-reduction none: the K channels with the "
                                      "largest activation sum; -1 draws a 1- or 3-channel feature as it is.")] = 4,
    arrangement: Annotated[Optional[tuple[int, int]], typer.Option(
        "--arrangement", help="ROWS COLS of the top-k grid [default: near square, never dropping a panel].",
        show_default=False)] = None,
    overlaid: Annotated[bool, typer.Option("--overlaid/--no-overlaid", help="Draw on the image, or the map alone.")
                        ] = True,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Heatmap opacity.")] = 0.5,
    use_norm: Annotated[bool, typer.Option("--use-norm", "--use_norm",
                                           help="z-score each channel before the reduction.")] = False,
    normalize: Annotated[Normalize, typer.Option(
        "--normalize", help="Colour scale shared per map, per layer (across images) or globally; "
        "the scale is in each caption.", case_sensitive=False)] = Normalize.per_map,
    resize_shape: Annotated[Optional[tuple[int, int]], typer.Option(
        "--resize-shape", "--resize_shape", min=1, max=8192, help="H W of every panel.", show_default=False)] = None,
    colormap: Annotated[str, typer.Option("--colormap", help="OpenCV (jet, turbo, viridis, ...) or matplotlib "
                                          "(coolwarm, ...) colormap [default: jet; coolwarm for --signed].",
                                          show_default=False)] = "",
    compare: Annotated[Optional[list[str]], typer.Option(
        "--compare", help="CONFIG2[,CHECKPOINT2]: the same layers of a second model; shows A, B and |A-B|.",
        show_default=False)] = None,
    signed: Annotated[bool, typer.Option("--signed", help="With --compare: A-B on a diverging colormap.")] = False,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out-file", "--out_file", help="The output file, for one image (several layers are stacked in it).")
    ] = None,
    score_thr: Annotated[Optional[float], typer.Option(
        "--score-thr", "--score_thr", min=0.0, max=1.0,
        help="Detectors: draw the boxes scoring at least this under the maps (mmyolo's habit) [default: no boxes].",
        show_default=False)] = None,
    repo: Annotated[Optional[str], typer.Option(
        "--repo", help="mmrazor's habit: the OpenMMLab package of the model (mmdet, mmpretrain, ...); sets the "
        "config's default_scope to it, as mmrazor's register_all_modules does.", show_default=False)] = None,
    local_rank: Annotated[Optional[int], typer.Option(
        "--local_rank", "--local-rank", hidden=True,
        help="Accepted for torch.distributed.launch (mmrazor's habit); visctl reads LOCAL_RANK.")] = None,
    panel_size: opt.PanelSize = None,
    save_raw: opt.SaveRaw = False,
    preview_model: opt.PreviewModel = False,
    unsafe_load_checkpoint: opt.UnsafeLoadCheckpoint = False,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    batch_size: opt.BatchSize = 16,
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
    """Draw the feature maps of one or more layers on the original images."""
    with RunContext("featmap", out_dir=out_file.parent if out_file else out_dir, device=device, threads=threads,
                    quiet=quiet, json_out=json_out, debug=debug, seed=seed, cfg_options=cfg_options, backend=backend,
                    show=show, unsafe_load_checkpoint=unsafe_load_checkpoint, max_pixels=max_pixels,
                    out_files=[("--out-file", out_file)]) as ctx:
        _run(ctx, args, target_layers=opt.split_list(target_layers), reduction=channel_reduction, topk=topk,
             arrangement=arrangement, overlaid=overlaid, alpha=alpha, use_norm=use_norm, normalize=normalize,
             resize_shape=resize_shape, colormap=colormap or ("coolwarm" if signed else "jet"),
             compare=opt.split_list(compare), signed=signed, out_file=out_file, save_raw=save_raw,
             preview_model=preview_model, batch_size=batch_size, score_thr=score_thr, repo=repo,
             panel_size=panel_size)



def _run(ctx: RunContext, args: list[str], *, target_layers: list[str] | None, reduction: Reduction, topk: int,
         arrangement: tuple[int, int] | None, overlaid: bool, alpha: float, use_norm: bool, normalize: Normalize,
         resize_shape: tuple[int, int] | None, colormap: str, compare: list[str] | None, signed: bool,
         out_file: Path | None, save_raw: bool, preview_model: bool, batch_size: int, score_thr: float | None,
         repo: str | None, panel_size: int | None = None) -> None:
    import time

    import cv2
    import numpy as np

    from visctl import cams, config, detection, featmaps, images, models, output, render, transforms
    from visctl.errors import InputError, VisctlError

    colormap = render.check_colormap(colormap)
    output.check_output_file(out_file, "--out-file")
    if signed and not compare:
        raise VisctlError("--signed needs --compare", hint="--compare CONFIG2[,CHECKPOINT2] --signed")
    if compare and reduction is Reduction.none:
        raise VisctlError("--compare needs a channel reduction", hint="use squeeze_mean, select_max or pixel_wise_max")
    if arrangement and reduction is not Reduction.none:
        ctx.warn("--arrangement applies to --channel-reduction none only")
    if reduction is Reduction.none:
        featmaps.arrangement(topk if topk > 0 else 1, *(arrangement or (None, None)))  # fail before the work
    args, recorded, compare_layout = config.split_recorder_args(args)
    if compare_layout:
        if compare:
            raise VisctlError("two second models: CONFIG2 in the positional arguments and --compare",
                              hint="give one of them")
        compare = compare_layout
        if reduction is Reduction.none:
            raise VisctlError("--compare needs a channel reduction",
                              hint="use squeeze_mean, select_max or pixel_wise_max")
    if repo:
        ctx.cfg_options.append(f"default_scope={repo}")
    def one_image(found: list[Path]) -> None:  # before any work, not after every map is computed
        if out_file is not None and len(found) > 1:
            raise InputError(f"--out-file names one file, and there are {len(found)} images",
                             hint="use --out-dir for several images")

    mi = open_model(ctx, args, check_paths=one_image)
    if preview_model:
        preview(ctx, mi)
        raise typer.Exit(0)
    in_hw = (int(mi.example.shape[2]), int(mi.example.shape[3]))
    if recorded and not target_layers:
        target_layers = list(dict.fromkeys(label.split("[")[0] for label in recorded))
    if score_thr is not None and not mi.detector:
        ctx.warn("--score-thr draws a detector's boxes; this model is not a detector")
        score_thr = None
    if target_layers:
        names = [models.find_layer(mi.model, n)[0] for n in target_layers]
    else:
        default = config.tool_option(mi.cfg, "featmap_layers") or config.tool_option(mi.cfg, "target_layers")
        if default:
            names = [models.find_layer(mi.model, n)[0] for n in default]
        else:
            chosen = cams.default_layers(mi.model, cams.probe(mi.model, mi.example, logits=False), in_hw)
            names = [chosen.features]
            ctx.note(f"default layer {chosen.why}")
        ctx.log(f"default layers: {', '.join(names)} (set --target-layers to change them)")
    layers = {n: models.find_layer(mi.model, n)[1] for n in names}
    other = None
    if compare:
        if len(compare) > 2:
            raise VisctlError("--compare takes CONFIG2[,CHECKPOINT2]", hint=f"got {compare}")
        ctx.protect(compare[0])
        cfg_b = config.load_config(compare[0])  # --cfg-options are for model A's config
        model_b, _ = load_model(ctx, cfg_b, compare[1] if len(compare) > 1 else None, label="compare: ")
        other = (model_b, {n: models.find_layer(model_b, n)[1] for n in names})

    writer = ctx.open_writer(dict(
        inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint, target_layers=names,
        channel_reduction=reduction.value, topk=topk if reduction is Reduction.none else None,
        normalize=normalize.value, use_norm=use_norm, compare=compare, signed=signed, device=ctx.device,
        threads=ctx.threads, batch_size=batch_size,
        panel_size=panel_size or ("--resize-shape" if resize_shape else
                                  f"the original's long side, {render.PANEL_FLOOR}..{render.PANEL_CAP}")),
        out_dir=out_file.parent if out_file else None)
    started = time.time()
    # pass 1: reduced maps at feature resolution (small), so scales can be shared before anything is drawn
    records: list[dict] = []
    boxes_of: dict[Path, Any] = {}
    with ctx.progress(len(mi.paths), "features") as advance:
        for groups, failures in transforms.prepared_batches(mi.paths, mi.steps, batch_size, ctx.max_pixels):
            for p, message in failures:
                ctx.skip(p, message)
                advance()
            for group in groups:
                batch = transforms.to_tensor([s for _, _, s in group], mi.mean, mi.std, mi.rgb).to(ctx.device)
                feats_a = featmaps.capture(mi.model, layers, batch)
                feats_b = featmaps.capture(other[0], other[1], batch) if other else None
                if score_thr is not None:
                    for (p, _img, state), found in zip(group, detection.detect(mi.model, batch)):
                        dets = detection.to_original(found, state)
                        boxes_of[p] = dets.keep(dets.scores >= score_thr)
                for label, ta in feats_a.items():
                    if recorded and label not in recorded and label.split("[")[0] not in recorded:
                        continue
                    fa = featmaps.to_nchw(ta, in_hw, label)
                    fb = None
                    if feats_b is not None:
                        fb = featmaps.to_nchw(feats_b[label], in_hw, label) if label in feats_b else None
                        if fb is None or fb.shape != fa.shape:
                            raise VisctlError(f"{label}: model A gives {tuple(fa.shape[1:])}, model B gives "
                                              f"{'nothing' if fb is None else tuple(fb.shape[1:])}",
                                              hint="compare layers whose outputs have the same shape")
                    for i, (p, _img, state) in enumerate(group):
                        kinds = [("A", fa[i], False)]
                        if fb is not None:
                            kinds = [("A", fa[i], False), ("B", fb[i], False),
                                     ("A-B" if signed else "|A-B|", fa[i] - fb[i] if signed else (fa[i] - fb[i]).abs(),
                                      signed)]
                        for kind, f, is_signed in kinds:
                            if use_norm:
                                f = featmaps.channel_norm(f)
                            maps = featmaps.reduce(f, reduction, topk)
                            ref = float(f.abs().max())
                            records.append(dict(path=p, state=state, label=label, kind=kind, signed=is_signed,
                                                maps=maps, flat=[featmaps.flat(m, ref) for _, m in maps]))
                for _ in group:
                    advance()
    flat = [(f"{r['label']}|{r['kind']}", m, r["signed"]) for r in records for _, m in r["maps"]]
    scale_list = iter(featmaps.scales(flat, normalize))
    for r in records:
        r["scales"] = [next(scale_list) for _ in r["maps"]]

    # pass 2: draw one figure per (image, layer)
    stems = output.input_stems(mi.paths)
    box_classes = class_names(ctx, mi) if boxes_of else None
    by_key: dict[tuple, list[dict]] = {}
    for r in records:
        by_key.setdefault((r["path"], r["label"]), []).append(r)
    single = out_file is not None
    if single and len({p for p, _ in by_key}) > 1:
        raise VisctlError(f"--out-file names one output, this run draws {len({p for p, _ in by_key})} images",
                          hint="use --out-dir for several images")
    stacked: list[Any] = []
    sides_used: set[int] = set()
    flat_maps: list[str] = []
    originals: dict[Path, object] = {}
    # image by image, so that an image is listed as an input as soon as all its figures are written
    position = {p: i for i, p in enumerate(mi.paths)}
    keys = sorted(by_key, key=lambda k: position[k[0]])
    last_key = {k[0]: k for k in keys}
    for p, label in keys:
        recs = by_key[(p, label)]
        if p not in originals:
            originals.clear()
            originals[p] = images.read_image(p, ctx.max_pixels)
        img = originals[p]
        if p in boxes_of:
            dets = boxes_of[p]
            img = render.draw_boxes(img, dets.boxes, dets.labels, dets.scores, box_classes)
        base = img if not resize_shape else cv2.resize(img, (resize_shape[1], resize_shape[0]),
                                                       interpolation=cv2.INTER_AREA)
        panels = []
        rows_cols = None
        # --resize-shape sets every panel's H W; else panels are the original's size, at most 384 (--panel-size)
        side = render.panel_size(*base.shape[:2], panel_size) if panel_size or not resize_shape else None
        sides_used.add(side or max(resize_shape or (0,)))
        writer.manifest["params"]["panel_size"] = render.sizes_param(sides_used)
        for r in recs:
            for (chan, m), sc, is_flat in zip(r["maps"], r["scales"], r["flat"]):
                if m.ndim == 3:  # a 3-channel feature drawn as an image (topk -1)
                    full = transforms.to_original(m.astype("float32"), r["state"], img.shape[:2])
                    u8 = (np.nan_to_num(sc.apply(full), nan=0.5) * 255).astype("uint8")
                    shown = u8 if not resize_shape else cv2.resize(u8, base.shape[1::-1])
                else:
                    full = transforms.to_original(m, r["state"], img.shape[:2])
                    norm = sc.apply(full)
                    if resize_shape:
                        norm = cv2.resize(norm, base.shape[1::-1])
                    unseen = bool(np.isnan(full).any())
                    if is_flat:  # no heat: a constant map drawn full-range would look like a confident answer
                        shown = render.no_data(base)
                    elif not overlaid:
                        shown = render.colorize(np.nan_to_num(norm, nan=0.5), colormap)
                    elif normalize is Normalize.per_map and colormap == "jet" and not r["signed"] and not unseen:
                        shown = render.mmengine_overlay(base, norm, alpha)  # exactly mmengine's rendering
                    else:
                        shown = render.overlay(base, norm, alpha, colormap)
                if side:
                    shown = render.fit(shown, side)
                head = f"{r['kind']}: " if compare else ""
                text = f"{head}{chan} | {sc.describe()}"
                if is_flat:
                    text += (" | FLAT: numerically constant, nothing to show (try --channel-reduction select_max or "
                             "pixel_wise_max, --use-norm, or another layer)")
                    flat_maps.append(f"{p.name}: {label} {head}{chan}")
                elif m.ndim != 3 and unseen:
                    text += f" | {render.NO_DATA}"
                panels.append(render.caption(shown, text))
                if save_raw:
                    tag = f"{r['kind']}_{chan}".replace(" ", "").replace("|", "abs").replace("-", "minus")
                    writer.save_array(f"{stems[p]}_featmap_{_tag(label)}_{tag}.npy", full.astype("float32"),
                                      caption=f"{label} {chan}", input=str(p))
        if reduction is Reduction.none and not compare:
            rows_cols = featmaps.arrangement(len(panels), *(arrangement or (None, None)))
        figure = render.grid(panels, cols=rows_cols[1] if rows_cols else len(panels))
        figure = render.caption(figure, f"{p.name} | {label} | {reduction.value}"
                                + (" after channel z-score" if use_norm else "") + f" | {normalize.value} scale")
        if single and len(by_key) > 1:  # mmyolo draws every layer of the image into the one file
            stacked.append(figure)
            continue
        name = f"{stems[p]}_featmap_{_tag(label)}_{reduction.value}.png"
        writer.save_image(name, figure, caption=f"{p.name}: {label} ({reduction.value}, {normalize.value})",
                          target=out_file, input=str(p), layer=label, panel_size=side or max(base.shape[:2]),
                          scales=[sc.describe() for r in recs for sc in r["scales"]])
        if last_key[p] == (p, label):
            writer.add_input(p)
    if stacked:
        p = keys[0][0]
        labels = [label for _, label in keys]
        writer.save_image(out_file.name, render.grid(stacked, cols=1), target=out_file, input=str(p), layer=labels,
                          caption=f"{p.name}: {', '.join(labels)} ({reduction.value}, {normalize.value})")
        writer.add_input(p)
    if flat_maps:
        writer.manifest["flat_maps"] = flat_maps
        ctx.warn(f"{len(flat_maps)} map(s) are numerically constant and drawn without colour (e.g. {flat_maps[0]}): "
                 "a channel mean of a norm layer's output is ~0 everywhere; try --channel-reduction select_max or "
                 "pixel_wise_max, --use-norm, or another layer")
    writer.manifest["timings"]["featmap_s"] = round(time.time() - started, 3)
    ctx.finish()


def _tag(label: str) -> str:
    return label.replace(".", "_").replace("[", "-").replace("]", "")
