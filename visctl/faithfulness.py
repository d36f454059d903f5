"""Faithfulness scores of CAMs: does a map point at what the model uses?

For every map and its target class:

* ROAD (Rong et al. 2022), grad-cam's ``pytorch_grad_cam.metrics.road`` (``ROADMostRelevantFirstAverage`` and
  ``ROADLeastRelevantFirstAverage``) to float rounding: the change of the target's probability after removing the
  most relevant pixels (MoRF, lower is better) and the least relevant ones (LeRF, near 0 is better) at several
  percentiles, imputed by grad-cam's noisy linear imputer (the same sparse system, set up without
  ``lil_matrix`` and solved by a symmetric LU), and their combination ``(LeRF - MoRF) / 2`` (higher is better).
* Deletion and insertion AUC (Petsiuk et al. 2018, RISE): the target's probability while the pixels are
  removed (replaced by the image's mean colour) or inserted (into a blurred copy) in the map's order, in
  ``steps`` equal parts; the area under each curve (deletion: lower is better; insertion: higher is better).
  grad-cam has no such metric.
* Keep-top-k: the change of the target's probability when only the top ``keep``% of the map is kept (the
  rest replaced by the mean colour) (higher is better).

Probabilities are the softmax of the model's logits (grad-cam's ``ClassifierOutputSoftmaxTarget``).

A score is a function of the model, the image, the map, its class and ``seed`` alone, to the last bit: each
map's perturbed images go through the model in batches of their own (so what else is in the batch, where the
image sits in it and ``--batch-size`` change nothing), the imputer's noise is drawn from a generator seeded
with ``seed`` for every map (the same draws as grad-cam's after ``torch.manual_seed(seed)`` on that image
alone), and torch's global generator is left alone. The clean image, its mean-colour copy and its blurred copy
(both curves' ends) go through the model once per image and serve every map scored on it (:class:`Scorer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

ROAD_PERCENTILES = (20, 40, 60, 80)
ROAD_NOISE = 0.01  # grad-cam's NoisyLinearImputer default
# name -> True when higher is better
SCORES = {"road_combined": True, "road_morf": False, "road_lerf": True, "deletion_auc": False,
          "insertion_auc": True, "keep_top_change": True}
# the images of one forward of a score hold at most this many pixels (32 at 224 px): a function of the image's
# size only, so that a score does not depend on the batch size
FORWARD_PIXELS = 32 * 224 * 224
FORWARDS_PER_IMAGE = 3  # the clean image, its mean-colour copy and its blurred copy, shared by its maps


@dataclass(frozen=True)
class Faithfulness:
    """The scores of one map (see the module docstring for each)."""

    road_combined: float
    road_morf: float
    road_lerf: float
    deletion_auc: float
    insertion_auc: float
    keep_top_change: float

    def caption(self) -> str:
        return (f"ROAD {self.road_combined:+.3f} | del {self.deletion_auc:.2f} ins {self.insertion_auc:.2f}")


def forwards_per_map(steps: int = 10, percentiles: tuple[int, ...] = ROAD_PERCENTILES) -> int:
    """Forward passes per map: ROAD's imputed images (one per percentile and order), the inner steps of
    deletion and insertion, keep-top-k's image. Each image adds :data:`FORWARDS_PER_IMAGE` for all its maps."""
    return 2 * len(percentiles) + 2 * (steps - 1) + 1


def score(model: nn.Module, batch: torch.Tensor, maps: np.ndarray, categories: list[int], *, steps: int = 10,
          keep: float = 20.0, percentiles: tuple[int, ...] = ROAD_PERCENTILES, seed: int = 0,
          batch_size: int | None = None) -> list[Faithfulness]:
    """Score ``maps`` (B, H, W) in [0, 1] at the batch's size for the classes ``categories`` (one per image).

    ``model`` returns logits (B, classes); ``batch`` is what it was given when the maps were made. Each image's
    scores depend on that image alone (see the module docstring); ``batch_size`` is accepted for callers of
    the earlier signature and changes nothing.
    """
    return Scorer(model, batch, steps=steps, keep=keep, percentiles=percentiles, seed=seed)(maps, categories)


class Scorer:
    """Scores maps on the images of one batch (:meth:`__call__`, once per method or class); what does not
    depend on the map (each image's mean colour, blurred copy and the probabilities of those and of the clean
    image) is computed once per image, when its first map is scored, and a map scored again on the same image
    (for another class) reuses its perturbed images' probabilities.

    ``model`` must give the same output for the same input on every call (a segmenter's region scorer whose
    region changes between calls needs a new Scorer per region).
    """

    def __init__(self, model: nn.Module, batch: torch.Tensor, *, steps: int = 10, keep: float = 20.0,
                 percentiles: tuple[int, ...] = ROAD_PERCENTILES, seed: int = 0) -> None:
        import numpy as np
        import torch

        if steps < 1:
            raise ValueError(f"steps must be at least 1, not {steps}")
        self.model, self.batch = model, batch
        self.steps, self.keep, self.percentiles, self.seed = steps, keep, tuple(percentiles), seed
        self.fractions = np.linspace(0.0, 1.0, steps + 1)
        # the batch's memory format for the model (channels_last on a GPU run); each image is NCHW on its own
        self.channels_last = batch.dim() == 4 and not batch.is_contiguous() and batch.is_contiguous(
            memory_format=torch.channels_last)
        self._images: dict[int, tuple[Any, Any, Any, Any]] = {}
        self._perturbed: dict[tuple, np.ndarray] = {}  # (image, map) -> probabilities of its perturbed images

    def __call__(self, maps: np.ndarray, categories: list[int]) -> list[Faithfulness]:
        import numpy as np

        maps = np.nan_to_num(np.asarray(maps, np.float32), nan=0.0)
        return [self.one(i, maps[i], int(c)) for i, c in enumerate(categories)]

    def one(self, i: int, cam: np.ndarray, category: int) -> Faithfulness:
        """The scores of map ``cam`` (H, W) for class ``category`` on image ``i`` of the batch."""
        import hashlib

        import numpy as np
        import torch

        cam = np.ascontiguousarray(np.nan_to_num(np.asarray(cam, np.float32), nan=0.0))
        x, mean, blurred, base = self._image(i)
        # the perturbed images are a function of the image and the map: a map met again on the same image (a
        # class-independent method such as EigenCAM under --topk) reuses their probabilities for every class
        key = (i, cam.shape, hashlib.blake2b(cam.tobytes(), digest_size=16).digest())
        if key not in self._perturbed:
            generator = torch.Generator().manual_seed(self.seed)  # the same draws for every map
            x_cpu = x.cpu()
            road = [_road_image(x_cpu, cam, p, lerf, generator) for lerf in (False, True) for p in self.percentiles]
            kept = torch.where(torch.from_numpy(cam >= np.percentile(cam, 100 - self.keep)).to(x.device), x, mean)
            deletion, insertion = _curve_images(x, mean, blurred, cam, self.fractions)
            self._perturbed[key] = self._probabilities(
                torch.cat([torch.stack(road).to(x.device), kept[None], deletion, insertion]))
        p = self._perturbed[key][:, category]  # float32, in the order of the images above
        clean, mean_p, blurred_p = (np.float32(v) for v in base[:, category])
        n = len(self.percentiles)
        # grad-cam's arithmetic: float32 differences, their float32 mean over the percentiles
        morf = float(np.mean((p[:n] - clean).reshape(n, 1), axis=0)[0])
        lerf = float(np.mean((p[n:2 * n] - clean).reshape(n, 1), axis=0)[0])
        inner = self.steps - 1
        curves = (np.array([clean, *p[2 * n + 1:2 * n + 1 + inner], mean_p], np.float64),
                  np.array([blurred_p, *p[2 * n + 1 + inner:], clean], np.float64))
        trapezoid = getattr(np, "trapezoid", None) or np.trapz  # type: ignore[attr-defined]  # numpy 2 renamed it
        return Faithfulness(road_combined=(lerf - morf) / 2, road_morf=morf, road_lerf=lerf,
                            deletion_auc=float(trapezoid(curves[0], self.fractions)),
                            insertion_auc=float(trapezoid(curves[1], self.fractions)),
                            keep_top_change=float(p[2 * n] - clean))

    def _image(self, i: int) -> tuple[Any, Any, Any, Any]:
        """Image ``i`` (C, H, W, contiguous), its mean colour (C, 1, 1), its blurred copy, and the class
        probabilities (3, classes) of the three (the mean colour filling the image)."""
        import torch

        if i not in self._images:
            x = self.batch[i].contiguous()
            mean = x.mean(dim=(1, 2), keepdim=True)
            blurred = _blur(x)
            probs = self._probabilities(torch.stack([x, mean.expand_as(x), blurred]))
            self._images[i] = (x, mean, blurred, probs)
        return self._images[i]

    def _probabilities(self, images: torch.Tensor) -> np.ndarray:
        """Softmax of the model's logits (N, classes) as float32, in forwards of a size fixed by the images'
        own size (:data:`FORWARD_PIXELS`)."""
        import torch

        per = max(1, FORWARD_PIXELS // max(1, images.shape[-1] * images.shape[-2]))
        out = []
        with torch.no_grad():
            for start in range(0, len(images), per):
                chunk = images[start:start + per]
                if self.channels_last:
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
                out.append(self.model(chunk).float().softmax(-1).cpu())
        return torch.cat(out).numpy()


def _curve_images(x: torch.Tensor, mean: torch.Tensor, blurred: torch.Tensor, cam: np.ndarray,
                  fractions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The inner steps of deletion (the top pixels of ``cam`` become the mean colour) and insertion (the top
    pixels of ``x`` over the blurred copy): (steps - 1, C, H, W) each; the ends are the clean, mean and blurred
    images. The top ``round(fraction * H * W)`` pixels in the order of a stable sort, most relevant first."""
    import numpy as np
    import torch

    h, w = cam.shape
    order = np.argsort(-cam.reshape(-1), kind="stable")
    position = np.empty(h * w, np.int64)
    position[order] = np.arange(h * w)
    counts = np.array([int(round(f * h * w)) for f in fractions[1:-1]], np.int64)
    top = torch.from_numpy(position[None, :] < counts[:, None]).view(-1, 1, h, w).to(x.device)
    return torch.where(top, mean, x), torch.where(top, x, blurred)


def _road_image(image: torch.Tensor, cam: np.ndarray, percentile: int, lerf: bool,
                generator: torch.Generator) -> torch.Tensor:
    """grad-cam's ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst`` (``lerf``) at ``percentile``
    with its ``NoisyLinearImputer``: the pixels at or above the percentile of the map (of ``1 - map`` for
    LeRF) are imputed from their neighbours, plus noise."""
    import numpy as np
    import torch

    mask = torch.from_numpy(cam)
    if lerf:
        mask = 1 - mask
    values = mask.numpy()
    known = (values < np.percentile(values, percentile)).astype(np.float32)
    return _impute(image, known, generator)


# grad-cam's neighbour weights (pytorch_grad_cam.metrics.road.neighbors_weights)
_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
               ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def _impute(image: torch.Tensor, known: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """grad-cam's ``NoisyLinearImputer`` on ``image`` (C, H, W, CPU) where ``known`` (H, W) is 0: the same
    system, solved, plus ``ROAD_NOISE`` times normal noise drawn as its ``randn_like`` draws it."""
    import torch

    c = image.shape[0]
    flat = image.reshape(c, -1)
    matrix, rhs, unknown = _road_system(known, image.numpy())
    if len(unknown) == 0:
        return image.clone()
    solution = torch.tensor(_solve(matrix, rhs, bool(known.any())), dtype=torch.float)  # (N, C)
    # randn_like(solution.t()): spsolve's solution is column-major, so its transpose is a contiguous (C, N)
    noise = torch.empty((c, len(unknown))).normal_(generator=generator)
    filled = flat.clone()
    filled[:, torch.from_numpy(unknown)] = solution.t() + ROAD_NOISE * noise
    return filled.reshape_as(image)


def _road_system(known: np.ndarray, image: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    """grad-cam's ``NoisyLinearImputer.setup_sparse_system`` (the same matrix and right-hand side, value for
    value), built as one COO matrix instead of element assignments into a ``lil_matrix``: (N, N) CSC
    matrix, (N, C) right-hand side, and the N unknown pixels' flat indices."""
    import numpy as np
    from scipy.sparse import csc_matrix

    h, w = known.shape
    flat_known = known.reshape(-1)
    flat = image.reshape(image.shape[0], -1)
    unknown = np.flatnonzero(flat_known == 0)
    n = len(unknown)
    variable = np.zeros(len(flat_known), dtype=np.int64)
    variable[unknown] = np.arange(n)
    rhs = np.zeros((n, image.shape[0]))
    weight_sum = np.ones(n)
    rows, cols, values = [], [], []
    y, x = unknown // w, unknown % w
    for (dy, dx), weight in _NEIGHBOURS:
        valid = (y + dy >= 0) & (x + dx >= 0) & (y + dy < h) & (x + dx < w)
        ids = np.flatnonzero(valid)
        coords = unknown[valid] + dy * w + dx
        has_value = flat_known[coords] > 0.5
        rhs[ids[has_value], :] -= weight * flat[:, coords[has_value]].T
        missing = flat_known[coords] < 0.5
        rows.append(ids[missing])
        cols.append(variable[coords[missing]])
        values.append(np.full(int(missing.sum()), weight))
        outside = np.flatnonzero(~valid)
        weight_sum[outside] = weight_sum[outside] - weight
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    values.append(-weight_sum)
    matrix = csc_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return matrix, rhs, unknown


def _solve(matrix: Any, rhs: np.ndarray, any_known: bool) -> np.ndarray:
    """The imputer's system: symmetric (the neighbour weights are), so a symmetric-mode LU on ``A + A^T``'s
    minimum-degree ordering (~2x grad-cam's ``spsolve`` at 224 px, equal to ~1e-14). With no known pixel the
    right-hand side is 0 and so is the solution (what ``spsolve`` returns)."""
    import numpy as np
    from scipy.sparse.linalg import splu, spsolve

    if not any_known:
        return np.zeros_like(rhs)
    try:
        return splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                    options=dict(SymmetricMode=True)).solve(rhs)
    except RuntimeError:  # a singular factor: grad-cam's own solve, as it would have done
        return np.asarray(spsolve(matrix, rhs)).reshape(rhs.shape)


def _blur(image: torch.Tensor) -> torch.Tensor:
    """A heavy Gaussian blur of the image (C, H, W; sigma a tenth of the short side): insertion's starting point.

    torchvision's ``gaussian_blur`` with that kernel (its kernel, reflect padding), computed as the two 1-D
    passes it is -- two small matrix products with the padding folded in -- instead of a 2-D convolution
    with a kernel of 135 x 135 at 224 px (1.5 s an image on a core; equal to ~1e-6)."""
    import math

    import torch

    h, w = image.shape[-2:]
    sigma = max(1.0, min(h, w) / 10)
    k = int(2 * round(3 * sigma) + 1)
    lim = (k - 1) / (2.0 * math.sqrt(2.0))  # torchvision's _get_gaussian_kernel1d
    kernel = torch.softmax(torch.linspace(-lim, lim, steps=k, dtype=torch.float64).div(sigma).pow(2).neg(), 0)
    out = _blur_matrix(kernel, h) @ image.detach().cpu().double() @ _blur_matrix(kernel, w).T  # in float64 on the CPU
    return out.to(image.dtype).to(image.device)


def _blur_matrix(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """(n, n): row ``i`` is the 1-D ``kernel`` centred on ``i`` over a reflect-padded line of ``n`` values."""
    import torch

    k = len(kernel)
    half = k // 2
    src = torch.arange(n)[:, None] + torch.arange(k)[None, :] - half  # (n, k) positions in the unpadded line
    if n == 1:
        src = torch.zeros_like(src)
    else:
        period = 2 * (n - 1)  # reflect without repeating the edge, as torch's reflect padding does
        src = src % period
        src = torch.where(src >= n, period - src, src)
    matrix = torch.zeros(n, n, dtype=kernel.dtype)
    matrix.scatter_add_(1, src, kernel.expand(n, k).contiguous())
    return matrix


def ranking(per_method: dict[str, list[Faithfulness]]) -> list[dict]:
    """Methods ranked by mean ROAD combined (then insertion - deletion), with mean and spread of each score."""
    import numpy as np

    rows = []
    for method, scores in per_method.items():
        row: dict[str, Any] = {"method": method, "n": len(scores)}
        for name in SCORES:
            values = np.array([getattr(s, name) for s in scores], np.float64)
            row[name] = {"mean": float(values.mean()) if len(values) else float("nan"),
                         "std": float(values.std()) if len(values) else float("nan")}
        rows.append(row)
    rows.sort(key=lambda r: (-r["road_combined"]["mean"],
                             -(r["insertion_auc"]["mean"] - r["deletion_auc"]["mean"])))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def ranking_figure(rows: list[dict]) -> Any:
    """A matplotlib Figure: mean ROAD combined per method (error bars: spread over the images), best first,
    each method's numbers in a column to the right of the plot, where no bar or error bar reaches."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 0.8 + 0.45 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    names = [f"{r['rank']}. {r['method']}" for r in rows]
    means = [r["road_combined"]["mean"] for r in rows]
    spread = [r["road_combined"]["std"] for r in rows]
    ax.barh(names[::-1], means[::-1], xerr=spread[::-1], color="#4c72b0", error_kw=dict(capsize=3))
    for y, (m, r) in enumerate(zip(means[::-1], rows[::-1])):
        ax.annotate(f"ROAD {m:+.3f}  del {r['deletion_auc']['mean']:.2f}  ins {r['insertion_auc']['mean']:.2f}",
                    (1, y), xycoords=("axes fraction", "data"), xytext=(8, 0), textcoords="offset points",
                    va="center", ha="left", fontsize=8, annotation_clip=False)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"ROAD combined (higher = more faithful), mean over {rows[0]['n'] if rows else 0} map(s)")
    return fig


def table(rows: list[dict]) -> str:
    """The ranking as text, one method per line."""
    lines = [f"{'rank':>4}  {'method':<20}{'ROAD':>9}{'±':>7}{'deletion':>10}{'insertion':>11}{'keep-top':>10}"]
    for r in rows:
        lines.append(f"{r['rank']:>4}  {r['method']:<20}{r['road_combined']['mean']:>+9.3f}"
                     f"{r['road_combined']['std']:>7.3f}{r['deletion_auc']['mean']:>10.3f}"
                     f"{r['insertion_auc']['mean']:>11.3f}{r['keep_top_change']['mean']:>+10.3f}")
    return "\n".join(lines)
