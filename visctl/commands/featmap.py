"""`visctl featmap`: feature maps of any layers, aligned on the original images; or two models' difference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import Normalize, Reduction
from visctl.context import RunContext
from visctl.options import FeatmapOptions

EPILOG = """Examples:

  visctl featmap img.jpg cfg.py ckpt.pth --target-layers backbone.layer3,backbone.layer4

  visctl featmap imgs/ cfg.py --channel-reduction none --topk 8 --arrangement 2 4 --normalize per-layer

  visctl featmap img.jpg student.py s.pth --compare teacher.py,t.pth --signed
"""


@opt.shared(*opt.FIGURES, *opt.after("max_pixels", "image_format"), settings=FeatmapOptions, cli_only=("compare",))
def featmap(
    args: opt.ImagesConfigCheckpoint,
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
    colormap: Annotated[Optional[str], typer.Option(
        "--colormap", help="OpenCV (jet, turbo, viridis, ...) or matplotlib (coolwarm, ...) colormap [default: jet; "
        "coolwarm for --signed].", show_default=False)] = None,
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
    *,
    opts: opt.CommandOptions,
    settings: FeatmapOptions,
) -> None:
    """Draw the feature maps of one or more layers on the original images."""
    from visctl.commands._shared import execute, preview_hook, split_args
    from visctl.errors import InputError
    from visctl.library import featmap as lib
    from visctl.output.checks import check_output_file

    with RunContext("featmap", opts, out_dir=out_file.parent if out_file else opts.out_dir,
                    out_files=[("--out-file", out_file)]) as ctx:
        compare_values = opt.split_list(compare, "--compare", "config or checkpoint")
        args, recorded, settings = lib.second_model(args, compare_values, settings)  # compare= from --compare
        check_output_file(out_file, "--out-file")
        paths, cfg_spec, checkpoint = split_args(ctx, args, default_scope=settings.repo)
        if out_file is not None and len(paths) > 1:  # before any work, not after every map is computed
            raise InputError(f"--out-file names one file, and there are {len(paths)} images",
                             hint="use --out-dir for several images")
        run = lib.plan(ctx.session, paths, cfg_spec, checkpoint, settings, recorded=recorded, out_file=out_file,
                       on_model=preview_hook(ctx, opts.preview_model))
        execute(ctx, run)
