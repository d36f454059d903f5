"""``visctl.browse``: a config's dataset as the model receives it, after its whole pipeline, in labelled grids.

Each sample gives its view(s) after the pipeline (RGB ``uint8``), its label and class name; the pages are the
grids ``visctl browse`` draws (``browse_<phase>_<NNN>.png``), and ``result.save(folder)`` writes the CLI's folder.
The CLI's pages are drawn where they are encoded, in the writer's thread (:class:`Drawing`), off the samples'.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.library.pipeline import CHANNEL_ORDERS, PHASES, SKIP, _choice, _readonly
from visctl.results import Drawing, Figure, Result, save_picture
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.output.writer import OutputWriter


@dataclass(frozen=True)
class BrowseSample:
    """One sample after the pipeline: its views (several for a multi-view pipeline) and masks, its class."""

    name: str
    index: int
    label: int | None
    class_name: str | None
    caption: str
    page: int
    views: tuple[np.ndarray, ...] = field(repr=False)
    masks: tuple[np.ndarray | None, ...] = field(repr=False)

    @property
    def path(self) -> str:
        """The sample's file (its :attr:`name`)."""
        return self.name

    def info(self) -> dict[str, Any]:
        """The sample's entry among the manifest's inputs (without its path)."""
        return dict(label=self.label, class_name=self.class_name, caption=self.caption, page=self.page,
                    views=len(self.views), shape=list(self.views[0].shape[:2]))


@dataclass(frozen=True)
class BrowsePage(Result):
    """One grid page and the samples on it: its figure drawn (the library's), or to draw (the CLI's)."""

    command: ClassVar[str] = "browse"

    figure: Figure | None = field(default=None, repr=False)
    samples: tuple[BrowseSample, ...] = ()
    drawing: Drawing | None = field(default=None, repr=False)  # the CLI's page, drawn when written

    @property
    def items(self) -> tuple[BrowseSample, ...]:
        """The samples on this page (:attr:`samples`)."""
        return self.samples

    @property
    def picture(self) -> Figure | Drawing | None:
        """The page, drawn or to draw."""
        return self.figure if self.figure is not None else self.drawing

    def figures(self) -> list[Figure]:
        if self.figure is None and self.drawing is not None:
            return [self.drawing.figure()]
        return [self.figure] if self.figure is not None else []

    def write(self, writer: OutputWriter) -> None:
        """The page, then its samples as inputs of the run, as one step an interrupt does not split."""
        from visctl.output.writer import uninterrupted

        with uninterrupted():  # a page and its samples are listed together
            if self.picture is not None:
                save_picture(writer, self.picture)
            for s in self.samples:
                writer.add_input(s.name, **s.info())


@dataclass(frozen=True)
class BrowseResult(Result):
    """Every page (:class:`BrowsePage`) in order; :attr:`samples` lists their samples."""

    command: ClassVar[str] = "browse"

    pages: tuple[BrowsePage, ...] = ()

    @property
    def samples(self) -> tuple[BrowseSample, ...]:
        """Every page's samples, in page order."""
        return tuple(s for p in self.pages for s in p.samples)

    @property
    def items(self) -> tuple[BrowseSample, ...]:
        """The samples (:attr:`samples`; :attr:`pages` groups them as drawn), as the result's sequence."""
        return self.samples

    def figures(self) -> list[Figure]:
        return [f for p in self.pages for f in p.figures()]

    def write(self, writer: OutputWriter) -> None:
        for page in self.pages:
            page.write(writer)


@dataclass
class BrowsePlan:
    """What a run knows before its first sample."""

    dataset: Any
    samples: Any  # datasets.PipelineSamples
    count: int
    params: dict[str, Any]
    phase: str
    rows: int
    cols: int
    num_workers: int
    swap: bool = False  # the panels' channels swapped (a -c/--channel-order other than the images' own)


def plan(config: Any, *, phase: str = "train", number: int = 32, skip_type: Any = None, rows: int = 4,
         cols: int = 4, num_workers: int = 0, channel_order: str | None = None, seed: int = 0, session: Session,
         config_name: str | None = None) -> BrowsePlan:
    """Load the config and its dataset, and say what the run will do."""
    from pathlib import Path

    from visctl import arguments, datasets
    from visctl.library.pipeline import channel_swap, check_skip, native_order

    arguments.model_spec(config, "config", modules=False)
    arguments.check("browse", number=number, rows=rows, cols=cols, num_workers=num_workers, seed=seed)
    skip_type = arguments.skip_types(skip_type)
    phase = _choice(phase, PHASES, "phase")
    if channel_order is not None:
        channel_order = _choice(str(getattr(channel_order, "value", channel_order)).upper(), CHANNEL_ORDERS,
                                "channel order")
    cfg = session.load_config(config)
    ds_cfg, steps = datasets.dataset_config(cfg, phase)
    dataset = datasets.build_dataset(ds_cfg, phase, warn=session.warn, max_pixels=session.max_pixels)
    check_skip(skip_type, steps, session.warn)
    skip = tuple(skip_type if skip_type is not None else SKIP)
    samples = datasets.PipelineSamples(dataset, steps, seed=seed, skip_types=skip)
    size = datasets.length(dataset)
    count = size if number < 0 else min(number, size)
    session.protect(*(dataset.name(i) for i in range(count)))
    if config_name is None:
        config_name = str(config) if isinstance(config, (str, Path)) else getattr(cfg, "filename", None) or "<config>"
    params = dict(config=config_name, phase=phase, number=count, rows=rows, cols=cols, num_workers=num_workers,
                  seed=seed, skip_type=list(skip))
    if channel_order is not None:
        params["channel_order"] = channel_order
    swap = channel_swap(channel_order, native_order(dataset, steps))
    return BrowsePlan(dataset, samples, count, params, phase, rows, cols, num_workers, swap)


def page_grid(n: int, rows: int, cols: int) -> tuple[int, int]:
    """The (rows, cols) of a page of ``n`` samples in a ``rows`` x ``cols`` grid: shrunk to the samples it holds,
    as mmpretrain's browse_dataset.py lays out only the images it has (no empty column or row)."""
    import math

    cols = max(1, min(cols, n))
    return min(rows, math.ceil(n / cols)), cols


def cell_size(views: Any, caption: str) -> tuple[int, int]:
    """The (height, width) of a sample's cell on a page as :func:`draw_page` draws it."""
    from visctl import render

    sizes = [render.fit_size(int(v.shape[0]), int(v.shape[1]), 160) for v in views] or [(1, 1)]
    width = sum(w for _, w in sizes) + 2 * (len(sizes) - 1)
    return max(h for h, _ in sizes) + render.caption_height(caption, width), width


def check_page(n: int, cell_h: int, cell_w: int, rows: int, cols: int, max_pixels: int | None) -> None:
    """Refuse a page of ``n`` samples (cells of at most ``cell_h`` x ``cell_w``) over the pixel budget."""
    from visctl import render

    r, c = page_grid(n, rows, cols)
    h, w = render.grid_size(r * c, cell_h, cell_w, c)
    render.check_figure(w, h, max_pixels, f"--rows {rows} --cols {cols} (rows=, cols=)",
                        f"a page of {n} samples ({r} x {c})",
                        hint="give fewer --rows/--cols (a page holds rows x cols samples)")


def draw_page(samples: tuple[BrowseSample, ...], cols: int, swap: bool = False) -> np.ndarray:
    """A page: each sample's views (masked patches darkened) side by side, fitted to 160 px, under its caption,
    in a grid of ``cols`` columns, fewer when the page holds fewer samples (a read-only RGB ``uint8`` array);
    ``swap``: each view's channels swapped."""
    from visctl import render

    cells = []
    for s in samples:
        views = [v[..., ::-1] if swap else v for v in s.views]
        views = [render.draw_mask(v, m) if m is not None else v for v, m in zip(views, s.masks)]
        strip = render.grid([render.fit(v, 160) for v in views], cols=len(views), gap=2)
        cells.append(render.caption(strip, s.caption))
    page = render.grid(cells, cols=min(cols, len(cells)))
    page.setflags(write=False)  # a new array: read-only like the samples, without a copy
    return page


def iter_pages(p: BrowsePlan, session: Session, draw_in_writer: bool = False) -> Iterator[BrowsePage]:
    """Each grid page as soon as it is full (the last one when the samples end); bad samples go to
    ``session.skip``.

    ``draw_in_writer`` (the CLI's): the pages come as :class:`Drawing` s (``page.drawing``), drawn by
    ``draw_page`` when the writer encodes them, in its thread when it has one; else drawn here (``page.figure``).
    """
    from functools import partial

    from visctl import datasets

    per_page = p.rows * p.cols
    drawn: list[BrowseSample] = []
    pages = 0
    cell_h = cell_w = 1  # the largest cell of the page being filled: refused as soon as it outgrows the budget

    def page() -> BrowsePage:
        first = pages * per_page
        samples = tuple(drawn)
        drawing = Drawing(f"browse_{p.phase}_{pages:03d}.png", partial(draw_page, samples, p.cols, p.swap),
                          f"{p.phase} samples {first}-{first + len(samples) - 1}")
        if draw_in_writer:
            return BrowsePage(samples=samples, drawing=drawing)
        return BrowsePage(figure=drawing.figure(), samples=samples)

    with session.progress(p.count, "browse") as advance:
        for item in datasets.iterate(p.samples, list(range(p.count)), num_workers=p.num_workers):
            advance()
            if item["error"]:
                session.skip(item["name"], item["error"])
                continue
            label = item["label"]
            name = p.dataset.class_name(label)
            text = "no label" if label is None else f"{label}: {name}" if name is not None else str(label)
            views = item["views"]
            text = f"#{item['index']} {text}" + (f" ({len(views)} views)" if len(views) > 1 else "")
            drawn.append(BrowseSample(item["name"], item["index"], label, name, text, pages,
                                      tuple(_readonly(v) for v in views),
                                      tuple(_readonly(m) for m in item["masks"])))
            ch, cw = cell_size(views, text)
            cell_h, cell_w = max(cell_h, ch), max(cell_w, cw)
            check_page(len(drawn), cell_h, cell_w, p.rows, p.cols, session.max_pixels)
            if len(drawn) == per_page:
                yield page()
                pages += 1
                drawn = []
                cell_h = cell_w = 1
    if drawn:
        yield page()


@arguments.typed("browse")
def browse(config: Any, *, phase: str = "train", number: int = 32, skip_type: Any = None, rows: int = 4,
           cols: int = 4, num_workers: int = 0, channel_order: str | None = None, seed: int = 0,
           options: RunOptions | None = None, session: Session | None = None) -> BrowseResult:
    """Samples of ``config``'s ``<phase>`` dataset after its whole pipeline, with their class names, in grids.

    Args:
        config: an mmengine config (a path, a dict or a ``Config``) with ``<phase>_dataloader.dataset``.
        phase: train, val or test; number: samples from the first (-1: all).
        skip_type: transform types left out [default: ToTensor Normalize ImageToTensor Collect PackInputs].
        rows: the rows of a page's grid.
        cols: the columns of a page's grid.
        num_workers: DataLoader worker processes.
        channel_order: BGR or RGB, the order the pipeline's images are in (mmpretrain's ``-c``): shown as that,
            so the wrong one swaps the colours as mmpretrain shows them [default: their own order]. One figure
            per sample (mmpretrain's ``--mode``): :func:`visctl.pipeline`.
        seed: the random transforms' seed (the same views each run).
        options: how the run writes and reports (:class:`visctl.RunOptions`).
        session: a :class:`visctl.Session` to run in (its notes, failures and writer) [default: a new one].
    """
    ctx = session or Session(options)
    skipped, noted = len(ctx.failures), len(ctx.notes)
    p = plan(config, phase=phase, number=number, skip_type=skip_type, rows=rows, cols=cols,
             num_workers=num_workers, channel_order=channel_order, seed=seed, session=ctx)
    pages = tuple(iter_pages(p, ctx))
    params = dict(p.params, max_pixels=ctx.max_pixels) if ctx.max_pixels is not None else p.params
    return BrowseResult(params=params, failures=tuple((f.path, f.error) for f in ctx.failures[skipped:]),
                        notes=tuple(ctx.notes[noted:]), pages=pages)
