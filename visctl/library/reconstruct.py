"""``visctl.recon``: what a masked-image model (MAE, SimMIM, MaskFeat) rebuilds of each image, and what
a token-target one (BEiT v1/v2, CAE) predicts of it.

Per image: the patch mask, the original and masked input, the reconstruction (pixels; MaskFeat: HOG cells),
the MSE over the masked patches, and the figure the CLI's ``recon`` writes, under the same file name. BEiT and
CAE predict visual tokens that no decoder turns into pixels: per masked patch, whether the top-1 token is the
target generator's and the target token's cross-entropy; per image their top-1 accuracy and mean.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.library._common import ModelInputs
from visctl.library._run import Run, Since, mark
from visctl.options import ReconOptions
from visctl.results import Figure, Result
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.output.writer import OutputWriter

KINDS = ("mae", "simmim", "maskfeat", "beit", "cae")
TOKEN_KINDS = ("beit", "cae")  # predict visual tokens (visctl.openmmlab_mim.TokenAdapter), no pixels


@dataclass(frozen=True)
class ReconImage:
    """One image's reconstruction. Pixel images are float32 (H, W, 3) RGB in 0-1 at the model's input size.

    ``reconstruction`` is the predicted image (MAE/SimMIM) or the predicted HOG cells (MaskFeat, (3, O, h, w)),
    ``target`` MaskFeat's HOG of the original (None otherwise); ``mask`` is the (rows, cols) patch grid,
    True = masked. BEiT / CAE (``kind`` in :data:`TOKEN_KINDS`): ``reconstruction`` is the top-1 predicted token
    per patch (rows, cols; -1 where visible), ``target`` the target generator's token per patch,
    ``cross_entropy_map`` the target token's cross-entropy per masked patch (NaN where visible), ``mse`` None, and
    ``accuracy`` (``correct`` of ``count`` masked patches) and ``cross_entropy`` (their mean) the image's numbers.
    """

    source: Any  # the input as read: a Path, or an ArrayImage for pixels passed in
    stem: str  # the stem of its output files
    kind: str
    mask: np.ndarray = field(repr=False)
    original: np.ndarray = field(repr=False)
    masked: np.ndarray = field(repr=False)
    reconstruction: np.ndarray = field(repr=False)
    pasted: np.ndarray | None = field(repr=False)  # reconstruction with the visible patches pasted back
    target: np.ndarray | None = field(repr=False)  # MaskFeat: the HOG cells of the original
    mse: float | None  # over the masked patches (MaskFeat: of the HOG); None for token predictions
    mean_fill_mse: float | None  # the baseline: masked pixels filled with the image's mean colour
    masked_share: float
    figure: Figure = field(repr=False)
    accuracy: float | None = None  # BEiT / CAE: masked-token top-1 accuracy
    cross_entropy: float | None = None  # BEiT / CAE: the masked tokens' mean cross-entropy
    correct: int | None = None
    count: int | None = None
    cross_entropy_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        """The input it came from, as the manifest names it: a file's path, or the name given to pixels."""
        return str(self.source)

    @property
    def raw_name(self) -> str:
        """The ``--save-raw`` file: the reconstruction (MaskFeat: the predicted HOG; BEiT / CAE: per patch the
        target token, the top-1 token, its cross-entropy) as float32 .npy."""
        return f"{self.stem}_recon_{self.kind}.npy"

    def input_entry(self) -> dict[str, Any]:
        """This image's entry in the manifest's ``inputs``."""
        if self.kind in TOKEN_KINDS:
            # None: no patch masked (the mean of an empty set is no number)
            return dict(path=str(self.path), masked_token_accuracy=_round(self.accuracy),
                        masked_token_cross_entropy=_round(self.cross_entropy), masked_tokens_correct=self.correct,
                        masked_tokens=self.count, masked_share=round(self.masked_share, 4))
        return dict(path=str(self.path), masked_patch_mse=_round(self.mse), masked_share=round(self.masked_share, 4),
                    mean_fill_mse=_round(self.mean_fill_mse))

    def write(self, writer: OutputWriter, save_raw: bool = False, target: Path | None = None) -> None:
        """The figure (to ``target`` when given: ``--out-file``) and, with ``save_raw``, the raw array."""
        import numpy as np

        fig = self.figure
        writer.save_image(fig.name, fig.image, target=target, caption=fig.caption, **fig.info)
        if save_raw:
            key = "hog_predicted" if self.kind == "maskfeat" else "reconstruction"
            raw = np.asarray(self.reconstruction, np.float32)
            if self.kind in TOKEN_KINDS:  # (3, rows, cols)
                key = "target_token, top1_token (-1: visible), cross_entropy (NaN: visible)"
                raw = np.stack([np.asarray(self.target, np.float32), raw,
                                np.asarray(self.cross_entropy_map, np.float32)])
            writer.save_array(self.raw_name, raw, caption=key, input=str(self.path))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class ReconResult(Result):
    """What :func:`recon` returns: one :class:`ReconImage` per readable input, in input order."""

    command: ClassVar[str] = "recon"

    images: tuple[ReconImage, ...] = ()
    kind: str = ""
    save_raw: bool = False

    @property
    def items(self) -> tuple[ReconImage, ...]:
        """The images (:attr:`images`), as the result's sequence."""
        return self.images

    @property
    def mse(self) -> list[float | None]:
        """Each image's masked-patch MSE (None for token predictions: see ``cross_entropy``)."""
        return [im.mse for im in self.images]

    @property
    def cross_entropy(self) -> list[float | None]:
        """BEiT / CAE: each image's mean cross-entropy of the masked patches' target tokens."""
        return [im.cross_entropy for im in self.images]

    @property
    def accuracy(self) -> list[float | None]:
        """BEiT / CAE: each image's masked-token top-1 accuracy."""
        return [im.accuracy for im in self.images]

    def figures(self) -> list[Figure]:
        return [im.figure for im in self.images]

    def write(self, writer: OutputWriter) -> None:
        for im in self.images:
            im.write(writer, self.save_raw)

    def __repr__(self) -> str:
        if self.kind in TOKEN_KINDS:
            ce = ", ".join(f"{m:.4f}" for m in self.cross_entropy[:8] if m is not None)
            return (f"ReconResult(kind={self.kind!r}, images={len(self.images)}, masked_token_cross_entropy="
                    f"[{ce}{', ...' if len(self.images) > 8 else ''}], failures={len(self.failures)})")
        mse = ", ".join(f"{m:.4f}" for m in self.mse[:8] if m is not None) + (", ..." if len(self.images) > 8 else "")
        return (f"ReconResult(kind={self.kind!r}, images={len(self.images)}, masked_patch_mse=[{mse}], "
                f"failures={len(self.failures)})")


def check_options(settings: ReconOptions) -> None:
    """No two mask sources: a mask file decides every patch, so a mask ratio or the pipeline's masks beside it
    would be silently ignored (the numbers' ranges are the options object's)."""
    from visctl.errors import ArgumentError

    o = settings
    if o.mask_file is not None:
        given = [f for f, on in (("mask_ratio=", o.mask_ratio is not None), ("use_vis_pipeline=", o.use_vis_pipeline))
                 if on]
        if given:
            raise ArgumentError(f"mask_file= and {' and '.join(given)} both choose the masked patches",
                                hint="give one of them: the mask file decides every patch")


def plan(session: Session, mi: ModelInputs, settings: ReconOptions, *, out_file: Path | None = None) -> ReconRun:
    """Check the options (:func:`check_options`, which the callers also run before the model loads) and that the
    model is a masked-image model, and settle the mask ratio, norm-pix and the run's parameters (``out_file``: the
    CLI's ``--out-file``, where the one image's figure goes).

    An mmpretrain MAE / SimMIM / MaskFeat model (from its own pretraining config) runs through an adapter
    (:mod:`visctl.openmmlab_mim`): its own code draws the masks and predicts; without a test pipeline in the
    config the images are resized as mmselfsup's visualize_reconstruction.py resizes them. So does a BEiT (v1,
    v2) or CAE model, whose token predictions are drawn instead of a reconstruction.
    """
    from visctl import config
    from visctl.choices import NormPixStats
    from visctl.errors import VisctlError

    o, since = settings, mark(session)
    check_options(o)
    model = mi.model
    if getattr(model, "kind", None) not in KINDS and type(model).__module__.startswith("mmpretrain."):
        from visctl.openmmlab_mim import adapt

        adapter = adapt(model, mi.cfg)
        if adapter is not None:
            model = mi.model = adapter
            if not config.test_pipeline(mi.cfg):
                mi.steps = adapter.default_pipeline()
    kind = getattr(model, "kind", None)
    if kind not in KINDS:
        raise VisctlError(f"{type(model).__name__} is not a masked-image model visctl knows",
                          hint="use visctl.mim_models:mae_vit, simmim_vit or maskfeat_vit (or a model with "
                          "kind, patch_size and forward(images, mask))")
    if kind in TOKEN_KINDS and not all(hasattr(model, a) for a in ("target_images", "target_tokens", "masked_logits")):
        raise VisctlError(f"{type(model).__name__} says kind={kind!r} without target_images, target_tokens and "
                          "masked_logits", hint="build the model from mmpretrain's beit/, beitv2/ or cae/ pretraining "
                          "config (visctl adapts it)")
    notes = []
    for note in getattr(model, "notes", lambda: [])():  # the adapter's (an uninitialised VQ-KD codebook)
        notes.append(note)
        session.warn(note)
    if o.target_generator and kind in TOKEN_KINDS:
        notes.append(f"target_generator= does not apply to {model.version}: its target, the {model.tokenizer} "
                     "tokens, is no picture; the figure compares each masked patch's prediction with it")
        session.warn(notes[-1])
    elif o.target_generator and kind != "maskfeat":
        notes.append(f"target_generator= does not apply to {kind.upper()}: its target is the image's pixels, "
                     "already the first panel (MaskFeat's is the HOG)")
        session.warn(notes[-1])
    ratio = o.mask_ratio if o.mask_ratio is not None else float(getattr(model, "mask_ratio", 0.75))
    if o.mask_file is not None and kind in KINDS and getattr(model, "patch_size", None):
        # the mask file decides every patch: the ratio is its share of the first image's patch grid, not the
        # model's default (the file is read here too: a wrong one fails before any image runs)
        from visctl import masked

        patch = int(model.patch_size)
        grid = (max(1, int(mi.example.shape[2]) // patch), max(1, int(mi.example.shape[3]) // patch))
        try:
            ratio = float(masked.mask_from_file(o.mask_file, grid, session.max_pixels).float().mean())
        except VisctlError:  # the first image's grid is not the run's (a pipeline set after it): the file's own
            from visctl.images import read_mask

            ratio = float((read_mask(o.mask_file, session.max_pixels) != 0).mean())
    norm_pix = o.norm_pix
    if norm_pix and kind in TOKEN_KINDS:
        notes.append(f"norm_pix=True does not apply to {model.version}: it predicts tokens, not pixels")
        session.warn(notes[-1])
        norm_pix = False
    norm_pix = norm_pix or bool(getattr(model, "norm_pix_loss", False))
    stats = o.norm_pix_stats.value
    if not norm_pix and o.norm_pix_stats is not NormPixStats.patch:
        notes.append(f"norm_pix_stats={stats!r} has no effect: it says where norm_pix=True takes each patch's "
                     "mean and std, and this run does not un-normalise (no norm_pix=True, and the model's "
                     "norm_pix_loss is off)")
        session.warn(notes[-1])
    params = dict(inputs=[str(x) for x in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint, model=kind,
                  mask_ratio=ratio, mask_file=str(o.mask_file) if o.mask_file else None,
                  use_vis_pipeline=o.use_vis_pipeline, norm_pix=norm_pix, seed=o.seed,
                  target_generator=o.target_generator, device=session.device)
    if norm_pix:
        params["norm_pix_stats"] = stats
        if o.norm_pix_stats is NormPixStats.patch:
            notes.append("norm-pix: each masked patch is un-normalised with its own mean and std, taken from the "
                         "pixels the model did not see (as visualize_reconstruction.py --norm-pix); "
                         "norm_pix_stats='visible' draws what the model alone predicts")
            session.log(notes[-1])
    return ReconRun(session, mi, o, kind, ratio, norm_pix, params, notes, out_file, since)


class ReconRun(Run):
    """A recon run on a loaded masked-image model: the images reconstructed batch by batch (:meth:`items`), each
    written as it is done (its figure, ``--save-raw``'s array, its manifest entry)."""

    command: ClassVar[str] = "recon"

    def __init__(self, session: Session, mi: ModelInputs, settings: ReconOptions, kind: str, mask_ratio: float,
                 norm_pix: bool, params: dict[str, Any], notes: list[str], out_file: Path | None,
                 since: Since = (0, 0, 0.0)) -> None:
        self.session, self.mi, self.settings, self.kind = session, mi, settings, kind
        self.mask_ratio, self.norm_pix = mask_ratio, norm_pix  # as settled on the model (its defaults)
        self.params, self.notes, self.out_file, self.since = params, tuple(notes), out_file, since

    def items(self) -> Iterator[ReconImage]:
        """Reconstruct the images batch by batch, yielding each image as it is done (skips go through
        ``session.skip``)."""
        return _iter_images(self)

    def record(self, writer: OutputWriter, item: ReconImage) -> None:
        item.write(writer, self.settings.save_raw, target=self.out_file)
        entry = item.input_entry()
        writer.add_input(entry.pop("path"), **entry)

    def merge_ranks(self, writer: OutputWriter) -> None:
        """Under torchrun: every rank's records, on every rank."""
        if self.session.world > 1:
            from visctl import distributed

            distributed.merge_records(writer, self.mi.paths, self.settings.batch_size)

    def collect(self) -> ReconResult:
        done = list(self.items())
        return ReconResult(**self.gathered(), inputs=tuple(d.input_entry() for d in done), images=tuple(done),
                               kind=self.kind, save_raw=self.settings.save_raw)


def _iter_images(run: ReconRun) -> Iterator[ReconImage]:
    """:meth:`ReconRun.items`."""
    import torch

    from visctl import masked
    from visctl.errors import VisctlError
    from visctl.library._common import batches
    from visctl.output.writer import input_stems

    session, o = run.session, run.settings
    mi, kind, model = run.mi, run.kind, run.mi.model
    patch = model.patch_size
    stems = dict(zip(mi.paths, input_stems(mi.paths).values()))
    position = {path: k for k, path in enumerate(mi.paths)}
    for b in batches(session, mi, o.batch_size, "recon"):
        batch = b.tensor
        h, w = batch.shape[2:]
        if h % patch or w % patch:
            raise VisctlError(f"the pipeline gives {h}x{w} images, not a multiple of the patch size {patch}",
                              hint="resize to a multiple of the patch size in test_pipeline")
        grid = (h // patch, w // patch)
        group = b.items
        own_masks = getattr(model, "generate_masks", None)  # the model's own mask source (visctl.openmmlab_mim)
        if o.mask_file is not None:
            mask = masked.mask_from_file(o.mask_file, grid, session.max_pixels).expand(len(group), -1)
        elif own_masks is not None:  # image k of the input list: the mask drawn after seeding with seed + k
            seeds = None if o.seed is None else [o.seed + position[path] for path, _, _ in group]
            mask = own_masks(len(group), grid, run.mask_ratio, seeds)
        elif o.use_vis_pipeline:
            mask = masked.masks_from_pipeline([s for _, _, s in group], grid)
        elif o.seed is None:
            mask = masked.masks_for(len(group), grid, run.mask_ratio, None)
        else:  # image k of the input list gets mask k, whichever images before it were unreadable (or sharded)
            mask = torch.cat([masked.masks_for(1, grid, run.mask_ratio, o.seed, position[path])
                              for path, _, _ in group])
        mask = mask.to(session.device)
        if kind in TOKEN_KINDS:
            res = masked.token_prediction(model, batch, mask, [s.img for _, _, s in group], mi.rgb)
            res.update(masked.reconstruct_inputs(batch, mask, mi.mean, mi.std, mi.rgb, patch))
        elif kind == "maskfeat":
            res = masked.hog_prediction(model, batch, mask)
            res.update(masked.reconstruct_inputs(batch, mask, mi.mean, mi.std, mi.rgb, patch))
        else:
            res = masked.reconstruct(model, batch, mask, mi.mean, mi.std, mi.rgb, run.norm_pix,
                                     o.norm_pix_stats.value)
        mask_np = mask.cpu().numpy().reshape(len(group), *grid)
        for i, (path, _img, _state) in enumerate(group):
            yield _image(run, res, i, path, stems[path], mask_np[i])
            b.advance()


def _image(p: ReconRun, res: dict[str, Any], i: int, path: Any, stem: str, mask: np.ndarray) -> ReconImage:
    """One image's record and figure (the one place the figure is drawn and named)."""
    import numpy as np

    from visctl import masked, render

    kind, u8 = p.kind, masked.to_uint8
    if kind in TOKEN_KINDS:
        return _token_image(p, res, i, path, stem, mask)
    share = float(mask.mean())
    # no patch masked: no masked-patch error to give (the mean of an empty set), said so, not 0
    mse = float(res["mse"][i]) if mask.any() else None
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    if kind == "maskfeat":
        hog = p.mi.model.hog
        angles = getattr(hog, "gradient_angles", None)  # mmpretrain's HOGGenerator bins its own way
        target_hog = masked.hog_picture(res["hog_original"][i], hog.cell, gradient_angles=angles)
        predicted = ("predicted HOG (masked patches)",
                     masked.hog_picture(res["hog_predicted"][i], hog.cell, gradient_angles=angles))
        if p.settings.target_generator:  # mmselfsup: the target generator's output is the "original"
            panels = [("target: HOG of the original", target_hog), (f"masked {share:.0%}", u8(res["masked"][i])),
                      predicted]
        else:
            panels = [("original", u8(res["original"][i])), (f"masked {share:.0%}", u8(res["masked"][i])),
                      ("HOG of the original", target_hog), predicted]
        title = f"{path.name} | MaskFeat | " + ("no patch masked: no masked-patch HOG MSE" if mse is None
                                                 else f"masked-patch HOG MSE {mse:.4f}")
        fill = None
    else:
        panels = [("original", u8(res["original"][i])), (f"masked {share:.0%}", u8(res["masked"][i])),
                  ("reconstruction", u8(res["reconstruction"][i])),
                  ("reconstruction + visible", u8(res["pasted"][i]))]
        fill = None if mse is None else float(res["mean_fill_mse"][i])
        title = f"{path.name} | {kind.upper()} | " + ("no patch masked: no masked-patch MSE" if mse is None or
                                                      fill is None else
                                                      f"masked-patch MSE {mse:.4f} (mean fill {fill:.4f})")
    side = max(256, max(panels[0][1].shape[:2]))
    grid = render.grid([render.caption(render.fit(img, side), text) for text, img in panels], cols=len(panels))
    figure = Figure(f"{stem}_recon_{kind}.png", render.caption(grid, title), title,
                    dict(input=str(path), masked_patch_mse=_round(mse)))
    return ReconImage(source=path, stem=stem, kind=kind, mask=mask.astype(bool), original=f32(res["original"][i]),
                      masked=f32(res["masked"][i]),
                      reconstruction=f32(res["hog_predicted" if kind == "maskfeat" else "reconstruction"][i]),
                      pasted=f32(res["pasted"][i]) if "pasted" in res else None,
                      target=f32(res["hog_original"][i]) if kind == "maskfeat" else None,
                      mse=mse, mean_fill_mse=fill, masked_share=share, figure=figure)


def _token_image(p: ReconRun, res: dict[str, Any], i: int, path: Any, stem: str, mask: np.ndarray) -> ReconImage:
    """BEiT / CAE: original, masked input, per masked patch whether the top-1 token is the target (legend) and the
    target token's cross-entropy (colour bar from 0, certain, to ln(vocab), a uniform guess, and beyond)."""
    import math

    import numpy as np

    from visctl import masked, render

    u8, model = masked.to_uint8, p.mi.model
    share = float(mask.mean())
    grid = mask.shape
    correct, count = int(res["correct"][i]), int(res["count"][i])
    acc = correct / count if count else None  # no patch masked: no accuracy, no cross-entropy (not 0)
    ce = float(res["cross_entropy"][i]) if count else None
    original = u8(res["original"][i])
    h, w = original.shape[:2]
    predicted = res["predicted_tokens"][i].reshape(grid)
    target = res["target_tokens"][i].reshape(grid)
    ce_map = res["cross_entropy_map"][i].reshape(grid)

    def pixels(a: np.ndarray) -> np.ndarray:  # the patch grid at the image's size
        return np.repeat(np.repeat(a, h // grid[0], 0), w // grid[1], 1)

    hit = render.no_data(original).astype(np.float32)
    green, red = np.array([40, 170, 60], np.float32), np.array([215, 40, 40], np.float32)
    for m, color in ((pixels(mask & (predicted == target)), green), (pixels(mask & (predicted != target)), red)):
        hit[m] = 0.35 * original[m].astype(np.float32) + 0.65 * color
    hit_u8 = hit.round().astype(np.uint8)
    top = math.log(res["vocab"])
    heat = render.overlay(original, pixels(np.clip(ce_map / top, 0.0, 1.0)), alpha=0.65, colormap="turbo")
    side = max(256, h, w)
    g = int(render.no_data(np.full((1, 1, 3), 128, np.uint8))[0, 0, 0])
    grey = (g, g, g)
    hit_panel = np.vstack([render.fit(hit_u8, side), render.legend_strip(
        [((40, 170, 60), "top-1 token = target"), ((215, 40, 40), "top-1 token != target"),
         (grey, "visible: not predicted")], side)])
    heat_panel = np.vstack([render.fit(heat, side), render.colorbar_strip(
        side, "turbo", "0", f">= {top:.2f}", f"0: certain of the target; {top:.2f} = ln {res['vocab']}: a uniform "
        "guess over the vocabulary")])
    panels = [("original", render.fit(original, side)), (f"masked {share:.0%}", render.fit(u8(res["masked"][i]), side)),
              ("top-1 predicted token = target? (masked)", hit_panel),
              ("cross-entropy of the target token (masked)", heat_panel)]
    figure_grid = render.grid([render.caption(img, text) for text, img in panels], cols=len(panels))
    title = (f"{path.name} | {model.label} | no pixel decoder: token predictions | " + (
        "no patch masked: no masked-token accuracy" if acc is None or ce is None else
        f"masked-token top-1 accuracy {acc:.4f} ({correct}/{count}) | mean cross-entropy {ce:.4f}"))
    figure = Figure(f"{stem}_recon_{p.kind}.png", render.caption(figure_grid, title), title,
                    dict(input=str(path), masked_token_accuracy=_round(acc), masked_token_cross_entropy=_round(ce)))
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return ReconImage(source=path, stem=stem, kind=p.kind, mask=mask.astype(bool), original=f32(res["original"][i]),
                      masked=f32(res["masked"][i]), reconstruction=predicted.astype(np.int64), pasted=None,
                      target=target.astype(np.int64), mse=None, mean_fill_mse=None, masked_share=share,
                      figure=figure, accuracy=acc, cross_entropy=ce, correct=correct, count=count,
                      cross_entropy_map=f32(ce_map))


@arguments.typed("recon")
def recon(images: Any, model: Any, checkpoint: str | None = None, settings: ReconOptions | None = None, *,
          options: RunOptions | None = None, session: Session | None = None, **fields: Any) -> ReconResult:
    """Mask each image's patches and show what a MAE / SimMIM / MaskFeat model rebuilds (``visctl recon``), or
    what a BEiT (v1, v2) / CAE model predicts of them: per masked patch whether its top-1 token is the target
    generator's and the target token's cross-entropy (no pixel decoder exists for those tokens).

    Args:
        images: a path (file, folder, glob), a numpy RGB image, a PIL image, or a list of them.
        model: a config (path, dict, mmengine Config) of a masked-image model, or the nn.Module itself (with
            ``kind`` ``mae``/``simmim``/``maskfeat``, ``patch_size`` and ``forward(images, mask)``).
        checkpoint: weights [default: the config's ``load_from``].
        settings: a :class:`visctl.ReconOptions`; ``fields``, its fields as keywords, replace its values:
            ``mask_ratio`` (share of patches masked [default: the model's]; ``seed`` makes the masks repeatable),
            ``mask_file`` (a mask, .npy or image, patch grid or pixel size, nonzero = masked, for every image),
            ``use_vis_pipeline`` (the config pipeline's mask generator), ``norm_pix`` (the model predicts
            per-patch normalised pixels [default: the model's ``norm_pix_loss``]) with ``norm_pix_stats``
            (``patch``: each patch's own mean/std, the masked ones' from pixels the model did not see, as
            mmselfsup's visualize_reconstruction.py; ``visible``: the visible patches' only, what the model alone
            could draw), ``target_generator`` (MaskFeat: the HOG target as the first panel), ``save_raw``
            (``save()`` also writes each reconstruction as .npy, the CLI's ``--save-raw``).
        options: the shared options (device, threads, ...).
        session: a :class:`visctl.Session` to run in (its notes and failures gather the run's).

    Returns:
        :class:`ReconResult`: per image the mask, the images, the masked-patch MSE and the figure.
    """
    from visctl import images as imgs
    from visctl.library import _common

    o = ReconOptions.build(settings, **fields)
    arguments.model_spec(model)
    check_options(o)
    session = session or Session(options)
    since = mark(session)
    paths = imgs.as_images(images, note=session.note)
    session.protect(o.mask_file)
    mi = _common.open_model(session, model, checkpoint, paths)
    run = plan(session, mi, o)
    run.since = since  # the images found and the model's loading are this call's too
    return run.collect()


#: release 0.1's name of :class:`ReconResult` (it goes in the next release)
Reconstructions = ReconResult
