"""mmpretrain's own masked-image models (MAE, SimMIM, MaskFeat, BEiT v1/v2, CAE pretraining configs) in
``visctl recon``.

An adapter gives such a model visctl's recon protocol (``kind``, ``patch_size``, ``mask_ratio``,
``norm_pix_loss``, ``forward(images, mask)`` -> per-patch predictions) while the numbers come from the model's
own code: its backbone, neck and target generator run as in its ``loss()``, and a seeded mask is the one its
own mask source draws (MAE: the backbone's ``random_masking`` / ``masking_id`` after ``torch.manual_seed``;
SimMIM and MaskFeat: the config pipeline's ``SimMIMMaskGenerator`` / ``BEiTMaskGenerator``, its first draw
after ``np.random.seed``), the generators mmselfsup's ``tools/analysis_tools/visualize_reconstruction.py`` seeds.
(That script runs its pipeline twice, once for the picture and once in ``inference_model``, so for SimMIM and
MaskFeat its model may see the generator's second draw; for MAE the mask is torch's first draw either way.)
BEiT (v1, v2) and CAE predict their target generator's visual tokens (DALL-E, VQ-KD), which no decoder turns
back into pixels: :class:`TokenAdapter` gives the model's own targets and masked-patch logits, and visctl draws
per patch whether the top-1 token is the target and the target's cross-entropy, never a made-up picture.
Models that predict other features (EVA, MILAN: CLIP features, ...) are refused with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from visctl.errors import ModelError

if TYPE_CHECKING:
    import torch

# why the other masked-image families are refused, in mmpretrain 1.x's terms (models/selfsup/)
_NO_TOKENS = "not pixels: there is no picture of a reconstruction to draw"
_REFUSED = {
    "EVA": "predicts the CLIP features of the masked patches, " + _NO_TOKENS,
    "MILAN": "predicts the CLIP features of the masked patches, " + _NO_TOKENS,
    "iTPN": "predicts through a feature pyramid (pixels or CLIP features) that visctl has no adapter for yet",
    "MixMIM": "reconstructs two images mixed into one input, which visctl has no adapter for yet",
    "SparK": "reconstructs pixels through a sparse-convolution decoder that visctl has no adapter for yet",
}
_FAMILIES = ("MAE (ViT, HiViT; norm-pix or not), SimMIM and MaskFeat reconstructions, and BEiT (v1, v2) and CAE "
             "token predictions")


def _mm_class(name: str) -> Any:
    import mmpretrain.models.selfsup as selfsup

    return getattr(selfsup, name, None)


def adapt(model: Any, cfg: Any) -> Any:
    """An adapter for an mmpretrain self-supervised model (None for any other model).

    Raises:
        ModelError: the model is an mmpretrain self-supervised model with no pixel (or HOG) reconstruction.
    """
    if not type(model).__module__.startswith("mmpretrain."):
        return None
    base = _mm_class("BaseSelfSupervisor")
    if base is None or not isinstance(model, base):
        raise ModelError(f"{type(model).__name__} reconstructs nothing: it is not one of mmpretrain's masked-image "
                         "pretraining models",
                         hint=f"visctl recon draws {_FAMILIES}: use one of mmpretrain's mae/, simmim/, maskfeat/, "
                         "beit/, beitv2/ or cae/ pretraining configs")
    for name, cls in (("MAE", MaskedAutoencoder), ("SimMIM", SimMIMAdapter), ("MaskFeat", MaskFeatAdapter),
                      ("BEiT", TokenAdapter), ("CAE", TokenAdapter)):
        family = _mm_class(name)
        if family is not None and isinstance(model, family):
            return cls(model, cfg)
    name = type(model).__name__
    why = next((w for k, w in _REFUSED.items() if _mm_class(k) and isinstance(model, _mm_class(k))), None)
    if why is not None:
        raise ModelError(f"{name} {why}",
                         hint=f"visctl recon draws {_FAMILIES}; look at this model's features with visctl "
                         "featmap or visctl tsne")
    raise ModelError(f"{name} is not a masked-image model: it reconstructs nothing (a contrastive or clustering "
                     "self-supervised model)",
                     hint=f"visctl recon draws {_FAMILIES}; visctl tsne --vis-stage neck embeds this model's features")


def _device(module: Any) -> Any:
    import torch

    for p in module.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def _torch_seeded(seed: int | None, device: Any) -> Iterator[None]:
    """``torch.manual_seed(seed)`` inside, torch's generators as they were afterwards (no global effect)."""
    import torch

    if seed is None:
        yield
        return
    devices = []
    if getattr(device, "type", "cpu") == "cuda":  # the model draws its mask on its own device's generator
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    from visctl.generators import generator_lock

    # the reader threads seed and restore the same global generators for the pipeline's random steps
    with generator_lock(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _numpy_seeded(seed: int | None) -> Iterator[None]:
    """``np.random.seed(seed)`` inside (the legacy generator the OpenMMLab mask generators draw from), its state
    as it was afterwards."""
    import numpy as np

    if seed is None:
        yield
        return
    from visctl.generators import generator_lock

    with generator_lock():  # the reader threads seed and restore numpy's global generator too
        state = np.random.get_state()
        try:
            np.random.seed(seed)
            yield
        finally:
            np.random.set_state(state)


def _pipeline_step(cfg: Any, names: tuple[str, ...]) -> dict | None:
    """The first step of one of ``names`` in the config's pipelines (mmselfsup's vis_pipeline first)."""
    from visctl.config import cfg_get

    for key in ("vis_pipeline", "test_dataloader.dataset.pipeline", "train_dataloader.dataset.pipeline",
                "train_pipeline"):
        for step in cfg_get(cfg, key) or []:
            if isinstance(step, dict) and str(step.get("type", "")).split(".")[-1] in names:
                return dict(step)
    return None


class _Adapter:
    """What the three families share: the wrapped model, its input size, seeded masks per image."""

    kind = ""
    patch_size = 16
    mask_ratio = 0.75
    norm_pix_loss = False

    def __init__(self, model: Any, cfg: Any) -> None:
        self.model = model
        self.cfg = cfg

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) the backbone was built for (its position embedding or its mask generator fix it)."""
        bb = self.model.backbone
        size: Any = getattr(getattr(bb, "patch_embed", None), "init_input_size", None)
        if size is None:
            size = getattr(bb, "img_size", 224)
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def default_pipeline(self) -> list[dict]:
        """visualize_reconstruction.py's pipeline without ``--use-vis-pipeline``: ``Resize(scale, backend='pillow')``
        to the model's input size (the script writes 224, the size of its MAE)."""
        h, w = self.input_size
        return [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(w, h), backend="pillow")]

    def check_grid(self, hw: tuple[int, int]) -> None:
        if tuple(hw) != self.input_size:
            h, w = self.input_size
            raise ModelError(f"{type(self.model).__name__} takes {h}x{w} inputs (its position embedding and mask "
                             f"grid are built for them); the pipeline gives {hw[0]}x{hw[1]}",
                             hint=f"resize to {h}x{w} in the config's test pipeline, or leave it out (visctl "
                             "then resizes as visualize_reconstruction.py does)")

    def generate_masks(self, n: int, grid: tuple[int, int], ratio: float, seeds: list[int] | None) -> torch.Tensor:
        """(n, gh * gw) bool, True = masked: image k's mask as the model's own mask source draws it after
        seeding with ``seeds[k]`` (unseeded draws when ``seeds`` is None)."""
        import torch

        rows = [self._one_mask(grid, ratio, None if seeds is None else seeds[k]) for k in range(n)]
        return torch.stack(rows).reshape(n, -1).bool()

    def _one_mask(self, grid: tuple[int, int], ratio: float, seed: int | None) -> torch.Tensor:
        raise NotImplementedError


class MaskedAutoencoder(_Adapter):
    """mmpretrain's ``MAE`` (``MAEViT`` or ``MAEHiViT`` backbone, ``MAEPretrainDecoder`` neck,
    ``MAEPretrainHead``): predictions for every patch in ``MAEPretrainHead.patchify``'s layout, which is
    visctl's (``nchpwq->nhwpqc``)."""

    kind = "mae"

    def __init__(self, model: Any, cfg: Any) -> None:
        super().__init__(model, cfg)
        bb, head = model.backbone, model.head
        if not (hasattr(bb, "random_masking") or hasattr(bb, "masking_id")):
            raise ModelError(f"{type(bb).__name__} has neither random_masking nor masking_id: not an MAE backbone "
                             "visctl can hand a mask to", hint=f"visctl recon draws {_FAMILIES}")
        self.patch_size = int(getattr(head, "patch_size", 16))
        self.mask_ratio = float(getattr(bb, "mask_ratio", 0.75))
        self.norm_pix_loss = bool(getattr(head, "norm_pix", False))

    def _one_mask(self, grid: tuple[int, int], ratio: float, seed: int | None) -> torch.Tensor:
        import torch

        bb = self.model.backbone
        device = _device(bb)
        with torch.no_grad(), _torch_seeded(seed, device):
            if hasattr(bb, "random_masking"):  # MAEViT: noise = torch.rand(N, L) is the first draw of its forward
                _, mask, _ = bb.random_masking(torch.zeros(1, grid[0] * grid[1], 1, device=device), ratio)
            else:  # MAEHiViT: masking_id(batch_size, mask_ratio)
                _, _, mask = bb.masking_id(1, ratio)
        return mask[0].reshape(grid).cpu()

    @contextlib.contextmanager
    def _given(self, mask: torch.Tensor) -> Iterator[None]:
        """The backbone masks exactly ``mask`` (N, L) instead of drawing one; the kept patches in ascending order."""
        import torch

        bb = self.model.backbone
        ids_shuffle = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible first, each in order
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        keep = int((~mask[0]).sum())
        ids_keep = ids_shuffle[:, :keep]

        def random_masking(x: torch.Tensor, mask_ratio: float = 0.75) -> tuple:
            d = x.shape[-1]
            return torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, d)), mask.to(x.dtype), ids_restore

        def masking_id(batch_size: int, mask_ratio: float) -> tuple:
            return ids_keep, ids_restore, mask.to(bb.pos_embed.dtype)

        name, fn = ("random_masking", random_masking) if hasattr(bb, "random_masking") else ("masking_id", masking_id)
        setattr(bb, name, fn)  # an instance attribute shadows the class's method for this forward only
        try:
            yield
        finally:
            delattr(bb, name)

    def __call__(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L, p * p * 3): ``neck(*backbone(x))`` as ``MAE.loss`` runs them, for the given mask."""
        self.check_grid((int(imgs.shape[2]), int(imgs.shape[3])))
        if len({int(c) for c in mask.sum(1)}) > 1:
            raise ModelError("MAE needs the same number of masked patches in every image of a batch",
                             hint="use one mask (mask_file=) or the model's own masks (seed=)")
        with self._given(mask):
            out = self.model.backbone(imgs)
        latent, ids_restore = out[0], out[2]
        return self.model.neck(latent, ids_restore)


def _generator(cfg: Any, names: tuple[str, ...], default: dict) -> Any:
    """The config pipeline's mask generator, built by mmpretrain's TRANSFORMS registry."""
    from mmpretrain.registry import TRANSFORMS

    step = _pipeline_step(cfg, names) or default
    step = {k: v for k, v in step.items() if k != "type"}
    return TRANSFORMS.get(default["type"])(**step)


class SimMIMAdapter(_Adapter):
    """mmpretrain's ``SimMIM`` (``SimMIMSwinTransformer`` + ``SimMIMLinearDecoder``): the decoder's image,
    cut into the model's patches (``head.patch_size``, the grid the mask lives on)."""

    kind = "simmim"

    def __init__(self, model: Any, cfg: Any) -> None:
        super().__init__(model, cfg)
        self.patch_size = int(getattr(model.head, "patch_size", 4))
        h, w = self.input_size
        self.generator = _generator(cfg, ("SimMIMMaskGenerator",), dict(
            type="SimMIMMaskGenerator", input_size=h, mask_patch_size=32, model_patch_size=self.patch_size,
            mask_ratio=0.6))
        self.mask_ratio = float(self.generator.mask_ratio)

    def _one_mask(self, grid: tuple[int, int], ratio: float, seed: int | None) -> torch.Tensor:
        import copy

        import numpy as np
        import torch

        gen = copy.copy(self.generator)
        if ratio != gen.mask_ratio:
            gen.mask_ratio = ratio
            gen.mask_count = int(np.ceil(gen.token_count * ratio))
        with _numpy_seeded(seed):
            mask = gen.transform({})["mask"]
        if tuple(mask.shape) != tuple(grid):
            raise ModelError(f"the config's SimMIMMaskGenerator makes a {mask.shape[0]}x{mask.shape[1]} mask, and "
                             f"the model's patch grid is {grid[0]}x{grid[1]}",
                             hint="set the generator's input_size and model_patch_size to the model's")
        return torch.from_numpy(np.asarray(mask))

    def __call__(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L, p * p * 3): ``neck(backbone(x, mask)[0])`` as ``SimMIM.loss`` runs them, patchified."""
        from visctl.mim_models import patchify

        self.check_grid((int(imgs.shape[2]), int(imgs.shape[3])))
        gh, gw = imgs.shape[2] // self.patch_size, imgs.shape[3] // self.patch_size
        latent = self.model.backbone(imgs, mask.reshape(-1, gh, gw).to(imgs.dtype))
        return patchify(self.model.neck(latent[0]), self.patch_size)


class _HOGView:
    """MaskFeat's ``HOGGenerator`` seen as visctl's HOG: ``cell`` px per cell, ``orientations`` bins, and
    per-patch vectors in visctl's layout (k, k, 3, O) instead of mmpretrain's (3 * O, k, k)."""

    def __init__(self, generator: Any, patch: int) -> None:
        self.generator = generator
        self.cell = int(generator.pool)
        self.orientations = int(generator.nbins)
        self.k = patch // self.cell

    @property
    def gradient_angles(self) -> list[float]:
        """The gradient direction (x right, y down) at each bin's centre. ``HOGGenerator`` correlates with
        ``[[1, 0, -1], ...]`` (minus the derivative) and bins ``atan2(gx, gy)`` modulo pi, the angle from the y
        axis: bin b holds gradients at pi / 2 - (b + 0.5) * pi / nbins."""
        import math

        return [math.pi / 2 - (b + 0.5) * math.pi / self.orientations for b in range(self.orientations)]

    def to_visctl(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        k, o = self.k, self.orientations
        return x.reshape(n, length, 3, o, k, k).permute(0, 1, 4, 5, 2, 3).reshape(n, length, -1)

    def __call__(self, imgs: torch.Tensor, patch: int) -> torch.Tensor:
        return self.to_visctl(self.generator(imgs))


class _BlockMasked(_Adapter):
    """Models whose pipeline draws BEiT's block-wise masks (``BEiTMaskGenerator``): MaskFeat, BEiT, CAE."""

    generator: Any = None

    def _block_masks(self, count: int, min_patches: int) -> None:
        """The config pipeline's ``BEiTMaskGenerator`` (else one masking ``count`` patches)."""
        h, w = self.input_size
        grid = (h // self.patch_size, w // self.patch_size)
        self.generator = _generator(self.cfg, ("BEiTMaskGenerator",), dict(
            type="BEiTMaskGenerator", input_size=grid, num_masking_patches=count, min_num_patches=min_patches))
        self.mask_ratio = self.generator.num_masking_patches / (grid[0] * grid[1])

    def _one_mask(self, grid: tuple[int, int], ratio: float, seed: int | None) -> torch.Tensor:
        import copy

        import numpy as np
        import torch

        gen = copy.copy(self.generator)
        count = int(round(ratio * grid[0] * grid[1]))
        if count != gen.num_masking_patches:
            gen.num_masking_patches = count
        with _numpy_seeded(seed):
            mask = gen.transform({})["mask"]
        if tuple(mask.shape) != tuple(grid):
            raise ModelError(f"the config's BEiTMaskGenerator makes a {mask.shape[0]}x{mask.shape[1]} mask, and "
                             f"the model's patch grid is {grid[0]}x{grid[1]}",
                             hint="set the generator's input_size to the model's patch grid")
        return torch.from_numpy(np.asarray(mask))


class MaskFeatAdapter(_BlockMasked):
    """mmpretrain's ``MaskFeat`` (``MaskFeatViT`` + ``LinearNeck``, ``HOGGenerator`` target): predicted HOG per
    patch without the class token, as ``MaskFeat.loss`` computes it."""

    kind = "maskfeat"

    def __init__(self, model: Any, cfg: Any) -> None:
        super().__init__(model, cfg)
        proj = model.backbone.patch_embed.projection
        self.patch_size = int(proj.stride[0])
        self._block_masks(78, 15)
        self.hog = _HOGView(model.target_generator, self.patch_size)

    def __call__(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L, k * k * 3 * O) in visctl's layout (the target's histograms are L2-normalised per cell and
        channel, by ``HOGGenerator``)."""
        self.check_grid((int(imgs.shape[2]), int(imgs.shape[3])))
        latent = self.model.backbone(imgs, mask.bool())  # (N, 1 + L, C): the class token first
        n, length, c = latent.shape
        pred = self.model.neck((latent.reshape(n * length, c),))[0].reshape(n, length, -1)
        return self.hog.to_visctl(pred[:, 1:])


class TokenAdapter(_BlockMasked):
    """mmpretrain's ``BEiT`` (v1: DALL-E target, ``BEiTV1Head``; v2: VQ-KD target, ``BEiTV2Neck`` +
    ``BEiTV2Head``) and ``CAE`` (DALL-E target, ``CAENeck``): models that predict the target generator's visual
    token of each masked patch, with no decoder back to pixels.

    Everything comes from the model's own code as its ``loss()`` runs it: the block mask of the config
    pipeline's ``BEiTMaskGenerator``, the target image the pipeline's ``RandomResizedCropAndInterpolationWithTwoPic``
    makes (its ``second_size`` and ``second_interpolation``, from the picture the model sees) normalised with the
    ``TwoNormDataPreprocessor``'s ``second_mean`` / ``second_std``, the target tokens of ``target_generator``
    (DALL-E: the argmax of its logits, as ``BEiTV1Head`` / ``CAEHead`` take it; VQ-KD: its token ids) and the
    logits of the masked patches (BEiT v2: the last layer's, ``loss_1``; CAE: the decoder's, ``loss_main``).
    """

    kind = "beit"

    def __init__(self, model: Any, cfg: Any) -> None:
        super().__init__(model, cfg)
        self.family = type(model).__name__
        tg = getattr(model, "target_generator", None)
        if tg is None:
            raise ModelError(f"{self.family} has no target_generator: there are no target tokens to compare with",
                             hint="use the pretraining config as mmpretrain ships it (its target_generator)")
        self.tokenizer = "VQ-KD" if type(tg).__name__ == "VQKD" else "DALL-E"
        if self.family == "CAE":
            self.kind, self.version = "cae", "CAE"
        else:
            self.version = "BEiT v2" if getattr(model, "with_neck", False) else "BEiT v1"
        self.patch_size = int(model.backbone.patch_embed.projection.stride[0])
        self._block_masks(75, 16)
        step = _pipeline_step(cfg, ("RandomResizedCropAndInterpolationWithTwoPic",)) or {}
        size = step.get("second_size")
        self.second_size: tuple[int, int] | None = (
            None if size is None else (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1])))
        self.second_interpolation = str(step.get("second_interpolation", "lanczos"))
        self.second_mean, self.second_std = self._second_norm()

    @property
    def label(self) -> str:
        """How the figure names the model and its tokens."""
        return f"{self.version} ({self.tokenizer} tokens)"

    def _second_norm(self) -> tuple[list[float], list[float]]:
        """The target image's normalisation: ``TwoNormDataPreprocessor``'s second_mean / second_std (0-255)."""
        from visctl.config import cfg_get

        dp = self.model.data_preprocessor
        if hasattr(dp, "second_mean") and hasattr(dp, "second_std"):
            return [float(v) for v in dp.second_mean.flatten()], [float(v) for v in dp.second_std.flatten()]
        cfg_dp = cfg_get(self.cfg, "data_preprocessor") or cfg_get(self.cfg, "model.data_preprocessor") or {}
        if cfg_dp.get("second_mean") is None or cfg_dp.get("second_std") is None:
            raise ModelError(f"{self.family}'s config has no second_mean / second_std: the target image's "
                             "normalisation (TwoNormDataPreprocessor) is unknown",
                             hint="use the pretraining config's data_preprocessor (type='TwoNormDataPreprocessor')")
        return [float(v) for v in cfg_dp["second_mean"]], [float(v) for v in cfg_dp["second_std"]]

    def notes(self) -> list[str]:
        """What the user must know about these tokens (true for this model and checkpoint)."""
        out = []
        embedding = getattr(getattr(self.model.target_generator, "quantize", None), "embedding", None)
        initted = getattr(embedding, "initted", None)
        if initted is not None and not bool(initted.flatten()[0]):
            out.append(f"the {self.tokenizer} codebook in this checkpoint was never initialised (initted is 0, as "
                       "before the first training step): mmpretrain's quantizer k-means-initialises it from the "
                       "first batch's features (torch seeded with 0), so these target tokens come from no trained "
                       "tokenizer")
        return out

    def __call__(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise ModelError(f"{self.family} predicts tokens, not pixels", hint="visctl.recon draws its tokens")

    def target_images(self, pictures: list[Any], rgb: bool, device: Any) -> torch.Tensor:
        """(N, 3, h, w): the pipeline's second picture of each model input (RGB uint8, (H, W, 3)) resized as
        ``RandomResizedCropAndInterpolationWithTwoPic`` resizes it (``mmcv.imresize``, its second_interpolation;
        no second_size: the input itself) and normalised as ``TwoNormDataPreprocessor`` does."""
        import mmcv
        import numpy as np
        import torch

        rows = []
        for pic in pictures:
            img = np.ascontiguousarray(pic if rgb else pic[..., ::-1])
            if self.second_size is not None:
                img = mmcv.imresize(img, self.second_size, interpolation=self.second_interpolation)
            rows.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float())
        x = torch.stack(rows).to(device)
        mean = torch.tensor(self.second_mean, device=device).view(-1, 1, 1)
        std = torch.tensor(self.second_std, device=device).view(-1, 1, 1)
        return (x - mean) / std

    def target_tokens(self, target_imgs: torch.Tensor) -> torch.Tensor:
        """(N, L) int64: the target generator's token of each patch (as the model's head reads its output)."""
        import io

        import torch

        tg = self.model.target_generator
        with torch.no_grad(), _torch_seeded(0, _device(tg)), contextlib.redirect_stdout(io.StringIO()):
            out = tg(target_imgs)  # VQ-KD: ids (N, L); an uninitialised codebook is k-means-initialised (printed)
        if out.dim() == 4:  # DALL-E: logits (N, vocab, h, w); BEiTV1Head / CAEHead take their argmax
            out = torch.argmax(out, dim=1)
        return out.flatten(1).long()

    def masked_logits(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(M, vocab): the logits of the masked patches, image by image in row-major patch order, as the
        model's ``loss()`` hands them to its cross-entropy."""
        import torch

        self.check_grid((int(imgs.shape[2]), int(imgs.shape[3])))
        model, mask = self.model, mask.bool()
        n = imgs.shape[0]
        gh, gw = imgs.shape[2] // self.patch_size, imgs.shape[3] // self.patch_size
        with torch.no_grad():
            if self.family == "CAE":  # CAE.loss: the decoder predicts the masked patches only (equal counts)
                rows = []
                for k in range(n):
                    m = mask[k:k + 1]
                    unmasked = model.backbone(imgs[k:k + 1], m)
                    pos = model.backbone.pos_embed[:, 1:]
                    pos_masked = pos[:, m[0]].reshape(1, -1, pos.shape[-1])
                    pos_unmasked = pos[:, ~m[0]].reshape(1, -1, pos.shape[-1])
                    logits, _ = model.neck(unmasked[:, 1:], pos_masked, pos_unmasked)
                    rows.append(logits.reshape(-1, logits.shape[-1]))
                return torch.cat(rows)
            latent = model.backbone(imgs, mask.reshape(n, gh, gw))
            if model.with_neck:  # BEiT v2: BEiTV2Neck, loss_1 on its last-layer features
                feats, _ = model.neck(latent, rel_pos_bias=model.backbone.shared_rel_pos_bias)
                return model.head.cls_head(feats[mask])
            return model.head.cls_head(latent[0][:, 1:][mask])  # BEiT v1: the class token removed
