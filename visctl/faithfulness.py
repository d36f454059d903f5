"""Faithfulness scores of CAMs: does a map point at what the model uses?

For every map and its target class, on the same batch:

* ROAD (Rong et al. 2022) through grad-cam's own metrics (``pytorch_grad_cam.metrics.road``): the change of
  the target's probability after removing the most relevant pixels (MoRF, lower is better) and the least
  relevant ones (LeRF, near 0 is better) at several percentiles, imputed by grad-cam's noisy linear imputer,
  and their combination ``(LeRF - MoRF) / 2`` (higher is better). grad-cam's ``ROADCombined`` is used as it is.
* Deletion and insertion AUC (Petsiuk et al. 2018, RISE): the target's probability while the pixels are
  removed (replaced by the image's mean colour) or inserted (into a blurred copy) in the map's order, in
  ``steps`` equal parts; the area under each curve (deletion: lower is better; insertion: higher is better).
  grad-cam has no such metric; the perturbed images of all steps go through the model in batches.
* Keep-top-k: the change of the target's probability when only the top ``keep``% of the map is kept (the
  rest replaced by the mean colour), through grad-cam's ``PerturbationConfidenceMetric`` with that
  perturbation (higher is better).

Probabilities are the softmax of the model's logits (grad-cam's ``ClassifierOutputSoftmaxTarget``). Scores are
deterministic for a ``seed`` (the imputer's noise is drawn from torch's generator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

ROAD_PERCENTILES = (20, 40, 60, 80)
# name -> True when higher is better
SCORES = {"road_combined": True, "road_morf": False, "road_lerf": True, "deletion_auc": False,
          "insertion_auc": True, "keep_top_change": True}


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
    """Extra forward passes per image and map: ROAD (a clean and a perturbed pass per percentile and order),
    deletion and insertion (``steps + 1`` each), keep-top-k (a clean and a perturbed pass)."""
    return 4 * len(percentiles) + 2 * (steps + 1) + 2


def score(model: nn.Module, batch: torch.Tensor, maps: np.ndarray, categories: list[int], *, steps: int = 10,
          keep: float = 20.0, percentiles: tuple[int, ...] = ROAD_PERCENTILES, batch_size: int = 32,
          seed: int = 0) -> list[Faithfulness]:
    """Score ``maps`` (B, H, W) in [0, 1] at the batch's size for the classes ``categories`` (one per image).

    ``model`` returns logits (B, classes); ``batch`` is what it was given when the maps were made.
    """
    import numpy as np
    import torch
    from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric
    from pytorch_grad_cam.metrics.road import (
        ROADLeastRelevantFirstAverage,
        ROADMostRelevantFirstAverage,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    maps = np.nan_to_num(np.asarray(maps, np.float32), nan=0.0)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in categories]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            morf = ROADMostRelevantFirstAverage(list(percentiles))(batch, maps, targets, model)
            lerf = ROADLeastRelevantFirstAverage(list(percentiles))(batch, maps, targets, model)
            kept = PerturbationConfidenceMetric(_KeepTop(keep))(batch, maps, targets, model)
            deletion, insertion = _deletion_insertion(model, batch, maps, categories, steps, batch_size)
    finally:
        torch.random.set_rng_state(state)
    out = []
    for i in range(len(categories)):
        m, lf = float(np.ravel(morf)[i]), float(np.ravel(lerf)[i])
        out.append(Faithfulness(road_combined=(lf - m) / 2, road_morf=m, road_lerf=lf,
                                deletion_auc=float(deletion[i]), insertion_auc=float(insertion[i]),
                                keep_top_change=float(np.ravel(kept)[i])))
    return out


class _KeepTop:
    """grad-cam perturbation: keep the top ``keep``% of the map, the rest becomes the image's mean colour."""

    def __init__(self, keep: float) -> None:
        self.keep = keep

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (C, H, W), (H, W)
        import numpy as np

        threshold = np.percentile(mask.numpy(), 100 - self.keep)
        keep = (mask >= threshold).to(image.dtype)
        mean = image.mean(dim=(1, 2), keepdim=True)
        return image * keep + mean * (1 - keep)


def _deletion_insertion(model: Any, batch: torch.Tensor, maps: np.ndarray, categories: list[int], steps: int,
                        batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUC per image (RISE), the perturbed images batched through the model."""
    import numpy as np
    import torch

    b, _c, h, w = batch.shape
    fractions = np.linspace(0.0, 1.0, steps + 1)
    ranks = np.argsort(-maps.reshape(b, -1), axis=1, kind="stable")  # most relevant first
    blurred = _blur(batch)
    mean = batch.mean(dim=(2, 3), keepdim=True).expand_as(batch)
    curves = {"deletion": np.zeros((b, steps + 1)), "insertion": np.zeros((b, steps + 1))}
    jobs = []  # (kind, image, step)
    for i in range(b):
        for s in range(steps + 1):
            jobs += [("deletion", i, s), ("insertion", i, s)]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        images = []
        for kind, i, s in chunk:
            top = torch.zeros(h * w, dtype=batch.dtype, device=batch.device)
            top[torch.from_numpy(ranks[i, :int(round(fractions[s] * h * w))]).to(batch.device)] = 1
            top = top.view(1, h, w)
            if kind == "deletion":
                images.append(batch[i] * (1 - top) + mean[i] * top)
            else:
                images.append(blurred[i] * (1 - top) + batch[i] * top)
        probs = model(torch.stack(images)).float().softmax(-1)
        for (kind, i, s), p in zip(chunk, probs):
            curves[kind][i, s] = float(p[categories[i]])
    auc = {k: np.trapezoid(v, fractions, axis=1) if hasattr(np, "trapezoid") else np.trapz(v, fractions, axis=1)
           for k, v in curves.items()}
    return auc["deletion"], auc["insertion"]


def _blur(batch: torch.Tensor) -> torch.Tensor:
    """A heavy Gaussian blur of each image (sigma a tenth of the short side): insertion's starting point."""
    import torch
    from torchvision.transforms.v2 import functional as F

    sigma = max(1.0, min(batch.shape[2:]) / 10)
    k = int(2 * round(3 * sigma) + 1)
    with torch.no_grad():
        return F.gaussian_blur(batch, [k, k], [sigma, sigma])


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
    """A matplotlib Figure: mean ROAD combined per method (error bars: spread over the images), best first."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.5 + 0.45 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    names = [f"{r['rank']}. {r['method']}" for r in rows]
    means = [r["road_combined"]["mean"] for r in rows]
    spread = [r["road_combined"]["std"] for r in rows]
    ax.barh(names[::-1], means[::-1], xerr=spread[::-1], color="#4c72b0")
    for y, (m, r) in enumerate(zip(means[::-1], rows[::-1])):
        ax.annotate(f"ROAD {m:+.3f}  del {r['deletion_auc']['mean']:.2f}  ins {r['insertion_auc']['mean']:.2f}",
                    (0, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
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
