"""Masked-image-model reconstructions: masks (random, from a file, from the pipeline), pixel reconstructions
un-normalised with the config's statistics, MSE on the masked patches, HOG pictures for MaskFeat."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visctl.errors import VisctlError
from visctl.images import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    import numpy as np
    import torch



def masks_for(n: int, grid: tuple[int, int], ratio: float, seed: int | None, first_index: int = 0) -> torch.Tensor:
    """(n, gh * gw) bool masks, True = masked; with a seed, image k of a run always gets the same mask."""
    import torch

    from visctl.mim_models import random_mask

    length = grid[0] * grid[1]
    if seed is None:
        return random_mask(n, length, ratio)
    rows = []
    for k in range(n):
        g = torch.Generator().manual_seed(seed * 1_000_003 + first_index + k)
        rows.append(random_mask(1, length, ratio, g))
    return torch.cat(rows)


def mask_from_file(path: Any, grid: tuple[int, int], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A mask from .npy or an image: patch-grid sized, or pixel sized (a patch is masked when most of its
    pixels are); nonzero = masked. The pixel budget (``--max-pixels``) applies as to every image read."""
    from pathlib import Path

    import torch

    from visctl.images import read_mask

    path = Path(path)
    if not path.is_file():
        raise VisctlError(f"mask file not found: {path}", hint="give a .npy or an image, nonzero = masked")
    arr = read_mask(path, max_pixels)
    gh, gw = grid
    if arr.shape != (gh, gw):
        if arr.shape[0] % gh or arr.shape[1] % gw:
            raise VisctlError(f"mask {arr.shape} fits neither the {gh}x{gw} patch grid nor a multiple of it",
                              hint="resize the mask to the patch grid or to the model's input size")
        arr = arr.reshape(gh, arr.shape[0] // gh, gw, arr.shape[1] // gw).astype(bool).mean((1, 3)) > 0.5
    return torch.from_numpy(arr.astype(bool).reshape(1, -1))


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each image's mean of ``err`` (N, L) over its masked patches; NaN where no patch is masked (the mean of
    an empty set: no number, not 0)."""
    import torch

    count = mask.sum(1)
    mean = (err * mask).sum(1) / count.clamp(min=1)
    return torch.where(count > 0, mean, torch.full_like(mean, float("nan")))


def to_pixels(patches: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...], rgb: bool) -> torch.Tensor:
    """Normalised patch values (N, L, p * p * 3) -> 0-1 RGB values, with the config's mean/std (0-255)."""
    import torch

    m = torch.tensor(mean, dtype=patches.dtype) / 255.0
    s = torch.tensor(std, dtype=patches.dtype) / 255.0
    n, length, d = patches.shape
    x = patches.reshape(n, length, d // 3, 3) * s + m
    if not rgb:
        x = x.flip(-1)
    return x.reshape(n, length, d)


def unnormalize_norm_pix(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A norm-pix model predicts each patch normalised by its own mean/std, which the masked patches'
    pixels cannot tell; use the visible patches' statistics instead (per image, per channel)."""
    n, length, d = target.shape
    t = target.reshape(n, length, d // 3, 3)
    visible = (~mask).unsqueeze(-1).unsqueeze(-1).to(t.dtype)
    count = visible.sum(1).clamp(min=1)
    patch_mean = t.mean(2, keepdim=True)
    patch_std = t.var(2, keepdim=True, unbiased=False).add(1e-6).sqrt()
    mean = (patch_mean * visible).sum(1, keepdim=True) / count.unsqueeze(1)
    std = (patch_std * visible).sum(1, keepdim=True) / count.unsqueeze(1)
    out = pred.reshape(n, length, d // 3, 3) * std + mean
    return out.reshape(n, length, d)


def unnormalize_own_patch(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each patch un-normalised with its own mean and std over all its values (mmpretrain's
    ``MAEPretrainHead.construct_target``): mmselfsup's visualize_reconstruction.py with ``--norm-pix``,
    where the masked patches' statistics come from the pixels the model did not see."""
    mean = target.mean(dim=-1, keepdim=True)
    std = (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
    return pred * std + mean


def reconstruct(model: Any, batch: torch.Tensor, mask: torch.Tensor, mean: tuple[float, ...],
                std: tuple[float, ...], rgb: bool, norm_pix: bool, norm_pix_stats: str = "patch") -> dict[str, Any]:
    """Run a MAE/SimMIM model; return 0-1 RGB images (N, H, W, 3): original, masked, reconstruction,
    reconstruction with the visible patches pasted back, and the MSE over the masked patches."""
    import torch

    from visctl.mim_models import patchify, unpatchify

    p = model.patch_size
    gh, gw = batch.shape[2] // p, batch.shape[3] // p
    with torch.no_grad():
        pred = model(batch, mask)
    target = patchify(batch, p)
    if norm_pix and norm_pix_stats == "patch":
        pred = unnormalize_own_patch(pred, target)
    elif norm_pix:
        pred = unnormalize_norm_pix(pred, target, mask)
    pix_pred = to_pixels(pred, mean, std, rgb).clamp(0, 1)
    pix_true = to_pixels(target, mean, std, rgb).clamp(0, 1)
    m = mask.unsqueeze(-1).to(pix_true.dtype)
    masked = pix_true * (1 - m) + 0.5 * m  # grey where masked
    pasted = pix_true * (1 - m) + pix_pred * m
    err = ((pix_pred - pix_true) ** 2).mean(-1)  # (N, L)
    mse = _masked_mean(err, mask)
    n, length, d = pix_true.shape
    # the baseline: every masked pixel filled with the image's mean colour
    fill = pix_true.reshape(n, length * d // 3, 3).mean(1).repeat(1, d // 3).unsqueeze(1)
    mean_err = _masked_mean(((fill.expand_as(pix_true) - pix_true) ** 2).mean(-1), mask)

    def img(x: torch.Tensor) -> np.ndarray:
        return unpatchify(x, p, gh, gw).permute(0, 2, 3, 1).cpu().numpy()

    return dict(original=img(pix_true), masked=img(masked), reconstruction=img(pix_pred), pasted=img(pasted),
                mse=mse.cpu().numpy(), mean_fill_mse=mean_err.cpu().numpy())


def hog_prediction(model: Any, batch: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """MaskFeat: the HOG of the original, and the HOG with masked patches replaced by the prediction, as
    per-cell histograms (N, 3, O, h, w), plus the masked patches' MSE between the two."""
    import torch

    p = model.patch_size
    hog = model.hog
    with torch.no_grad():
        pred = model(batch, mask)  # (N, L, k * k * 3 * O), L2-normalised per patch like the target
        target = hog(batch, p)
    err = ((pred - target) ** 2).mean(-1)
    mse = _masked_mean(err, mask)
    merged = torch.where(mask.unsqueeze(-1), pred, target)
    k = p // hog.cell
    n, length, _ = target.shape
    gh, gw = batch.shape[2] // p, batch.shape[3] // p

    def cells(x: torch.Tensor) -> np.ndarray:
        # (N, L, k * k * 3 * O) -> (N, 3, O, gh * k, gw * k)
        y = x.reshape(n, gh, gw, k, k, 3, hog.orientations).permute(0, 5, 6, 1, 3, 2, 4)
        return y.reshape(n, 3, hog.orientations, gh * k, gw * k).clamp(min=0).cpu().numpy()

    return dict(hog_original=cells(target), hog_predicted=cells(merged), mse=mse.cpu().numpy())


def hog_picture(cells: np.ndarray, cell_px: int, scale: int = 2, gradient_angles: Any = None) -> np.ndarray:
    """Draw HOG cells (3, O, h, w) as the classic star glyphs: a line per orientation, brightness by weight.

    ``gradient_angles``: the gradient direction (radians, x right, y down) at the centre of each bin
    [default: bin b at (b + 0.5) * pi / O, visctl's HOG]."""
    import math

    import cv2
    import numpy as np

    hist = cells.sum(0)  # channels together: (O, h, w)
    o, h, w = hist.shape
    size = cell_px * scale
    out = np.zeros((h * size, w * size), np.float32)
    top = hist.max() or 1.0
    for i in range(h):
        for j in range(w):
            cy, cx = i * size + size / 2, j * size + size / 2
            for b in range(o):
                v = hist[b, i, j] / top
                if v <= 0.02:
                    continue
                # gradient orientation b -> the edge runs perpendicular to it
                grad = (b + 0.5) * math.pi / o if gradient_angles is None else float(gradient_angles[b])
                theta = grad + math.pi / 2
                dx, dy = math.cos(theta) * size / 2, math.sin(theta) * size / 2
                cv2.line(out, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), float(v), 1, cv2.LINE_AA)
    return cv2.cvtColor((np.clip(out, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)


def reconstruct_inputs(batch: torch.Tensor, mask: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                       rgb: bool, p: int) -> dict[str, np.ndarray]:
    """The original and the masked input as 0-1 RGB images (N, H, W, 3), for models that predict no pixels."""
    from visctl.mim_models import patchify, unpatchify

    gh, gw = batch.shape[2] // p, batch.shape[3] // p
    pix = to_pixels(patchify(batch, p), mean, std, rgb).clamp(0, 1)
    m = mask.unsqueeze(-1).to(pix.dtype)
    return dict(original=unpatchify(pix, p, gh, gw).permute(0, 2, 3, 1).cpu().numpy(),
                masked=unpatchify(pix * (1 - m) + 0.5 * m, p, gh, gw).permute(0, 2, 3, 1).cpu().numpy())


def to_uint8(img: np.ndarray) -> np.ndarray:
    """A 0-1 float image as uint8."""
    import numpy as np

    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def masks_from_pipeline(states: list[Any], grid: tuple[int, int]) -> torch.Tensor:
    """(N, gh * gw) bool masks from the pipeline's mask generator (SimMIM, BEiT), resized to the model's grid."""
    import cv2
    import numpy as np
    import torch

    rows = []
    for state in states:
        if state.mask is None:
            raise VisctlError("use_vis_pipeline=True: the config's test pipeline makes no mask",
                              hint="add a SimMIMMaskGenerator or BEiTMaskGenerator step, or drop the flag")
        m = state.mask.astype(np.uint8)
        if m.shape != grid:  # e.g. SimMIM's mask on the model-patch grid of a different patch size
            m = cv2.resize(m, (grid[1], grid[0]), interpolation=cv2.INTER_NEAREST)
        rows.append(torch.from_numpy(m.astype(bool).reshape(-1)))
    return torch.stack(rows)


def token_prediction(model: Any, batch: torch.Tensor, mask: torch.Tensor, pictures: list[Any],
                     rgb: bool) -> dict[str, Any]:
    """A token-target model (BEiT, CAE; :class:`visctl.openmmlab_mim.TokenAdapter`): per patch (N, L) the target
    token, the top-1 predicted token (-1 on visible patches), the target token's predicted probability and its
    cross-entropy (NaN on visible patches); per image the masked patches' top-1 accuracy (``correct`` of
    ``count``) and mean cross-entropy, the numbers the model's loss averages over its batch."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    mask = mask.bool()
    n, length = mask.shape
    targets = model.target_tokens(model.target_images(pictures, rgb, batch.device))  # (N, L)
    if targets.shape != mask.shape:
        raise VisctlError(f"the target generator gives {targets.shape[1]} tokens an image and the model's patch "
                          f"grid has {length} patches",
                          hint="keep the config's second_size (RandomResizedCropAndInterpolationWithTwoPic)")
    logits = model.masked_logits(batch, mask).float()  # (M, vocab), masked patches image by image, row-major
    target = targets[mask]
    ce = F.cross_entropy(logits, target, reduction="none")
    top1 = logits.argmax(-1)
    full = lambda fill, dtype: torch.full((n, length), fill, dtype=dtype, device=logits.device)  # noqa: E731
    per_ce, predicted = full(float("nan"), torch.float32), full(-1, torch.long)
    per_ce[mask], predicted[mask] = ce, top1
    count = mask.sum(1)
    correct = ((predicted == targets) & mask).sum(1)
    mean_ce = torch.nan_to_num(per_ce, nan=0.0).sum(1) / count.clamp(min=1)
    return dict(target_tokens=targets.cpu().numpy(), predicted_tokens=predicted.cpu().numpy(),
                cross_entropy_map=per_ce.cpu().numpy(), probability_map=np.exp(-per_ce.cpu().numpy()),
                correct=correct.cpu().numpy(), count=count.cpu().numpy(), cross_entropy=mean_ce.cpu().numpy(),
                vocab=int(logits.shape[-1]))
