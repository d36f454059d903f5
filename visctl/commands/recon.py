"""`visctl recon`: what a masked-image model (MAE, SimMIM, MaskFeat) reconstructs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.context import RunContext

EPILOG = """Examples:

  visctl recon img.jpg examples/demo_mae/config.py --mask-ratio 0.75 --seed 0

  visctl recon imgs/ mae.py mae.pth --norm-pix

  visctl recon img.jpg simmim.py simmim.pth --use-vis-pipeline

  visctl recon mae.py --checkpoint mae.pth --img-path img.jpg --out-file out.jpg --norm-pix
"""


def recon(
    args: Annotated[list[str], typer.Argument(
        metavar="[IMG...] CONFIG [CHECKPOINT]",
        help="Images (files, directories, globs; or --img-path), then a MAE/SimMIM/MaskFeat config, then a "
        "checkpoint (or --checkpoint).", show_default=False)],
    img_path: Annotated[Optional[list[str]], typer.Option(
        "--img-path", "--img_path", help="An image (repeatable), as the seed writes it: then CONFIG may stand "
        "alone.", show_default=False)] = None,
    checkpoint_opt: Annotated[Optional[str], typer.Option(
        "--checkpoint", help="Weights, as the seed writes them (instead of the positional CHECKPOINT).",
        show_default=False)] = None,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out-file", "--out_file", help="Write the figure of the (one) image to exactly this file; the "
        "manifest stays in --out-dir.", show_default=False)] = None,
    target_generator: Annotated[bool, typer.Option(
        "--target-generator", "--target_generator", help="MaskFeat: show the target (the HOG of the image) as "
        "the first panel instead of the RGB image.")] = False,
    mask_ratio: Annotated[Optional[float], typer.Option(
        "--mask-ratio", "--mask_ratio", min=0.0, max=0.99,
        help="Share of patches masked, exactly [default: the model's].", show_default=False)] = None,
    mask_file: Annotated[Optional[Path], typer.Option(
        "--mask-file", help="A mask (.npy or image, patch grid or pixel size, nonzero = masked).")] = None,
    use_vis_pipeline: Annotated[bool, typer.Option(
        "--use-vis-pipeline", help="Take the mask from the config pipeline's mask generator (SimMIM, BEiT).")] = False,
    norm_pix: Annotated[bool, typer.Option(
        "--norm-pix", "--norm_pix", help="The model predicts per-patch normalised pixels: un-normalise with the "
        "visible patches' statistics [default: the model's norm_pix_loss].")] = False,
    save_raw: opt.SaveRaw = False,
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
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, max=opt.SEED_MAX, help="The same masks every run.")] = 0,
    debug: opt.Debug = False,
    max_pixels: opt.MaxPixels = opt.DEFAULT_MAX_PIXELS,
) -> None:
    """Show original, masked input, reconstruction and the reconstruction with visible patches pasted back."""
    with RunContext("recon", out_dir=out_dir, device=device, threads=threads, quiet=quiet, json_out=json_out,
                    debug=debug, seed=seed, cfg_options=cfg_options, backend=backend, show=show,
                    unsafe_load_checkpoint=unsafe_load_checkpoint, max_pixels=max_pixels,
                    out_files=[("--out-file", out_file)]) as ctx:
        _run(ctx, _seed_args(args, img_path, checkpoint_opt), mask_ratio=mask_ratio, mask_file=mask_file,
             use_vis_pipeline=use_vis_pipeline, norm_pix=norm_pix, save_raw=save_raw, batch_size=batch_size,
             seed=seed, out_file=out_file, target_generator=target_generator)


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


def _run(ctx: RunContext, args: list[str], *, mask_ratio: float | None, mask_file: Path | None,
         use_vis_pipeline: bool, norm_pix: bool, save_raw: bool, batch_size: int, seed: int | None,
         out_file: Path | None, target_generator: bool) -> None:
    import numpy as np

    from visctl import masked, output, render, transforms
    from visctl.commands._shared import open_model
    from visctl.errors import InputError, VisctlError

    output.check_output_file(out_file, "--out-file")
    ctx.protect(mask_file)

    def one_image(found: list[Path]) -> None:  # before the model is loaded
        if out_file is not None and len(found) != 1:
            raise InputError(f"--out-file names one file, and there are {len(found)} images",
                             hint="give one image, or leave --out-file out (the figures go to --out-dir)")

    mi = open_model(ctx, args, check_paths=one_image)
    model = mi.model
    kind = getattr(model, "kind", None)
    if kind not in ("mae", "simmim", "maskfeat"):
        raise VisctlError(f"{type(model).__name__} is not a masked-image model visctl knows",
                          hint="use visctl.mim_models:mae_vit, simmim_vit or maskfeat_vit (or a model with "
                          "kind, patch_size and forward(images, mask))")
    notes = []
    if target_generator and kind != "maskfeat":
        notes.append(f"--target-generator does not apply to {kind.upper()}: its target is the image's pixels, "
                     "already the first panel (MaskFeat's is the HOG)")
        ctx.warn(notes[-1])
    ratio = mask_ratio if mask_ratio is not None else float(getattr(model, "mask_ratio", 0.75))
    norm_pix = norm_pix or bool(getattr(model, "norm_pix_loss", False))
    p = model.patch_size
    writer = ctx.open_writer(dict(inputs=[str(x) for x in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint,
                                  model=kind, mask_ratio=ratio, mask_file=str(mask_file) if mask_file else None,
                                  use_vis_pipeline=use_vis_pipeline, norm_pix=norm_pix, seed=seed,
                                  target_generator=target_generator, device=ctx.device))
    for note in notes:
        writer.note(note)
    stems = output.input_stems(mi.paths)
    done = 0
    with ctx.progress(len(mi.paths), "recon") as advance:
        for groups, failures in transforms.prepared_batches(mi.paths, mi.steps, batch_size, ctx.max_pixels):
            for path, message in failures:
                ctx.skip(path, message)
                advance()
            for group in groups:
                batch = transforms.to_tensor([s for _, _, s in group], mi.mean, mi.std, mi.rgb).to(ctx.device)
                h, w = batch.shape[2:]
                if h % p or w % p:
                    raise VisctlError(f"the pipeline gives {h}x{w} images, not a multiple of the patch size {p}",
                                      hint="resize to a multiple of the patch size in test_pipeline")
                grid = (h // p, w // p)
                if mask_file is not None:
                    mask = masked.mask_from_file(mask_file, grid).expand(len(group), -1)
                elif use_vis_pipeline:
                    mask = masked.masks_from_pipeline([s for _, _, s in group], grid)
                else:
                    mask = masked.masks_for(len(group), grid, ratio, seed, done)
                mask = mask.to(ctx.device)
                if kind == "maskfeat":
                    res = masked.hog_prediction(model, batch, mask)
                    base = masked.reconstruct_inputs(batch, mask, mi.mean, mi.std, mi.rgb, p)
                else:
                    res = masked.reconstruct(model, batch, mask, mi.mean, mi.std, mi.rgb, norm_pix)
                for i, (path, _img, _state) in enumerate(group):
                    mse = float(res["mse"][i])
                    share = float(mask[i].float().mean())
                    u8 = masked.to_uint8
                    if kind == "maskfeat":
                        cell = model.hog.cell  # pixels per HOG cell
                        target_hog = masked.hog_picture(res["hog_original"][i], cell)
                        predicted = ("predicted HOG (masked patches)",
                                     masked.hog_picture(res["hog_predicted"][i], cell))
                        if target_generator:  # mmselfsup: the target generator's output is the "original"
                            panels = [("target: HOG of the original", target_hog),
                                      (f"masked {share:.0%}", u8(base["masked"][i])), predicted]
                        else:
                            panels = [("original", u8(base["original"][i])),
                                      (f"masked {share:.0%}", u8(base["masked"][i])),
                                      ("HOG of the original", target_hog), predicted]
                        title = f"{path.name} | MaskFeat | masked-patch HOG MSE {mse:.4f}"
                    else:
                        panels = [("original", u8(res["original"][i])), (f"masked {share:.0%}", u8(res["masked"][i])),
                                  ("reconstruction", u8(res["reconstruction"][i])),
                                  ("reconstruction + visible", u8(res["pasted"][i]))]
                        title = (f"{path.name} | {kind.upper()} | masked-patch MSE {mse:.4f} "
                                 f"(mean fill {float(res['mean_fill_mse'][i]):.4f})")
                    side = max(256, max(panels[0][1].shape[:2]))
                    figure = render.grid([render.caption(render.fit(img, side), text) for text, img in panels],
                                         cols=len(panels))
                    writer.save_image(f"{stems[path]}_recon_{kind}.png", render.caption(figure, title),
                                      target=out_file, caption=title, input=str(path), masked_patch_mse=round(mse, 6))
                    if save_raw:
                        key = "hog_predicted" if kind == "maskfeat" else "reconstruction"
                        writer.save_array(f"{stems[path]}_recon_{kind}.npy", np.asarray(res[key][i], np.float32),
                                          caption=key, input=str(path))
                    writer.add_input(path, masked_patch_mse=round(mse, 6), masked_share=round(share, 4),
                                     mean_fill_mse=None if kind == "maskfeat" else round(float(res["mean_fill_mse"][i]), 6))
                    advance()
                done += len(group)
    ctx.finish()
