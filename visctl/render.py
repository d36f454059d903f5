"""Drawing: heatmap overlays, captioned panels and grids (RGB uint8 arrays in, RGB uint8 arrays out)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from visctl.classes import label as class_label
from visctl.errors import ArgumentError

if TYPE_CHECKING:
    import numpy as np

def figure_allocation(fn: Any) -> Any:
    """Mark a failed allocation in ``fn`` as the figure's (:func:`visctl.errors.out_of_memory` says so in its
    hint, not that the input is too large)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            from visctl.errors import out_of_memory

            if not hasattr(exc, "visctl_allocating") and out_of_memory(exc) is not None:
                try:
                    exc.visctl_allocating = "figure"  # type: ignore[attr-defined]
                except AttributeError:  # an exception type without attributes: the generic hint
                    pass
            raise
    return wrapper


COLORMAPS = ("jet", "turbo", "viridis", "inferno", "magma", "plasma", "hot", "bone")


@figure_allocation
def mmengine_overlay(image: np.ndarray, fmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """mmengine's ``Visualizer.draw_featmap`` rendering of one map over an image of the same size (min-max,
    JET, ``addWeighted``): used where its per-map normalisation is the one asked for."""
    from visctl.config import mmengine_present

    if not mmengine_present():  # a plain install: the same arithmetic (mmengine's convert_overlay_heatmap)
        import cv2
        import numpy as np

        norm = cv2.normalize(fmap.astype("float32"), np.zeros(fmap.shape), 0, 255, cv2.NORM_MINMAX)
        heat = cv2.cvtColor(cv2.applyColorMap(np.asarray(norm, dtype=np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)
    import torch
    from mmengine.visualization import Visualizer

    return Visualizer.draw_featmap(torch.from_numpy(fmap.astype("float32"))[None], overlaid_image=image,
                                   channel_reduction="squeeze_mean", alpha=alpha)


@figure_allocation
def colorize(fmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A (H, W) map in [0, 1] as an RGB uint8 image, through an OpenCV colormap or else a matplotlib one."""
    import cv2
    import numpy as np

    code = getattr(cv2, f"COLORMAP_{colormap.upper()}", None)
    if code is not None:
        u8 = (np.clip(fmap, 0.0, 1.0) * 255).round().astype(np.uint8)
        return cv2.cvtColor(cv2.applyColorMap(u8, code), cv2.COLOR_BGR2RGB)
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(f"unknown colormap {colormap!r}") from None
    return (cmap(np.clip(fmap, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)


def check_colormap(name: str) -> str:
    """Validate a colormap name (OpenCV's, or any of matplotlib's such as coolwarm); returns it."""
    import cv2

    if getattr(cv2, f"COLORMAP_{name.upper()}", None) is not None:
        return name
    import matplotlib

    if name in matplotlib.colormaps:
        return name
    from visctl.errors import VisctlError

    raise VisctlError(f"unknown colormap {name!r}",
                      hint=f"use an OpenCV map ({', '.join(COLORMAPS)}) or a matplotlib one such as coolwarm")


NO_DATA = "grey: outside the model's view"


def no_data(image: np.ndarray) -> np.ndarray:
    """An RGB image drawn as "no data": grey, faded, its shapes still visible."""
    import numpy as np

    grey = image.astype(np.float32).mean(-1, keepdims=True)
    return np.repeat(0.35 * grey + 0.65 * 160, 3, axis=-1).round().astype(np.uint8)


@figure_allocation
def overlay(image: np.ndarray, fmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] map over an RGB image: ``(1 - alpha) * image + alpha * heat`` (no re-brightening).

    NaN in the map is "no data" (outside the model's view): those pixels show the image in grey, no heat.
    """
    import cv2
    import numpy as np

    if fmap.shape[:2] != image.shape[:2]:
        fmap = cv2.resize(fmap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST
                          if np.isnan(fmap).any() else cv2.INTER_LINEAR)
    missing = np.isnan(fmap)
    heat = colorize(np.nan_to_num(fmap, nan=0.0), colormap)
    out = cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)
    if missing.any():
        out[missing] = no_data(image)[missing]
    return out


@figure_allocation
def caption(image: np.ndarray, text: str, min_width: int = 0) -> np.ndarray:
    """Put ``text`` in a white band above the image, the font sized to stay legible at any image size."""
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    width = max(w, min_width)
    scale, thick, lines, th, line_h = _caption_layout(text, width)
    band = np.full((line_h * len(lines) + 6, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (4, 4 + th + i * line_h), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), thick,
                    cv2.LINE_AA)
    body = image if w == width else cv2.copyMakeBorder(image, 0, 0, 0, width - w, cv2.BORDER_CONSTANT,
                                                       value=(255, 255, 255))
    return np.vstack([band, body])


def _caption_layout(text: str, width: int) -> tuple[float, int, list[str], int, int]:
    import cv2

    scale = max(0.4, min(1.0, width / 500))
    thick = 1 if scale < 0.8 else 2
    lines = _wrap(text, width, scale, thick)
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    return scale, thick, lines, th, th + base + 6


def caption_height(text: str, width: int) -> int:
    """The height of the band :func:`caption` puts above an image ``width`` pixels wide."""
    _, _, lines, _, line_h = _caption_layout(text, width)
    return line_h * len(lines) + 6


def _wrap(text: str, width: int, scale: float, thick: int) -> list[str]:

    lines: list[str] = []
    for para in text.split("\n"):
        cur = ""
        for word in para.replace(",", ", ").split(" "):
            if not word:
                continue
            trial = f"{cur} {word}".strip()
            if _text_w(trial, scale, thick) <= width - 8:
                cur = trial
                continue
            if cur:
                lines.append(cur)
            while _text_w(word, scale, thick) > width - 8 and len(word) > 1:  # a word longer than the panel
                cut = len(word) - 1
                while cut > 1 and _text_w(word[:cut], scale, thick) > width - 8:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            cur = word
        lines.append(cur)
    return lines


def _text_w(text: str, scale: float, thick: int) -> int:
    import cv2

    return int(cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0])


@figure_allocation
def grid(panels: list[np.ndarray], cols: int | None = None, gap: int = 6) -> np.ndarray:
    """Lay panels out in rows (left to right, top to bottom) on white; never drops a panel."""
    import math

    import numpy as np

    if not panels:
        raise ValueError("no panels")
    cols = cols or min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    cell_h = max(p.shape[0] for p in panels)
    cell_w = max(p.shape[1] for p in panels)
    out = np.full((rows * cell_h + (rows - 1) * gap, cols * cell_w + (cols - 1) * gap, 3), 255, np.uint8)
    for i, p in enumerate(panels):
        r, c = divmod(i, cols)
        y, x = r * (cell_h + gap), c * (cell_w + gap)
        out[y:y + p.shape[0], x:x + p.shape[1]] = p
    return out


@figure_allocation
def fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """Scale an image so its longer side is at most ``max_side`` (upscales tiny images to it too)."""
    import cv2

    h, w = image.shape[:2]
    f = max_side / max(h, w)
    if abs(f - 1.0) < 1e-6:
        return image
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_NEAREST if f >= 2 else cv2.INTER_LINEAR
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=interp)


#: the longest a panel's long side is by default (cam, featmap); boxam's is 512
PANEL_CAP = 384
#: tiny images are enlarged to this, so that a panel's caption stays legible
PANEL_FLOOR = 160


def panel_size(h: int, w: int, requested: int | None = None, cap: int = PANEL_CAP) -> int:
    """The long side of a panel for an (h, w) image: ``requested`` (``--panel-size``) when given, else the
    original's long side, at most ``cap`` and at least :data:`PANEL_FLOOR` (a 32 px image with a caption is
    unreadable)."""
    if requested:
        return int(requested)
    return min(cap, max(h, w, PANEL_FLOOR))


#: a figure's pixel limit when the run has no budget (``max_pixels=None``, a library call's default): 2**30
#: pixels (3 GiB as RGB), where OpenCV's and numpy's allocations of one image fail on most machines
FIGURE_LIMIT = 1 << 30


class FigureTooLarge(ArgumentError):
    """Options that make a figure (a panel size, a grid, a rescale factor) over the pixel budget."""


def check_figure(width: int, height: int, max_pixels: int | None, options: str, what: str = "a figure",
                 hint: str | None = None) -> None:
    """Refuse, before it is drawn, a ``width`` x ``height`` figure over the limit of a figure: :data:`FIGURE_LIMIT`
    (2^30 pixels, 3 GiB as RGB, what OpenCV holds), or ``max_pixels`` where a run's budget is larger. The pixel
    budget (``--max-pixels``) bounds the images read and the model inputs made of them; a figure of several
    panels of such an image is naturally larger, so it is not held to it. ``options`` names the options that
    make the figure (``--panel-size 8192 (panel_size=)``), ``what`` the figure, ``hint`` how to make it smaller."""
    budget = max(FIGURE_LIMIT, max_pixels or 0)
    w, h = int(width), int(height)
    if w * h <= budget:
        return
    raise FigureTooLarge(f"{options} would make {what}: {w} x {h} pixels ({w * h / 1e6:,.0f} MP), over the limit "
                         f"of a figure ({budget / 1e6:,.0f} MP)", hint=hint or f"make {options} smaller")


def fit_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    """The (h, w) :func:`fit` gives an (h, w) image."""
    f = max_side / max(h, w, 1)
    if abs(f - 1.0) < 1e-6:
        return int(h), int(w)
    return max(1, round(h * f)), max(1, round(w * f))


def grid_size(n: int, cell_h: int, cell_w: int, cols: int | None = None, gap: int = 6) -> tuple[int, int]:
    """The (height, width) :func:`grid` gives ``n`` panels of at most ``cell_h`` x ``cell_w``."""
    import math

    cols = cols or min(n, 4)
    rows = math.ceil(n / cols)
    return rows * cell_h + (rows - 1) * gap, cols * cell_w + (cols - 1) * gap


def map_figure_size(h: int, w: int, counts: list[int], panel_side: int) -> tuple[int, int]:
    """The (height, width) of :func:`map_figure` for an (h, w) original and ``counts`` maps per row, captions
    left out (a lower bound: what is refused with it is over the budget)."""
    cols = min(1 + max(counts or [0]), 6)
    ph, pw = fit_size(h, w, panel_side)
    lines = sum(-(-(1 + c) // cols) for c in counts)
    return grid_size(lines * cols, ph, pw, cols)


def sizes_param(sizes: set[int]) -> int | list[int]:
    """The panel size of a run for its manifest: one number, or every size used when the images differ."""
    return next(iter(sizes)) if len(sizes) == 1 else sorted(sizes)


@figure_allocation
def map_figure(original: np.ndarray, rows: list[tuple[str, list[tuple[str, np.ndarray]]]], alpha: float = 0.5,
               colormap: str = "jet", panel_side: int = PANEL_CAP) -> np.ndarray:
    """One figure for one image: per row, the original then one overlay per map, all captioned.

    Args:
        original: the original RGB image.
        rows: ``(row label, [(panel caption, map at the original's size in [0, 1]), ...])``.
        alpha: heatmap opacity.
        colormap: an OpenCV colormap name.
        panel_side: longer side of each panel in the figure (see :func:`panel_size`).
    """
    import numpy as np

    panels = []
    cols = min(1 + max(len(maps) for _, maps in rows), 6)
    base = fit(original, panel_side)
    blank = caption(base * 0 + 255, "")
    unseen = any(np.isnan(fmap).any() for _, maps in rows for _, fmap in maps)
    for label, maps in rows:
        row = [caption(base, f"{label} ({NO_DATA})" if unseen else label)]
        row += [caption(overlay(base, fmap, alpha, colormap), text) for text, fmap in maps]
        row.extend([blank] * (-len(row) % cols))  # each category starts a new line of the grid
        panels.extend(row)
    return grid(panels, cols=cols)


def adaptive_size(h: int, w: int, min_edge: int = 200, max_edge: int = 1000) -> tuple[int, int]:
    """(h, w) scaled, keeping the aspect ratio, so the short edge is at least ``min_edge`` and the long edge
    at most ``max_edge``; the long-edge limit wins when both cannot hold (a very elongated image)."""
    f = 1.0
    if min(h, w) < min_edge:
        f = min_edge / min(h, w)
    if max(h, w) * f > max_edge:
        f = max_edge / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


@figure_allocation
def label_image(image: np.ndarray, text: str) -> np.ndarray:
    """Caption an image; tiny images are first enlarged so the caption is legible."""
    if max(image.shape[:2]) < 160:
        image = fit(image, 160)
    return caption(image, text)


@figure_allocation
def draw_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """Darken the masked patches of an image (mask on the patch grid, nearest-upsampled)."""
    import cv2
    import numpy as np

    full = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    out = image.astype(np.float32)
    out[full.astype(bool)] *= 1.0 - alpha
    return out.astype(np.uint8)


@figure_allocation
def text_on_image(image: np.ndarray, text: str) -> np.ndarray:
    """``text`` in a translucent black box at the top left of a copy of ``image``, white, sized to the image
    as mmpretrain's ``visualize_cls`` sizes its label (``get_adaptive_scale``: short edge / 224 within 0.3-3).
    The image keeps its size."""
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    s = min(max(min(h, w) / 224, 0.3), 3.0)
    scale, thick = 0.45 * s, max(1, int(round(s)))
    lines = text.split("\n")
    sizes = [cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thick) for line in lines]
    line_h = max(th + base for (_, th), base in sizes) + int(3 * s)
    x0 = y0 = int(5 * s)
    x1 = min(w, x0 + max(tw for (tw, _), _ in sizes) + int(6 * s))
    y1 = min(h, y0 + line_h * len(lines) + int(4 * s))
    out = np.ascontiguousarray(image).copy()
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = (out[y0:y1, x0:x1].astype(np.float32) * 0.5).astype(np.uint8)  # black at alpha 0.5
    for i, (line, ((_, th), _)) in enumerate(zip(lines, sizes)):
        cv2.putText(out, line, (x0 + int(3 * s), y0 + int(2 * s) + th + i * line_h), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def rescaled_size(h: int, w: int, factor: float) -> tuple[int, int]:
    """The (h, w) :func:`rescale` gives an (h, w) image."""
    return max(1, int(h * float(factor) + 0.5)), max(1, int(w * float(factor) + 0.5))


@figure_allocation
def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """``mmcv.imrescale(image, factor)``: each side ``int(side * factor + 0.5)``, bilinear (OpenCV)."""
    import cv2

    nh, nw = rescaled_size(*image.shape[:2], factor)  # type: ignore[call-arg]
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)


def pipeline_figure_size(item: dict, mode: str, adaptive: bool = False, min_edge: int = 200, max_edge: int = 1000,
                         rescale_factor: float | None = None) -> tuple[int, int]:
    """The (height, width) of :func:`pipeline_figure` for ``item``, captions left out (a lower bound)."""
    def panel(shape: tuple[int, ...]) -> tuple[int, int]:
        h, w = int(shape[0]), int(shape[1])
        if adaptive:
            h, w = adaptive_size(h, w, min_edge, max_edge)
        return fit_size(h, w, 160) if max(h, w) < 160 else (h, w)

    if mode == "original":
        h, w = item["original"].shape[:2]
        if rescale_factor is not None:
            return rescaled_size(h, w, rescale_factor)
        return adaptive_size(h, w, min_edge, max_edge) if adaptive else (int(h), int(w))
    if mode in ("transformed", "concat"):
        shapes = [v.shape for v in item["views"]] + ([item["original"].shape] if mode == "concat" else [])
        rows, cols = 1, len(shapes)
    else:
        shapes = [img.shape for snaps in item["snapshots"] for _, img in snaps]
        rows, cols = len(item["snapshots"]), max([len(s) for s in item["snapshots"]] or [1])
    sizes = [panel(s) for s in shapes] or [(1, 1)]
    h, w = grid_size(rows * cols, max(s[0] for s in sizes), max(s[1] for s in sizes), cols)
    return h, w


@figure_allocation
def pipeline_figure(item: dict, mode: str, label: str, adaptive: bool = False, min_edge: int = 200,
                    max_edge: int = 1000, bgr2rgb: bool = False, rescale_factor: float | None = None) -> np.ndarray:
    """A sample through its pipeline: the original, the final view(s), both, or every step of every view.

    Args:
        item: a processed sample (``original``, ``views``, ``masks``, ``snapshots``).
        mode: original | transformed | concat | pipeline.
        label: the text under the original's caption.
        adaptive: scale each panel into [min_edge, max_edge] (see :func:`adaptive_size`).
        min_edge: shortest allowed short edge with ``adaptive``.
        max_edge: longest allowed long edge with ``adaptive``.
        bgr2rgb: swap the channels of every panel.
        rescale_factor: with mode original, scale the image by this factor (mmpretrain's ``-r``).

    Mode original gives the image itself (scaled by ``rescale_factor`` or ``adaptive``) with the label drawn on
    it, at the size both seed tools give (mmcls 0.x vis_pipeline, mmpretrain browse_dataset); the other modes
    put a caption band (step, size) above each panel.
    """
    import cv2

    def panel(img: np.ndarray, text: str, mask: np.ndarray | None = None) -> np.ndarray:
        if bgr2rgb:
            img = img[..., ::-1]
        if mask is not None:
            img = draw_mask(img, mask)
        h, w = img.shape[:2]
        if adaptive:
            nh, nw = adaptive_size(h, w, min_edge, max_edge)
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if nh < h else cv2.INTER_LINEAR)
        return label_image(img, f"{text}\n{h}x{w}")

    if mode == "original":
        img = item["original"][..., ::-1] if bgr2rgb else item["original"]
        h, w = img.shape[:2]
        if rescale_factor is not None:
            img = rescale(img, rescale_factor)
        elif adaptive:
            nh, nw = adaptive_size(h, w, min_edge, max_edge)
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if nh < h else cv2.INTER_LINEAR)
        return text_on_image(img, label)
    original = panel(item["original"], f"original | {label}")
    many = len(item["views"]) > 1
    views = [panel(v, f"transformed{f' view {i + 1}' if many else ''}", m)
             for i, (v, m) in enumerate(zip(item["views"], item["masks"]))]
    if mode == "transformed":
        return grid(views, cols=len(views))
    if mode == "concat":
        return grid([original] + views, cols=1 + len(views))
    rows = []
    for v, snaps in enumerate(item["snapshots"]):
        last = len(snaps) - 1
        rows.append([panel(img, step, item["masks"][v] if i == last else None) for i, (step, img) in enumerate(snaps)])
    cols = max(len(r) for r in rows)
    blank = caption(item["original"][:1, :1] * 0 + 255, "")
    return grid([c for r in rows for c in r + [blank] * (cols - len(r))], cols=cols)


def class_colors(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct colours: tab10/tab20 up to 20 classes, evenly spaced hues beyond."""
    return list(_class_colors(n))


@functools.lru_cache(maxsize=64)
def _class_colors(n: int) -> tuple[tuple[float, float, float], ...]:
    # computed once per n: boxam and featmap draw boxes on every image (~1 ms a call through matplotlib)
    return tuple(_colors(n))


#: matplotlib's "tab10" and "tab20" colormaps (matplotlib/_cm.py ``_tab10_data``, ``_tab20_data``: these bytes / 255),
#: written out so that drawing boxes does not import matplotlib (tests/test_detection.py compares them with it)
TAB10 = "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf".split()
TAB20 = ("1f77b4 aec7e8 ff7f0e ffbb78 2ca02c 98df8a d62728 ff9896 9467bd c5b0d5 8c564b c49c94 e377c2 f7b6d2 7f7f7f "
         "c7c7c7 bcbd22 dbdb8d 17becf 9edae5").split()


def _colors(n: int) -> list[tuple[float, float, float]]:
    import colorsys

    if n <= 20:
        table = TAB10 if n <= 10 else TAB20
        return [(int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255) for h in table[:n]]
    return [colorsys.hsv_to_rgb(i / n, 0.75, 0.9 - 0.25 * (i % 2)) for i in range(n)]


def scatter_figure(coords: np.ndarray, labels: np.ndarray, names: list[str], title: str, legend: bool = True,
                   marker_size: float = 12.0, thumbnails: list[np.ndarray] | None = None) -> Any:
    """A matplotlib Figure of 2-D points coloured by class, one legend entry per class present."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    present = sorted(set(int(v) for v in labels))
    colors = class_colors(max(present) + 1 if present else 1)
    fig = Figure(figsize=(9, 9), layout="constrained")
    ax = fig.add_subplot()
    for c in present:
        pts = coords[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=marker_size, color=colors[c], alpha=0.85, linewidths=0,
                   label=class_label(names, c))
    if thumbnails:
        zoom = 24 / max(max(t.shape[:2]) for t in thumbnails)
        for (x, y), img, c in zip(coords, thumbnails, labels):
            box = AnnotationBbox(OffsetImage(img, zoom=zoom), (x, y), frameon=True, pad=0.1,
                                 bboxprops=dict(edgecolor=colors[int(c)], linewidth=1.5))
            ax.add_artist(box)
    if legend and present:
        handles = [Line2D([], [], marker="o", linestyle="", color=colors[c],
                          label=class_label(names, c)) for c in present]
        ax.legend(handles=handles, loc="best", fontsize="small", markerscale=1.2,
                  ncol=1 if len(present) <= 20 else 2)
    ax.set_title(title, fontsize="medium")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """Render a matplotlib Figure to PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def draw_boxes(image: np.ndarray, boxes: Any, labels: Any, scores: Any = None, class_names: list[str] | None = None,
               thickness: int | None = None, colors: list[tuple[float, float, float]] | None = None) -> np.ndarray:
    """Boxes with class names and scores, one deterministic colour per class; each label stays inside the image."""
    import cv2
    import numpy as np

    out = np.ascontiguousarray(image.copy())
    n_classes = max(len(class_names or []), int(max(labels, default=0)) + 1)
    palette = colors or class_colors(max(n_classes, 1))
    t = thickness or max(1, round(max(image.shape[:2]) / 400))
    scale = max(0.35, min(0.9, max(image.shape[:2]) / 2000))
    h_img, w_img = image.shape[:2]
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        color = tuple(int(c * 255) for c in palette[int(lab) % len(palette)])
        if not np.isfinite(np.asarray(b, np.float64)).all():  # an untrained head's exp() overflows: no box to draw
            continue
        # far outside the image: drawn clipped to a margin (OpenCV's coordinates are 32-bit)
        x0, y0, x1, y1 = (int(round(min(max(float(v), -1e6), 1e6))) for v in b)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, t, cv2.LINE_AA)
        name = class_label(class_names, lab)
        text = name if scores is None else f"{name} {float(scores[i]):.2f}"
        s = scale
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, s, 1)
        while tw + 3 > w_img and s > 0.2:  # a label wider than the image: a smaller font
            s *= 0.85
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, s, 1)
        # the label box sits on the box's top-left corner, moved left off the right edge and down off the
        # top one (inside the box), so it is never cut: its pixels span [lx, lx + tw + 2] x [ty - th - base - 2, ty]
        lx = max(0, min(x0, w_img - tw - 3))
        ty = min(max(y0, th + base + 2), h_img - 1)
        cv2.rectangle(out, (lx, ty - th - base - 2), (lx + tw + 2, ty), color, -1)
        cv2.putText(out, text, (lx + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, s, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def normalize_in_boxes(fmap: np.ndarray, boxes: Any) -> np.ndarray:
    """A map re-normalised to [0, 1] inside each box and zero outside (grad-cam's
    renormalize_cam_in_bounding_boxes, on the original image's pixels)."""
    import numpy as np

    out = np.zeros_like(fmap, dtype=np.float32)
    h, w = fmap.shape
    for b in boxes:
        x0, y0 = max(0, int(np.floor(b[0]))), max(0, int(np.floor(b[1])))
        x1, y1 = min(w, int(np.ceil(b[2]))), min(h, int(np.ceil(b[3])))
        if x1 <= x0 or y1 <= y0:
            continue
        patch = fmap[y0:y1, x0:x1]
        if np.isnan(patch).all():
            continue
        lo, hi = float(np.nanmin(patch)), float(np.nanmax(patch))
        norm = np.nan_to_num((patch - lo) / (hi - lo)) if hi > lo else np.zeros_like(patch)
        out[y0:y1, x0:x1] = np.maximum(out[y0:y1, x0:x1], norm)
    out[np.isnan(fmap)] = np.nan  # outside the model's view stays "no data"
    return out


def legend_strip(items: list[tuple[tuple[int, int, int], str]], width: int) -> np.ndarray:
    """A white band, one line per item: a colour swatch and its meaning (RGB uint8, ``width`` wide)."""
    import cv2
    import numpy as np

    scale = max(0.4, min(0.6, width / 500))
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    line_h = th + base + 8
    band = np.full((line_h * len(items) + 6, width, 3), 255, np.uint8)
    for i, (color, text) in enumerate(items):
        y = 4 + i * line_h
        cv2.rectangle(band, (4, y + 1), (4 + th + 4, y + th + 5), tuple(int(c) for c in color), -1)
        cv2.rectangle(band, (4, y + 1), (4 + th + 4, y + th + 5), (90, 90, 90), 1)
        cv2.putText(band, text, (th + 16, y + th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA)
    return band


def colorbar_strip(width: int, colormap: str, low: str, high: str, note: str = "") -> np.ndarray:
    """A horizontal colour bar from 0 (left) to 1 (right) of ``colormap``, its end labels under it, then
    ``note`` (wrapped) under them."""
    import cv2
    import numpy as np

    bar_w = max(8, width - 8)
    bar = colorize(np.tile(np.linspace(0.0, 1.0, bar_w, dtype=np.float32), (14, 1)), colormap)
    scale = max(0.4, min(0.6, width / 500))
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    lines = _wrap(note, width, scale, 1) if note else []
    line_h = th + base + 6
    band = np.full((14 + th + base + 12 + line_h * len(lines), width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (4, 18 + th + 4 + (i + 1) * line_h), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20),
                    1, cv2.LINE_AA)
    band[4:18, 4:4 + bar_w] = bar
    y = 18 + th + 4
    cv2.putText(band, low, (4, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA)
    tw = _text_w(high, scale, 1)
    cv2.putText(band, high, (max(4, 4 + bar_w - tw), y), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1,
                cv2.LINE_AA)
    return band
