"""`visctl cam`: class activation maps of a classifier, drawn on the original images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import Task
from visctl.commands._shared import execute, open_model, preview_hook
from visctl.context import RunContext
from visctl.options import CamOptions

EPILOG = """Examples:

  visctl cam cat.jpg configs/resnet50.py resnet50.pth --method layercam

  visctl cam photos/ torchvision.resnet18 --method all --topk 2

  visctl cam img.png vit.py vit.pth --target-layers 'encoder.layers[-1].ln_1' --save-raw
"""


@opt.shared(*opt.FIGURES, *opt.after("max_pixels", "image_format", "amp"), settings=CamOptions)
def cam(
    args: opt.ImagesConfigCheckpoint,
    method: Annotated[str, typer.Option(
        "--method", "-m", help="gradcam, gradcam++, xgradcam, eigencam, eigengradcam, layercam, hirescam, "
        "gradcamelementwise, scorecam, ablationcam, fullgrad, shapleycam, kpca_cam, fem, randomcam, or all "
        "(case-insensitive).", rich_help_panel="CAM", autocompletion=lambda incomplete: _complete_method(incomplete))
    ] = "gradcam",
    target_category: Annotated[Optional[list[str]], typer.Option(
        "--target-category", "--target_category", "-c", "--category-index", "--category_index",
        help="Class index or name (repeatable or comma-separated; a name with commas, as ImageNet's, is found "
        "whole or by one of its synonyms); one panel each [default: predicted top-1].",
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
    score: Annotated[bool, typer.Option(
        "--score", help="Faithfulness of every map: ROAD, deletion/insertion AUC, keep-top-20% confidence change; "
        "with several methods a ranking (manifest, stderr, ranking image).", rich_help_panel="CAM")] = False,
    task: Annotated[Task, typer.Option(
        "--task", help="classification, segmentation (per-pixel logits: a map per class present over its "
        "predicted pixels), or auto: the config's visctl.task, else the model's output.", case_sensitive=False,
        rich_help_panel="CAM")] = Task.auto,
    target_mask: Annotated[Optional[str], typer.Option(
        "--target-mask", help="Segmentation: the region of the target class (an image or .npy at the original "
        "size, nonzero inside) instead of the predicted mask.", rich_help_panel="CAM", show_default=False)] = None,
    target_box: Annotated[Optional[str], typer.Option(
        "--target-box", help="Segmentation: the region as x0,y0,x1,y1 in original pixels.", rich_help_panel="CAM",
        show_default=False)] = None,
    *,
    opts: opt.CommandOptions,
    settings: CamOptions,
) -> None:
    """Draw class activation maps (Grad-CAM and friends) on the original images."""
    from visctl.library import cam as library
    from visctl.output.checks import check_output_file, single_output

    to_file = save_path is not None and save_path.suffix != "" and not save_path.is_dir()
    with RunContext("cam", opts, out_dir=save_path.parent if to_file else (save_path or opts.out_dir),
                    out_files=[("--save-path", save_path)] if to_file else None) as ctx:
        methods = library.check(ctx.session, settings)  # before the model loads
        if single_output(save_path, 1):  # an image name (else a directory): one that visctl can write
            check_output_file(save_path, "--save-path")

        def check_paths(found: list[Path]) -> None:
            single_output(save_path, len(found))
            library.check_figures(found, methods, settings, ctx.max_pixels)

        mi = open_model(ctx, args, check_paths=check_paths)
        preview_hook(ctx, opts.preview_model)(mi)
        execute(ctx, library.plan(ctx.session, mi, settings, save_path=save_path))


def _complete_method(incomplete: str) -> list[str]:
    from visctl.choices import Method

    return [m.value for m in Method if m.value.startswith(incomplete.lower())] + (
        ["all"] if "all".startswith(incomplete.lower()) else [])
