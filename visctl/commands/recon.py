"""`visctl recon`: what a masked-image model (MAE, SimMIM, MaskFeat) reconstructs, and what a token-target one
(BEiT v1/v2, CAE) predicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.choices import NormPixStats
from visctl.context import RunContext
from visctl.options import ReconOptions

EPILOG = """Examples:

  visctl recon img.jpg examples/demo_mae/config.py --mask-ratio 0.75 --seed 0

  visctl recon imgs/ mae.py mae.pth --norm-pix

  visctl recon img.jpg simmim.py simmim.pth --use-vis-pipeline

  visctl recon mae.py --checkpoint mae.pth --img-path img.jpg --out-file out.jpg --norm-pix

  visctl recon img.jpg beitv2_beit-base-p16_8xb256-amp-coslr-300e_in1k.py beitv2.pth
"""


@opt.shared("save_raw", *opt.MODEL, seed=opt.seed("The same masks every run.", optional=True), settings=ReconOptions)
def recon(
    args: Annotated[list[str], typer.Argument(
        metavar="[IMG...] CONFIG [CHECKPOINT]",
        help="Images (files, directories, globs; or --img-path), then a MAE/SimMIM/MaskFeat/BEiT/CAE config, then a "
        "checkpoint (or --checkpoint).", show_default=False)],
    img_path: Annotated[Optional[list[str]], typer.Option(
        "--img-path", "--img_path", help="An image (repeatable), as the seed writes it: then CONFIG may stand "
        "alone.", show_default=False)] = None,
    checkpoint_opt: opt.CheckpointOption = None,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out-file", "--out_file", help="Write the figure of the (one) image to exactly this file; the "
        "manifest stays in --out-dir.", show_default=False)] = None,
    target_generator: Annotated[bool, typer.Option(
        "--target-generator", "--target_generator", help="MaskFeat: show the target (the HOG of the image) as "
        "the first panel instead of the RGB image.")] = False,
    mask_ratio: Annotated[Optional[float], typer.Option(
        "--mask-ratio", "--mask_ratio", min=0.0, max=0.99,
        help="Share of patches masked, exactly [default: the model's].", show_default=False)] = None,
    mask_file: Annotated[Optional[str], typer.Option(
        "--mask-file", help="A mask (.npy or image, patch grid or pixel size, nonzero = masked).")] = None,
    use_vis_pipeline: Annotated[bool, typer.Option(
        "--use-vis-pipeline", help="Take the mask from the config pipeline's mask generator (SimMIM, BEiT).")] = False,
    norm_pix: Annotated[bool, typer.Option(
        "--norm-pix", "--norm_pix", help="The model predicts per-patch normalised pixels: un-normalise them "
        "(see --norm-pix-stats) [default: the model's norm_pix_loss].")] = False,
    norm_pix_stats: Annotated[NormPixStats, typer.Option(
        "--norm-pix-stats", help="Where --norm-pix takes each patch's mean and std: its own, the masked patches' "
        "from pixels the model did not see (patch, as visualize_reconstruction.py), or the visible patches' "
        "(visible: what the model alone predicts).")] = NormPixStats.patch,
    *,
    opts: opt.CommandOptions,
    settings: ReconOptions,
) -> None:
    """Show original, masked input, reconstruction and the reconstruction with visible patches pasted back.

    BEiT (v1, v2) and CAE predict visual tokens that no decoder turns into pixels: their third and fourth panels
    show, per masked patch, whether the top-1 predicted token is the target generator's and that token's
    cross-entropy; the caption and the manifest give the masked-token top-1 accuracy and mean cross-entropy.
    """
    with RunContext("recon", opts, out_dir=opts.out_dir, out_files=[("--out-file", out_file)]) as ctx:
        from visctl.commands._shared import execute, open_model
        from visctl.errors import InputError
        from visctl.library import reconstruct as lib
        from visctl.output.checks import check_output_file

        check_output_file(out_file, "--out-file")
        lib.check_options(settings)
        ctx.session.protect(settings.mask_file)

        def one_image(found: list[Path]) -> None:  # before the model is loaded
            if out_file is not None and len(found) != 1:
                raise InputError(f"--out-file names one file, and there are {len(found)} images",
                                 hint="give one image, or leave --out-file out (the figures go to --out-dir)")

        mi = open_model(ctx, _seed_args(args, img_path, checkpoint_opt), check_paths=one_image)
        execute(ctx, lib.plan(ctx.session, mi, settings, out_file=out_file))


def _seed_args(args: list[str], img_path: list[str] | None, checkpoint: str | None) -> list[str]:
    """``IMG... CONFIG [CHECKPOINT]`` from the positionals and the seed's ``--img-path`` / ``--checkpoint``."""
    from visctl import config
    from visctl.errors import InputError

    if checkpoint:
        if len(args) >= 2 and config.looks_like_checkpoint(args[-1]):
            raise InputError(f"two checkpoints: {args[-1]} (positional) and --checkpoint {checkpoint}",
                             hint="give the checkpoint once, either after CONFIG or with --checkpoint")
        args = [*args, checkpoint]
    return [*(img_path or []), *args]
