"""Masked-image models built from timm blocks: MAE, SimMIM (ViT encoder) and MaskFeat (HOG targets).

This module defines nn.Module classes, so it imports torch at the top; only `visctl recon` and the demo
training script import it, inside their functions.

The MAE's parameter names follow the reference MAE release (timm ViT names: patch_embed, cls_token,
pos_embed, blocks.N.*, norm, mask_token, decoder_embed, decoder_pos_embed, decoder_blocks.N.*, decoder_norm,
decoder_pred), so its published checkpoints load without key errors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn


def sincos_pos_embed(dim: int, gh: int, gw: int, cls_token: bool) -> torch.Tensor:
    """The fixed 2-D sine-cosine position embedding of MAE, (1, [1 +] gh * gw, dim)."""
    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_w, grid_h = np.meshgrid(np.arange(gw, dtype=np.float64), np.arange(gh, dtype=np.float64))
    emb = np.concatenate([one_d(dim // 2, grid_h), one_d(dim // 2, grid_w)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, L, p * p * 3), patches row by row, pixels (p, p, 3) inside a patch (as MAE)."""
    n, c, h, w = imgs.shape
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, p: int, gh: int, gw: int) -> torch.Tensor:
    """(N, L, p * p * 3) -> (N, 3, gh * p, gw * p)."""
    n = x.shape[0]
    x = x.reshape(n, gh, gw, p, p, 3)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(n, 3, gh * p, gw * p)


def random_mask(n: int, length: int, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, length) bool, True = masked, exactly round(length * ratio) patches masked per image."""
    k = int(round(length * ratio))
    noise = torch.rand(n, length, generator=generator)
    idx = noise.argsort(dim=1)[:, :k]
    mask = torch.zeros(n, length, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return mask


class _ViTEncoder(nn.Module):
    """Shared pieces: patch embedding, blocks, final norm, and a position embedding for any grid."""

    def _init_encoder(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                      mlp_ratio: float, cls: bool) -> None:
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim, strict_img_size=False)
        grid = img_size // patch_size
        if cls:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed(embed_dim, grid, grid, cls), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def _pos(self, table: torch.Tensor, gh: int, gw: int, cls: bool) -> torch.Tensor:
        n = gh * gw + int(cls)
        if table.shape[1] == n and int(math.isqrt(gh * gw)) ** 2 == gh * gw and gh == gw:
            return table
        return sincos_pos_embed(table.shape[2], gh, gw, cls).to(table)  # any grid: the fixed embedding again

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        h, w = x.shape[2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return h // self.patch_size, w // self.patch_size


class MaskedAutoencoderViT(_ViTEncoder):
    """MAE (He et al.): the encoder sees the visible patches, a light decoder predicts the masked ones."""

    kind = "mae"

    def __init__(self, img_size: int = 224, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.0, norm_pix_loss: bool = False, mask_ratio: float = 0.75) -> None:
        super().__init__()
        self._init_encoder(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, cls=True)
        grid = img_size // patch_size
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(decoder_embed_dim, grid, grid, True),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True)
                                             for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * 3, bias=True)
        self.norm_pix_loss = norm_pix_loss
        self.mask_ratio = mask_ratio
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted patches (N, L, p * p * 3) for every position; ``mask`` (N, L) bool, True = masked, with
        the same count in every row."""
        gh, gw = self.grid(imgs)
        x = self.patch_embed(imgs)
        pos = self._pos(self.pos_embed, gh, gw, True)
        x = x + pos[:, 1:]
        n, length, d = x.shape
        keep = (~mask).nonzero(as_tuple=True)[1].reshape(n, -1)  # visible positions, in order
        x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, d))
        cls = (self.cls_token + pos[:, :1]).expand(n, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        dd = x.shape[2]
        full = self.mask_token.expand(n, length, dd).clone()
        full.scatter_(1, keep.unsqueeze(-1).expand(-1, -1, dd), x[:, 1:])
        x = torch.cat([x[:, :1], full], dim=1) + self._pos(self.decoder_pos_embed, gh, gw, True)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


class SimMIM(_ViTEncoder):
    """SimMIM (Xie et al.) with a ViT encoder: masked patches are replaced by a mask token before the
    encoder; a linear decoder predicts every patch's pixels."""

    kind = "simmim"

    def __init__(self, img_size: int = 192, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, mask_ratio: float = 0.6) -> None:
        super().__init__()
        self._init_encoder(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, cls=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.decoder = nn.Linear(embed_dim, patch_size ** 2 * 3)
        self.norm_pix_loss = False
        self.mask_ratio = mask_ratio
        nn.init.normal_(self.mask_token, std=0.02)

    def encode(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gh, gw = self.grid(imgs)
        x = self.patch_embed(imgs)
        w = mask.unsqueeze(-1).to(x.dtype)
        x = x * (1 - w) + self.mask_token.expand_as(x) * w
        x = x + self._pos(self.pos_embed, gh, gw, False)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(imgs, mask))


class MaskFeat(SimMIM):
    """MaskFeat (Wei et al.): the SimMIM encoder, predicting each masked patch's HOG instead of pixels."""

    kind = "maskfeat"

    def __init__(self, img_size: int = 224, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, mask_ratio: float = 0.4, orientations: int = 9,
                 cells_per_patch: int = 2) -> None:
        super().__init__(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, mask_ratio)
        self.hog = HOG(patch_size // cells_per_patch, orientations)
        self.decoder = nn.Linear(embed_dim, self.hog.dims(patch_size))


class HOG(nn.Module):
    """Histograms of oriented gradients per cell, per colour channel, grouped per patch and L2-normalised
    (MaskFeat's target): (N, 3, H, W) -> (N, L, cells * cells * 3 * orientations)."""

    def __init__(self, cell: int = 8, orientations: int = 9) -> None:
        super().__init__()
        self.cell = cell
        self.orientations = orientations
        k = torch.tensor([[-1.0, 0.0, 1.0]])
        self.register_buffer("kx", k.reshape(1, 1, 1, 3).repeat(3, 1, 1, 1), persistent=False)
        self.register_buffer("ky", k.reshape(1, 1, 3, 1).repeat(3, 1, 1, 1), persistent=False)

    def dims(self, patch: int) -> int:
        return (patch // self.cell) ** 2 * 3 * self.orientations

    def cells(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, orientations, H / cell, W / cell) histograms."""
        gx = nn.functional.conv2d(nn.functional.pad(imgs, (1, 1, 0, 0), mode="reflect"), self.kx, groups=3)
        gy = nn.functional.conv2d(nn.functional.pad(imgs, (0, 0, 1, 1), mode="reflect"), self.ky, groups=3)
        mag = torch.sqrt(gx ** 2 + gy ** 2)
        angle = torch.remainder(torch.atan2(gy, gx), math.pi)  # unsigned, 0..pi
        b = (angle / math.pi * self.orientations).long().clamp(max=self.orientations - 1)
        n, c, h, w = imgs.shape
        hist = torch.zeros(n, c, self.orientations, h, w, device=imgs.device, dtype=imgs.dtype)
        hist.scatter_(2, b.unsqueeze(2), mag.unsqueeze(2))
        return nn.functional.avg_pool2d(hist.flatten(1, 2), self.cell).unflatten(1, (c, self.orientations))

    def forward(self, imgs: torch.Tensor, patch: int) -> torch.Tensor:
        cells = self.cells(imgs)  # (N, 3, O, gh * k, gw * k)
        k = patch // self.cell
        n, c, o, hh, ww = cells.shape
        x = cells.reshape(n, c, o, hh // k, k, ww // k, k)
        x = x.permute(0, 3, 5, 4, 6, 1, 2).reshape(n, (hh // k) * (ww // k), -1)
        return nn.functional.normalize(x, dim=-1)


def mae_vit(**kwargs: object) -> MaskedAutoencoderViT:
    """Factory for configs: model = dict(type='visctl.mim_models:mae_vit', ...)."""
    return MaskedAutoencoderViT(**kwargs)  # type: ignore[arg-type]


def mae_vit_base_patch16(**kwargs: object) -> MaskedAutoencoderViT:
    """The reference MAE ViT-B/16 (encoder 768 x 12, decoder 512 x 8)."""
    return MaskedAutoencoderViT(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, **kwargs)  # type: ignore[arg-type]


def simmim_vit(**kwargs: object) -> SimMIM:
    """Factory for configs: model = dict(type='visctl.mim_models:simmim_vit', ...)."""
    return SimMIM(**kwargs)  # type: ignore[arg-type]


def maskfeat_vit(**kwargs: object) -> MaskFeat:
    """Factory for configs: model = dict(type='visctl.mim_models:maskfeat_vit', ...)."""
    return MaskFeat(**kwargs)  # type: ignore[arg-type]
