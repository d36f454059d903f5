"""`visctl cam`: class activation maps of a classifier, drawn on the original images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.commands._shared import open_model, preview
from visctl.context import RunContext

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
        "--save-path", "--save_path", help="A file for one image, a directory for many.",
        rich_help_panel="Output")] = None,
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
) -> None:
    """Draw class activation maps (Grad-CAM and friends) on the original images."""
    with RunContext("cam", out_dir=out_dir, device=device, threads=threads, quiet=quiet, json_out=json_out,
                    debug=debug, seed=seed, cfg_options=cfg_options, backend=backend, show=show,
                    unsafe_load_checkpoint=unsafe_load_checkpoint) as ctx:
        _run(ctx, args, method=method, target_category=target_category or [], topk=topk,
                   target_layers=opt.split_list(target_layers), vit_like=vit_like,
                   num_extra_tokens=num_extra_tokens, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth,
                   ratio_channels_to_ablate=ratio_channels_to_ablate, alpha=alpha, colormap=colormap,
                   save_path=save_path, save_raw=save_raw, preview_model=preview_model, batch_size=batch_size)






def _complete_method(incomplete: str) -> list[str]:
    from visctl.cams import Method

    return [m.value for m in Method if m.value.startswith(incomplete.lower())] + (
        ["all"] if "all".startswith(incomplete.lower()) else [])


def _run(ctx: RunContext, args: list[str], *, method: str, target_category: list[str], topk: int,
         target_layers: list[str] | None, vit_like: bool | None, num_extra_tokens: int | None, aug_smooth: bool,
         eigen_smooth: bool, ratio_channels_to_ablate: float, alpha: float, colormap: str,
         save_path: Path | None, save_raw: bool, preview_model: bool, batch_size: int) -> None:
    import time

    from visctl import cams, config, output, render, transforms

    methods = cams.parse_method(method)
    colormap = render.check_colormap(colormap)
    to_dir = save_path is not None and (save_path.is_dir() or save_path.suffix == "")
    if save_path is not None and not to_dir:
        output.check_output_file(save_path, "--save-path")
    mi = open_model(ctx, args)
    if preview_model:
        preview(ctx, mi)
        raise typer.Exit(0)
    model, paths, cfg, steps, mean, std, rgb = mi.model, mi.paths, mi.cfg, mi.steps, mi.mean, mi.std, mi.rgb
    cfg_spec, checkpoint, example = mi.cfg_spec, mi.checkpoint, mi.example

    setup = cams.plan(model, example, target_layers, vit_like, num_extra_tokens,
                      config.tool_option(cfg, "target_layers"))
    names = config.class_names(cfg)
    categories = cams.resolve_categories(target_category, names, setup.num_classes)
    if not categories:
        cams.check_topk(topk, setup.num_classes)
    for note in setup.notes:
        ctx.note(note)
    per_image = sum(cams.forwards_per_image(m, setup.layer_channels, ratio_channels_to_ablate) for m in methods)
    slots = len(categories) or topk
    passes = per_image * slots * (6 if aug_smooth else 1)
    if passes > 10:
        ctx.log(f"{len(paths)} image(s) x {passes} forward passes each = {len(paths) * passes} forwards "
                "(ScoreCAM/AblationCAM perturb every channel; --ratio-channels-to-ablate lowers it)")

    single_file = save_path is not None and len(paths) == 1 and not to_dir
    writer = ctx.open_writer(dict(
        inputs=[str(p) for p in paths], config=cfg_spec, checkpoint=checkpoint,
        methods=[m.value for m in methods], target_layers=setup.layers, target_category=categories or None,
        topk=None if categories else topk, vit_like=setup.vit_like, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth,
        device=ctx.device, threads=ctx.threads, batch_size=batch_size),
        out_dir=(save_path.parent if single_file else save_path) or None)
    engines = [cams.CamEngine(model, m, setup.layers, setup.layouts, batch_size=batch_size,
                              ratio_channels_to_ablate=ratio_channels_to_ablate) for m in methods]
    stems = output.input_stems(paths)
    layer_tag = "+".join(setup.layers).replace(".", "_")
    started = time.time()
    try:
        with ctx.progress(len(paths), "cam") as advance:
            for groups, failures in transforms.prepared_batches(paths, steps, batch_size):
                for p, message in failures:
                    ctx.skip(p, message)
                    advance()
                for group in groups:
                    batch = transforms.to_tensor([s for _, _, s in group], mean, std, rgb).to(ctx.device)
                    rows: list[list[tuple[str, list]]] = [[] for _ in group]
                    raws: list[list[tuple[str, object]]] = [[] for _ in group]
                    nonfinite: set[int] = set()  # images whose scores or maps are NaN/inf: skipped, not drawn
                    for slot in range(slots):
                        targets = ([cams.ClassTarget(categories[slot]) for _ in group] if categories
                                   else [cams.RankTarget(slot) for _ in group])
                        for engine in engines:
                            maps, logits = engine(batch, targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
                            probs = logits.float().softmax(-1).cpu()
                            nonfinite |= cams.nonfinite_rows(logits, maps)
                            for i, (_p, img, state) in enumerate(group):
                                cat = targets[i].category
                                label = names[cat] if names and cat < len(names) else str(cat)
                                fmap = transforms.to_original(maps[i], state, img.shape[:2])
                                if len(rows[i]) <= slot:
                                    rows[i].append((f"class {cat} {label}" if names else f"class {cat}", []))
                                rows[i][slot][1].append(
                                    (f"{engine.method.value} | {label} p={float(probs[i, cat]):.2f}", fmap))
                                raws[i].append((f"{engine.method.value}_c{cat}", fmap))
                    for i, (p, img, _state) in enumerate(group):
                        if i in nonfinite:
                            ctx.skip(p, "the model's scores or maps for this image are NaN or infinite")
                            advance()
                            continue
                        figure = render.map_figure(img, rows[i], alpha=alpha, colormap=colormap)
                        tag = "+".join(m.value for m in methods) if len(methods) < 4 else "all"
                        name = f"{stems[p]}_cam_{tag}_{layer_tag}.png".replace("++", "pp")
                        cats = [r[0] for r in rows[i]]
                        writer.save_image(name, figure, caption=f"{p.name}: {', '.join(cats)}",
                                          target=save_path if single_file else None, input=str(p))
                        if save_raw:
                            for key, fmap in raws[i]:
                                writer.save_array(f"{stems[p]}_cam_{key}_{layer_tag}.npy".replace("++", "pp"),
                                                  fmap.astype("float32"), caption=key, input=str(p))
                        writer.add_input(p, size=list(img.shape[:2]), targets=cats)
                        advance()
    finally:
        writer.manifest["timings"]["cam_s"] = round(time.time() - started, 3)
    ctx.finish()
