"""``visctl.browse``: a config's dataset as the model receives it, after its whole pipeline, in labelled grids.

Each sample gives its view(s) after the pipeline (RGB ``uint8``), its label and class name; the pages are the
grids ``visctl browse`` draws (``browse_<phase>_<NNN>.png``), and ``result.save(folder)`` writes the CLI's folder.
The CLI's pages are drawn where they are encoded, in the writer's thread (:class:`Drawing`), off the samples'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.choices import BrowseMode
from visctl.library._run import Run, Since, mark
from visctl.library.pipeline import SKIP, PipelineResult, _readonly
from visctl.options import BrowseOptions
from visctl.results import Drawing, Figure, Result, save_picture
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.library.pipeline import PipelineRun
    from visctl.output.writer import OutputWriter

#: a page's grid when rows= or cols= is not given
ROWS = COLS = 4


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

    def drawn(self) -> BrowsePage:
        """This page with its figure drawn (the library's)."""
        if self.figure is not None or self.drawing is None:
            return self
        return BrowsePage(figure=self.drawing.figure(), samples=self.samples)

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


def plan(session: Session, config: Any, settings: BrowseOptions) -> BrowseRun | PipelineRun:
    """Check the options, load the config and its dataset, and say what the run will do.

    A ``mode`` other than grid (mmpretrain's browse_dataset.py ``--mode``) draws one figure per sample, as
    :func:`visctl.pipeline` does (``rescale_factor``: with mode original): the run is the pipeline's, of the same
    samples.
    """
    from visctl import datasets
    from visctl.errors import InputError
    from visctl.library import pipeline
    from visctl.options import DatasetOptions, PipelineOptions

    o, since = settings, mark(session)
    if o.mode is not BrowseMode.grid:
        if o.rows is not None or o.cols is not None:
            raise InputError(f"rows= and cols= lay out the grid pages; mode={o.mode.value} draws one figure per "
                             "sample", hint="leave out rows= and cols=, or mode= (grid pages)")
        same = {f.name: getattr(o, f.name) for f in dataclasses.fields(DatasetOptions)}
        per_sample = PipelineOptions(**same, number=o.number, mode=o.mode.value)
        return pipeline.plan(session, config, None, per_sample, num_workers=o.num_workers)
    pipeline.check_rescale(o.rescale_factor, o.mode.value)
    arguments.model_spec(config, "config", modules=False)
    cfg = session.load_config(config, models=False)
    phase = o.phase.value
    ds_cfg, steps = datasets.dataset_config(cfg, phase)
    dataset = datasets.build_dataset(ds_cfg, phase, warn=session.warn, max_pixels=session.max_pixels)
    pipeline.check_skip(o.skip_type, steps, session.warn)
    skip = SKIP if o.skip_type is None else o.skip_type
    samples = datasets.PipelineSamples(dataset, steps, seed=o.seed, skip_types=skip)
    size = datasets.length(dataset)
    count = size if o.number < 0 else min(o.number, size)
    session.protect(*(dataset.name(i) for i in range(count)))
    rows, cols = ROWS if o.rows is None else o.rows, COLS if o.cols is None else o.cols
    params = dict(config=pipeline.config_label(config, cfg), phase=phase, number=count, rows=rows, cols=cols,
                  num_workers=o.num_workers, seed=o.seed, skip_type=list(skip))
    if o.channel_order is not None:
        params["channel_order"] = o.channel_order.value
    swap = pipeline.channel_swap(o.channel_order, pipeline.native_order(dataset, steps))
    return BrowseRun(session, dataset, samples, count, params, phase, rows, cols, o.num_workers, swap, since)


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
    render.check_figure(w, h, max_pixels, f"rows={rows} cols={cols}", f"a page of {n} samples ({r} x {c})",
                        hint="give fewer rows= or cols= (a page holds rows x cols samples)")


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


@dataclass(eq=False)
class BrowseRun(Run):
    """A grid run (:func:`plan`): its dataset, the samples' pipeline, the pages' grid and what the manifest
    records."""

    command: ClassVar[str] = "browse"
    # a page is drawn, encoded and written in one thread while the next one's samples load. One, not
    # IO_THREADS: browse has no --threads, so the session's threads are every core (at most 16) and that is 1
    # anyway, or up to 8 beyond 16 cores; and a page (~10 ms to draw, ~30 to encode) comes every 16 samples
    # (~65 ms of pipeline), so a second writer would only queue, or take a core from torch's threads
    writer_threads = 1
    writer_queue = 2

    session: Session
    dataset: Any
    samples: Any  # datasets.PipelineSamples
    count: int
    params: dict[str, Any]
    phase: str
    rows: int
    cols: int
    num_workers: int = 0
    swap: bool = False  # the panels' channels swapped (a channel_order other than the images' own)
    since: Since = (0, 0, 0.0)  # where the call began (:func:`mark`)

    def items(self) -> Iterator[BrowsePage]:
        """Each grid page as soon as it is full (the last one when the samples end), to draw
        (:attr:`BrowsePage.drawing`: the CLI's writer draws it where it encodes it, in its thread); bad samples
        go to ``session.skip``."""
        from functools import partial

        from visctl import datasets

        per_page = self.rows * self.cols
        drawn: list[BrowseSample] = []
        pages = 0
        cell_h = cell_w = 1  # the largest cell of the page being filled: refused as soon as it outgrows the budget

        def page() -> BrowsePage:
            first = pages * per_page
            samples = tuple(drawn)
            return BrowsePage(samples=samples, drawing=Drawing(
                f"browse_{self.phase}_{pages:03d}.png", partial(draw_page, samples, self.cols, self.swap),
                f"{self.phase} samples {first}-{first + len(samples) - 1}"))

        with self.session.progress(self.count, "browse") as advance:
            for item in datasets.iterate(self.samples, list(range(self.count)), num_workers=self.num_workers):
                advance()
                if item["error"]:
                    self.session.skip(item["name"], item["error"])
                    continue
                label = item["label"]
                name = self.dataset.class_name(label)
                text = "no label" if label is None else f"{label}: {name}" if name is not None else str(label)
                views = item["views"]
                text = f"#{item['index']} {text}" + (f" ({len(views)} views)" if len(views) > 1 else "")
                drawn.append(BrowseSample(item["name"], item["index"], label, name, text, pages,
                                          tuple(_readonly(v) for v in views),
                                          tuple(_readonly(m) for m in item["masks"])))
                ch, cw = cell_size(views, text)
                cell_h, cell_w = max(cell_h, ch), max(cell_w, cw)
                check_page(len(drawn), cell_h, cell_w, self.rows, self.cols, self.session.max_pixels)
                if len(drawn) == per_page:
                    yield page()
                    pages += 1
                    drawn = []
                    cell_h = cell_w = 1
        if drawn:
            yield page()

    def collect(self) -> BrowseResult:
        """Every page, drawn, as one :class:`BrowseResult`."""
        pages = tuple(page.drawn() for page in self.items())
        return BrowseResult(**self.gathered(), pages=pages)


@arguments.typed("browse")
def browse(config: Any, settings: BrowseOptions | None = None, *, options: RunOptions | None = None,
           session: Session | None = None, **fields: Any) -> BrowseResult | PipelineResult:
    """Samples of ``config``'s ``<phase>`` dataset after its whole pipeline, with their class names, in grids.

    Args:
        config: an mmengine config (a path, a dict or a ``Config``) with ``<phase>_dataloader.dataset``.
        settings: the run's options, a :class:`visctl.BrowseOptions` (phase, number, mode, rows, cols, ...)
            [default: its defaults].
        options: how the run writes and reports (:class:`visctl.RunOptions`).
        session: a :class:`visctl.Session` to run in (its notes, failures and writer) [default: a new one].
        **fields: fields of :class:`visctl.BrowseOptions` by name, replacing those of ``settings``
            (``rows=2``, ``number=-1``).

    Returns:
        A :class:`BrowseResult` of grid pages; with a ``mode`` other than grid (one figure per sample, as
        mmpretrain's browse_dataset.py ``--mode``), what :func:`visctl.pipeline` returns for the same options:
        a :class:`visctl.library.pipeline.PipelineResult` of the samples' views.
    """
    return plan(session or Session(options), config, BrowseOptions.build(settings, **fields)).collect()
