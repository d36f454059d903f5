"""`visctl featmap`: feature maps of any layers, aligned on the original images; or two models' difference."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from visctl import _options as opt
from visctl.commands._shared import preview
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
    from visctl import config, output
    from visctl import images as imgs
    from visctl.errors import InputError, VisctlError
    from visctl.library import featmap as lib
    from visctl.session import RunOptions

    opts = RunOptions.of(locals())  # the shared options, one object
    with RunContext("featmap", opts, out_dir=out_file.parent if out_file else out_dir,
                    out_files=[("--out-file", out_file)]) as ctx:
        compare_list = opt.split_list(compare)
        lib.check_options(channel_reduction=channel_reduction, topk=topk, arrangement=arrangement,
                          colormap=colormap, compare=compare_list, signed=signed)
        output.check_output_file(out_file, "--out-file")
        args, recorded, compare_layout = config.split_recorder_args(args)
        if compare_layout:
            if compare_list:
                raise VisctlError("two second models: CONFIG2 in the positional arguments and --compare",
                                  hint="give one of them")
            compare_list = compare_layout
            lib.check_options(channel_reduction=channel_reduction, topk=topk, arrangement=None,
                              colormap=colormap, compare=compare_list, signed=signed)
        if compare_list and len(compare_list) > 2:
            raise VisctlError("--compare takes CONFIG2[,CHECKPOINT2]", hint=f"got {compare_list}")
        args, extra_options = config.pop_cfg_options(args)
        img_specs, cfg_spec, checkpoint = config.split_inputs(args)
        paths = imgs.gather_images(img_specs, note=ctx.note)
        if out_file is not None and len(paths) > 1:  # before any work, not after every map is computed
            raise InputError(f"--out-file names one file, and there are {len(paths)} images",
                             hint="use --out-dir for several images")
        if repo:
            ctx.cfg_options.append(f"default_scope={repo}")
        ctx.cfg_options.extend(extra_options)

        def on_model(mi: Any) -> None:
            if preview_model:
                preview(ctx, mi)
                raise typer.Exit(0)

        plan = lib.prepare(paths, cfg_spec, checkpoint, target_layers=opt.split_list(target_layers),
                           channel_reduction=channel_reduction, topk=topk, arrangement=arrangement, overlaid=overlaid,
                           alpha=alpha, use_norm=use_norm, normalize=normalize, resize_shape=resize_shape,
                           colormap=colormap, compare=compare_list[0] if compare_list else None,
                           compare_checkpoint=compare_list[1] if compare_list and len(compare_list) > 1 else None,
                           signed=signed, score_thr=score_thr, panel_size=panel_size, batch_size=batch_size,
                           recorded=recorded, session=ctx, on_model=on_model)
        writer = ctx.open_writer(plan.params, out_dir=out_file.parent if out_file else None)
        writer.background(output.io_threads(ctx.threads), queue=batch_size)  # encoded and written beside the model
        started = time.time()
        out = lib.FeatmapWriter(writer, save_raw=save_raw, out_file=out_file)
        for item in lib.iter_featmap(plan):
            out.add(item)
        out.close(plan.opts["flat_maps"])
        writer.manifest["timings"]["featmap_s"] = round(time.time() - started, 3)
        ctx.finish()
