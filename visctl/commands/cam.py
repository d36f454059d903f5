"""`visctl cam`: class activation maps of a classifier, drawn on the original images."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from visctl import _options as opt
from visctl.commands._shared import class_names, open_model, preview
from visctl.context import RunContext


class Task(str, Enum):
    """What the model's output is."""

    auto = "auto"
    classification = "classification"
    segmentation = "segmentation"


EPILOG = """Examples:

  visctl cam cat.jpg configs/resnet50.py resnet50.pth --method layercam

  visctl cam photos/ torchvision.resnet18 --method all --topk 2

  visctl cam img.png vit.py vit.pth --target-layers 'encoder.layers[-1].ln_1' --save-raw
"""


def cam(
    args: Annotated[list[str], typer.Argument(
        metavar="IMG... CONFIG [CHECKPOINT]",
        help="Images (files, directories, globs), then a config file or model name, then a checkpoint.",
        show_default=False)],
    method: Annotated[str, typer.Option(
        "--method", "-m", help="gradcam, gradcam++, xgradcam, eigencam, eigengradcam, layercam, hirescam, "
        "gradcamelementwise, scorecam, ablationcam, fullgrad, shapleycam, kpca_cam, fem, randomcam, or all "
        "(case-insensitive).", rich_help_panel="CAM", autocompletion=lambda incomplete: _complete_method(incomplete))
    ] = "gradcam",
    target_category: Annotated[Optional[list[str]], typer.Option(
        "--target-category", "--target_category", "-c",
        help="Class index or name (repeatable or comma-separated); one panel each [default: predicted top-1].",
        rich_help_panel="CAM")] = None,
    topk: Annotated[int, typer.Option("--topk", min=1, help="Without --target-category: the top K predicted "
                                      "classes, one panel each.", rich_help_panel="CAM")] = 1,
    target_layers: opt.TargetLayers = None,
    vit_like: Annotated[Optional[bool], typer.Option(
        "--vit-like/--no-vit-like", "--vit_like", help="Treat the model as ViT-like [default: detected].",
        rich_help_panel="Model", show_default=False)] = None,
    num_extra_tokens: Annotated[Optional[int], typer.Option(
        "--num-extra-tokens", "--num_extra_tokens", min=0,
        help="Extra (class/distillation) tokens before the patch tokens [default: from the model or the grid].",
        rich_help_panel="Model")] = None,
    aug_smooth: Annotated[bool, typer.Option("--aug-smooth", "--aug_smooth",
                                             help="Test-time augmentation (6 passes per image).",
                                             rich_help_panel="CAM")] = False,
    eigen_smooth: Annotated[bool, typer.Option("--eigen-smooth", "--eigen_smooth",
                                               help="First principal component (less noise).",
                                               rich_help_panel="CAM")] = False,
    ratio_channels_to_ablate: Annotated[float, typer.Option(
        "--ratio-channels-to-ablate", min=0.0, max=1.0,
        help="AblationCAM: ablate only this fraction of channels (top and bottom).", rich_help_panel="CAM")] = 1.0,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Heatmap opacity.",
                                         rich_help_panel="Output")] = 0.5,
    colormap: Annotated[str, typer.Option("--colormap", help="jet, turbo, viridis, inferno, magma, ...",
                                          rich_help_panel="Output")] = "jet",
    save_path: Annotated[Optional[Path], typer.Option(
        "--save-path", "--save_path", help="An image file (.png, .jpg, ...) for one input image, else a directory.",
        rich_help_panel="Output")] = None,
    panel_size: opt.PanelSize = None,
    score: Annotated[bool, typer.Option(
        "--score", help="Faithfulness of every map: ROAD, deletion/insertion AUC, keep-top-20% confidence change; "
        "with several methods a ranking (manifest, stderr, ranking image).", rich_help_panel="CAM")] = False,
    task: Annotated[Task, typer.Option(
        "--task", help="classification, segmentation (per-pixel logits: a map per class present over its "
        "predicted pixels), or auto: the config's visctl.task, else the model's output.", case_sensitive=False,
        rich_help_panel="CAM")] = Task.auto,
    target_mask: Annotated[Optional[Path], typer.Option(
        "--target-mask", help="Segmentation: the region of the target class (an image or .npy at the original "
        "size, nonzero inside) instead of the predicted mask.", rich_help_panel="CAM", show_default=False)] = None,
    target_box: Annotated[Optional[str], typer.Option(
        "--target-box", help="Segmentation: the region as x0,y0,x1,y1 in original pixels.", rich_help_panel="CAM",
        show_default=False)] = None,
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
    """Draw class activation maps (Grad-CAM and friends) on the original images."""
    to_file = save_path is not None and save_path.suffix != "" and not save_path.is_dir()
    with RunContext("cam", out_dir=save_path.parent if to_file else (save_path or out_dir), device=device,
                    threads=threads, quiet=quiet, json_out=json_out, debug=debug, seed=seed, cfg_options=cfg_options,
                    backend=backend, show=show, unsafe_load_checkpoint=unsafe_load_checkpoint, max_pixels=max_pixels,
                    out_files=[("--save-path", save_path)] if to_file else None) as ctx:
        _run(ctx, args, method=method, target_category=target_category or [], topk=topk,
                   target_layers=opt.split_list(target_layers), vit_like=vit_like,
                   num_extra_tokens=num_extra_tokens, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth,
                   ratio_channels_to_ablate=ratio_channels_to_ablate, alpha=alpha, colormap=colormap,
                   save_path=save_path, save_raw=save_raw, preview_model=preview_model, batch_size=batch_size,
                   panel_size=panel_size, score=score, task=task, target_mask=target_mask, target_box=target_box)






def _rank(ctx: RunContext, writer: Any, scored: dict[str, list]) -> None:
    """The methods ranked by faithfulness: in the manifest, on stderr, and as the gallery's first image."""
    from visctl import faithfulness

    rows = faithfulness.ranking(scored)
    writer.manifest["faithfulness_ranking"] = rows
    ctx.log("faithfulness (ROAD combined; deletion AUC lower and insertion AUC higher are better):\n"
            + faithfulness.table(rows))
    if len(rows) > 1:
        from visctl.render import figure_png

        target = writer.write_bytes("cam_ranking.png", figure_png(faithfulness.ranking_figure(rows)))
        writer.add_output(target, "image", caption="methods ranked by faithfulness (ROAD combined)")
        outputs = writer.manifest["outputs"]
        outputs.insert(0, outputs.pop())  # the gallery opens with the ranking


def _complete_method(incomplete: str) -> list[str]:
    from visctl.cams import Method

    return [m.value for m in Method if m.value.startswith(incomplete.lower())] + (
        ["all"] if "all".startswith(incomplete.lower()) else [])


def _run(ctx: RunContext, args: list[str], *, method: str, target_category: list[str], topk: int,
         target_layers: list[str] | None, vit_like: bool | None, num_extra_tokens: int | None, aug_smooth: bool,
         eigen_smooth: bool, ratio_channels_to_ablate: float, alpha: float, colormap: str,
         save_path: Path | None, save_raw: bool, preview_model: bool, batch_size: int,
         panel_size: int | None = None, score: bool = False, task: Task = Task.auto, target_mask: Path | None = None,
         target_box: str | None = None) -> None:
    import sys
    import time
    import traceback

    from visctl import cams, classes, config, featmaps, output, render, transforms
    from visctl.errors import VisctlError

    methods = cams.parse_method(method)
    colormap = render.check_colormap(colormap)
    if output.single_output(save_path, 1):  # an image name (else a directory): one that visctl can write
        output.check_output_file(save_path, "--save-path")
    mi = open_model(ctx, args, check_paths=lambda found: output.single_output(save_path, len(found)))
    if preview_model:
        preview(ctx, mi)
        raise typer.Exit(0)
    model, paths, cfg, steps, mean, std, rgb = mi.model, mi.paths, mi.cfg, mi.steps, mi.mean, mi.std, mi.rgb
    cfg_spec, checkpoint, example = mi.cfg_spec, mi.checkpoint, mi.example
    if task is Task.auto:
        from visctl import segmentation

        configured = config.tool_option(cfg, "task")
        segment = configured == "segmentation" or (configured is None and segmentation.predicts_masks(model, example))
    else:
        segment = task is Task.segmentation
    if segment:
        return _run_segmentation(ctx, mi, methods=methods, target_category=target_category,
                                 target_layers=target_layers, target_mask=target_mask, target_box=target_box,
                                 alpha=alpha, colormap=colormap, save_raw=save_raw, batch_size=batch_size,
                                 score=score)
    if target_mask or target_box:
        raise VisctlError("--target-mask and --target-box are regions of a segmentation model's class",
                          hint="use them with a segmentation model (--task segmentation)")

    setup = cams.plan(model, example, target_layers, vit_like, num_extra_tokens,
                      config.tool_option(cfg, "target_layers"))
    names = class_names(ctx, mi, setup.num_classes)
    categories = cams.resolve_categories(target_category, names, setup.num_classes)
    if not categories:
        cams.check_topk(topk, setup.num_classes)
    for note in setup.notes:
        ctx.note(note)
    per_image = sum(cams.forwards_per_image(m, setup.layer_channels, ratio_channels_to_ablate) for m in methods)
    slots = len(categories) or topk
    passes = per_image * slots * (6 if aug_smooth else 1)
    if score:
        from visctl import faithfulness

        passes += faithfulness.forwards_per_map() * len(methods) * slots
        score_model = cams.build_cam_model(model, "none")
        scored: dict[str, list] = {}
    if passes > 10:
        ctx.log(f"{len(paths)} image(s) x {passes} forward passes each = {len(paths) * passes} forwards "
                "(ScoreCAM/AblationCAM perturb every channel; --ratio-channels-to-ablate lowers it)")

    single_file = output.single_output(save_path, len(paths))  # out/x.png with many images was refused above
    writer = ctx.open_writer(dict(
        inputs=[str(p) for p in paths], config=cfg_spec, checkpoint=checkpoint,
        methods=[m.value for m in methods], target_layers=setup.layers, target_category=categories or None,
        topk=None if categories else topk, vit_like=setup.vit_like, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth,
        device=ctx.device, threads=ctx.threads, batch_size=batch_size,
        panel_size=panel_size or f"the original's long side, {render.PANEL_FLOOR}..{render.PANEL_CAP}"),
        out_dir=(save_path.parent if single_file else save_path) or None)
    engines = [cams.CamEngine(model, m, setup.layers, setup.layouts, batch_size=batch_size,
                              ratio_channels_to_ablate=ratio_channels_to_ablate) for m in methods]
    skipped: dict[str, str] = {}

    def skip_method(engine: cams.CamEngine, reason: str) -> None:
        # one failure entry per method (the run exits 1 and finish() warns once); its other panels stay
        skipped[engine.method.value] = reason
        writer.manifest["skipped_methods"] = [dict(method=k, reason=v) for k, v in skipped.items()]
        writer.fail(f"--method {engine.method.value}", f"skipped: {reason}")
        ctx.log(f"{engine.method.value} cannot run on this model; skipped ({reason})")
        engines.remove(engine)

    for engine in list(engines):
        reason = cams.unsupported(engine.method, setup.layouts)
        if reason:
            skip_method(engine, reason)

    def label_of(cat: int) -> str:
        return classes.label(names, cat)

    stems = output.input_stems(paths)
    sides_used: set[int] = set()
    blank: list[str] = []
    layer_tag = "+".join(setup.layers).replace(".", "_")
    started = time.time()
    try:
        with ctx.progress(len(paths), "cam") as advance:
            for groups, failures in transforms.prepared_batches(paths, steps, batch_size, ctx.max_pixels):
                for p, message in failures:
                    ctx.skip(p, message)
                    advance()
                for group in groups:
                    batch = transforms.to_tensor([s for _, _, s in group], mean, std, rgb).to(ctx.device)
                    rows: list[list[tuple[str, list]]] = [[] for _ in group]
                    raws: list[list[tuple[str, object]]] = [[] for _ in group]
                    scores_of: list[dict] = [{} for _ in group]
                    nonfinite: set[int] = set()  # images whose scores or maps are NaN/inf: skipped, not drawn
                    for slot in range(slots):
                        # a rank is resolved on the clean image by the first method, then shared by all
                        targets = ([cams.ClassTarget(categories[slot]) for _ in group] if categories
                                   else [cams.RankTarget(slot) for _ in group])
                        panels: list[list] = [[] for _ in group]
                        for engine in list(engines):
                            try:
                                maps, logits = engine(batch, targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
                            except VisctlError:
                                raise
                            except Exception as err:  # a method that cannot run on this model: the others go on
                                if ctx.debug:
                                    traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
                                first_line = (str(err).splitlines() or [""])[0]
                                skip_method(engine, f"{type(err).__name__}: {first_line}")
                                continue
                            probs = logits.float().softmax(-1).cpu()  # of the clean batch
                            nonfinite |= cams.nonfinite_rows(logits, maps)
                            if score:
                                found = faithfulness.score(score_model, batch, maps, [t.category for t in targets],
                                                           batch_size=batch_size, seed=ctx.seed or 0)
                            for i, (_p, img, state) in enumerate(group):
                                cat = targets[i].category
                                fmap = transforms.to_original(maps[i], state, img.shape[:2])
                                caption = f"{engine.method.value} | {label_of(cat)} p={float(probs[i, cat]):.2f}"
                                if featmaps.flat(maps[i], 1.0):  # grad-cam scales to [0, 1]: constant = blank
                                    caption += " | BLANK: constant map (try another --target-layers or method)"
                                    blank.append(f"{_p.name}: {engine.method.value} {classes.caption(names, cat)}")
                                if score:
                                    caption += " | " + found[i].caption()
                                    scored.setdefault(engine.method.value, []).append(found[i])
                                    scores_of[i][f"{engine.method.value}_c{cat}"] = found[i].__dict__
                                panels[i].append((caption, fmap))
                                raws[i].append((f"{engine.method.value}_c{cat}", fmap))
                        if any(t.category is None for t in targets):  # every method was skipped
                            cams.resolve_ranks(targets, cams.predict(model, batch))
                        for i, t in enumerate(targets):
                            rows[i].append((classes.caption(names, t.category), panels[i]))
                    for i, (p, img, _state) in enumerate(group):
                        if i in nonfinite:
                            ctx.skip(p, "the model's scores or maps for this image are NaN or infinite")
                            advance()
                            continue
                        cats = [r[0] for r in rows[i]]
                        if any(row_panels for _, row_panels in rows[i]):
                            side = render.panel_size(*img.shape[:2], panel_size)
                            sides_used.add(side)
                            writer.manifest["params"]["panel_size"] = render.sizes_param(sides_used)
                            figure = render.map_figure(img, [r for r in rows[i] if r[1]], alpha=alpha,
                                                       colormap=colormap, panel_side=side)
                            tag = "+".join(m.value for m in methods) if len(methods) < 4 else "all"
                            name = f"{stems[p]}_cam_{tag}_{layer_tag}.png".replace("++", "pp")
                            writer.save_image(name, figure, caption=f"{p.name}: {', '.join(cats)}",
                                              target=save_path if single_file else None, input=str(p),
                                              panel_size=side)
                        if save_raw:
                            for key, fmap in raws[i]:
                                writer.save_array(f"{stems[p]}_cam_{key}_{layer_tag}.npy".replace("++", "pp"),
                                                  fmap.astype("float32"), caption=key, input=str(p))
                        writer.add_input(p, size=list(img.shape[:2]), targets=cats,
                                         **({"scores": scores_of[i]} if score else {}))
                        advance()
    finally:
        writer.manifest["timings"]["cam_s"] = round(time.time() - started, 3)
        if score and scored:
            _rank(ctx, writer, scored)
        if blank:
            writer.manifest["flat_maps"] = blank
            ctx.warn(f"{len(blank)} map(s) are constant (blank), e.g. {blank[0]}: the layer gives no signal for "
                     "this method (a zero head, or a layer before its activation); try another --target-layers "
                     "or method")
    ctx.finish()


def _run_segmentation(ctx: RunContext, mi: Any, *, methods: list, target_category: list[str],
                      target_layers: list[str] | None, target_mask: Path | None, target_box: str | None, alpha: float,
                      colormap: str, save_raw: bool, batch_size: int, score: bool) -> None:
    """Segmentation: one panel per class present (or asked), its map over its region, the predicted outlines."""
    import numpy as np
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    from visctl import cams, config, faithfulness, models, output, render, segmentation, transforms
    from visctl.errors import InputError

    model = mi.model
    example_logits = segmentation.logits(model, mi.example)
    num_classes = int(example_logits.shape[1])
    names = config.class_names(mi.cfg)
    asked = cams.resolve_categories(target_category, names, num_classes)
    background = segmentation.background_index(names, model)
    pr = cams.probe(model, mi.example, logits=False)
    in_hw = (int(mi.example.shape[2]), int(mi.example.shape[3]))
    layers = ([models.find_layer(model, n)[0] for n in target_layers] if target_layers
              else [models.find_layer(model, n)[0] for n in config.tool_option(mi.cfg, "target_layers") or []]
              or [segmentation.default_layer(pr, num_classes)])
    layouts = [cams.detect_layout(pr.shape_of(n), in_hw, False, None, n) for n in layers]
    ctx.note(f"segmentation: target layers {', '.join(layers)}; regions: "
             + ("--target-mask" if target_mask else "--target-box" if target_box else "the predicted masks"))
    box = None
    if target_box:
        try:
            box = [float(v) for v in target_box.split(",")]
            assert len(box) == 4
        except (ValueError, AssertionError):
            raise InputError(f"--target-box {target_box!r}", hint="four numbers x0,y0,x1,y1 in original pixels") from None
    if (target_mask or box) and not asked:
        raise InputError("a region needs its class", hint="add --target-category NAME_OR_INDEX")
    engines = [cams.CamEngine(model, m, layers, layouts, batch_size=batch_size) for m in methods]
    score_model = segmentation.region_score(model) if score else None
    writer = ctx.open_writer(dict(inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint,
                                  task="segmentation", methods=[m.value for m in methods], target_layers=layers,
                                  target_category=asked or None, target_mask=str(target_mask) if target_mask else None,
                                  target_box=box, background=background, device=ctx.device))
    colors = render.class_colors(max(num_classes, 1))
    stems = output.input_stems(mi.paths)
    scored: dict[str, list] = {}
    with ctx.progress(len(mi.paths), "cam") as advance:
        for groups, failures in transforms.prepared_batches(mi.paths, mi.steps, batch_size):
            for p, message in failures:
                ctx.skip(p, message)
                advance()
            for group in groups:
                batch = transforms.to_tensor([s for _, _, s in group], mi.mean, mi.std, mi.rgb).to(ctx.device)
                preds = segmentation.logits(model, batch).argmax(1).cpu().numpy()
                for i, (p, img, state) in enumerate(group):
                    pred = preds[i]
                    present = [int(c) for c in np.unique(pred) if int(c) != background]
                    classes = asked or present
                    rows, raws, found_scores = [], [], {}
                    for c in classes:
                        if box is not None:
                            region = segmentation.region_from_box(box, state, pred.shape)
                        elif target_mask is not None:
                            region = segmentation.region_from_file(target_mask, state, img.shape[:2], pred.shape)
                        else:
                            region = (pred == c).astype(np.float32)
                        label = names[c] if names and c < len(names) else str(c)
                        if not region.any():
                            rows.append((f"class {c} {label}: no pixels of it predicted", []))
                            continue
                        panels = []
                        for engine in engines:
                            maps, _ = engine(batch[i:i + 1], [SemanticSegmentationTarget(c, region)])
                            fmap = transforms.to_original(maps[0], state, img.shape[:2])
                            text = f"{engine.method.value} | {label} ({int(region.sum())} px)"
                            if score_model is not None:
                                score_model.region = region
                                f = faithfulness.score(score_model, batch[i:i + 1], maps, [c], batch_size=batch_size,
                                                       seed=ctx.seed or 0)[0]
                                text += " | " + f.caption()
                                scored.setdefault(engine.method.value, []).append(f)
                                found_scores[f"{engine.method.value}_c{c}"] = f.__dict__
                            panels.append((text, fmap))
                            raws.append((f"{engine.method.value}_c{c}", fmap))
                        rows.append((f"class {c} {label}", panels))
                    on_original = segmentation.predicted_on_original(pred, state, img.shape[:2])
                    base = segmentation.outlines(img, on_original, present, colors)
                    drawn = [r for r in rows if r[1]]
                    if drawn:
                        figure = render.map_figure(base, drawn, alpha=alpha, colormap=colormap)
                        tag = "+".join(m.value for m in methods) if len(methods) < 4 else "all"
                        writer.save_image(f"{stems[p]}_segcam_{tag}.png".replace("++", "pp"), figure,
                                          caption=f"{p.name}: {', '.join(r[0] for r in rows)}", input=str(p))
                    if save_raw:
                        for key, fmap in raws:
                            writer.save_array(f"{stems[p]}_segcam_{key}.npy".replace("++", "pp"),
                                              fmap.astype("float32"), caption=key, input=str(p))
                    writer.add_input(p, size=list(img.shape[:2]), targets=[r[0] for r in rows],
                                     predicted=[names[c] if names and c < len(names) else c for c in present],
                                     **({"scores": found_scores} if score else {}))
                    advance()
    if score and scored:
        _rank(ctx, writer, scored)
    ctx.finish()
