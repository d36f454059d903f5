"""``visctl.cam``: class activation maps of a classifier (or a segmentation model) on the original images.

:func:`cam` returns a :class:`CamResult`: per image, the maps as float32 arrays at the original image size keyed by
``(method, class)``, the class probabilities, the captions and (``score=True``) faithfulness scores, and the
figure the CLI draws (``<stem>_cam_<methods>_<layer>.png``, or ``.jpg``/``.webp`` with ``image_format``).
``result.save(folder)`` writes what ``visctl cam`` writes. Both run the same :class:`CamRun` (:func:`plan`, the
run protocol of :class:`visctl.library._run.Run`): the command writes each image as :meth:`CamRun.items` yields
it, its figures drawn in the writer's threads (:class:`Drawing`), off the model's; :meth:`CamRun.collect` gathers
them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.choices import Method, Task
from visctl.library._common import ModelInputs, batches, open_model
from visctl.library._run import IO_THREADS, Run, mark
from visctl.options import CamOptions
from visctl.results import Drawing, Figure, Result, save_picture
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.output.writer import OutputWriter


@dataclass(frozen=True)
class CamItem:
    """One image's maps: ``maps[(method, class)]`` is a float32 (H, W) array at the original image size."""

    path: str
    size: tuple[int, int]  # (height, width) of the original
    maps: dict[tuple[str, int], np.ndarray] = field(repr=False)
    captions: dict[tuple[str, int], str] = field(repr=False)  # each map's panel caption
    targets: tuple[str, ...]  # one per row: the class asked or predicted ("3 circle"), as the CLI lists them
    probabilities: np.ndarray | None = field(default=None, repr=False)  # softmax over the classes (classification)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # "<method>_c<class>" -> faithfulness
    figure: Figure | None = field(default=None, repr=False)
    raw_names: dict[tuple[str, int], str] = field(default_factory=dict, repr=False)  # the --save-raw .npy names
    input_info: dict[str, Any] = field(default_factory=dict, repr=False)  # the manifest's inputs entry
    drawing: Drawing | None = field(default=None, repr=False)  # the CLI's figure, drawn when written

    @property
    def picture(self) -> Figure | Drawing | None:
        """The figure, drawn (the library's) or to draw (the CLI's)."""
        return self.figure if self.figure is not None else self.drawing

    @property
    def name(self) -> str:
        return Path(self.path).name

    def write(self, writer: OutputWriter, target: Path | None = None, record_input: bool = True) -> None:
        """The figure, the raw maps (when asked) and the input's manifest entry, as the CLI writes them."""
        if self.picture is not None:
            save_picture(writer, self.picture, target)
        for key, name in self.raw_names.items():
            writer.save_array(name, self.maps[key], caption=f"{key[0]}_c{key[1]}", input=self.path)
        if record_input:
            writer.add_input(self.path, **self.input_info)


@dataclass(frozen=True)
class SkippedMethod:
    """A method that cannot run on this model (its other panels stay)."""

    method: str
    reason: str


@dataclass(frozen=True)
class CamResult(Result):
    """What :func:`cam` found: one :class:`CamItem` per image, and the run's remarks."""

    command: ClassVar[str] = "cam"

    items: tuple[CamItem, ...] = ()
    methods: tuple[str, ...] = ()
    target_layers: tuple[str, ...] = ()
    task: str = "classification"
    skipped_methods: tuple[SkippedMethod, ...] = field(default=(), repr=False)
    flat_maps: tuple[str, ...] = field(default=(), repr=False)
    ranking: tuple[dict[str, Any], ...] = field(default=(), repr=False)  # faithfulness ranking (score=True)

    def figures(self) -> list[Figure]:
        figs = [f for f in (_ranking_figure(list(self.ranking)),) if f is not None]
        return figs + [item.figure for item in self.items if item.figure is not None]

    def write(self, writer: OutputWriter) -> None:
        if self.skipped_methods:
            writer.manifest["skipped_methods"] = [dict(method=s.method, reason=s.reason) for s in self.skipped_methods]
        sides: set[int] = set()
        for item in self.items:
            _record_side(writer, sides, item)
            item.write(writer, record_input=False)
        _write_ranking(writer, list(self.ranking))
        if self.flat_maps:
            writer.manifest["flat_maps"] = list(self.flat_maps)


@arguments.typed("cam")
def cam(images: Any, model: Any, checkpoint: str | Path | None = None, settings: CamOptions | None = None, *,
        options: RunOptions | None = None, session: Session | None = None, **fields: Any) -> CamResult:
    """Class activation maps (Grad-CAM and friends) of ``model`` on ``images``.

    Args:
        images: a path (file, folder, glob), a numpy RGB image, a PIL image, or a list of them.
        model: a config file, a model name (``torchvision.resnet18``), a config dict, an ``nn.Module``, or a
            model opened with :func:`visctl.open`.
        checkpoint: its weights [default: the config's ``load_from``].
        settings: ``visctl cam``'s options, a :class:`visctl.CamOptions` [default: its defaults].
        options: the shared options (device, threads, seed, ...), a :class:`visctl.RunOptions`.
        session: the :class:`visctl.Session` to run in [default: a new one of ``options``].
        **fields: fields of :class:`visctl.CamOptions`, replacing ``settings``' (``method="all"``,
            ``"gradcam,layercam"`` or a list for several; ``image_format`` png, jpg or webp names the figures;
            ``amp`` bf16 or fp16 autocasts the forward on CUDA; ``target_mask`` is a mask file, as
            ``--target-mask``: an array is refused; ``colormap=None``: jet).

    Returns:
        A :class:`CamResult`. Nothing is written: ``result.save(folder)`` writes what the CLI writes.
    """
    from visctl import images as imgs

    arguments.model_spec(model)
    o = CamOptions.build(settings, **fields)
    session = session or Session(options)
    since = mark(session)
    methods = check(session, o)
    paths = imgs.as_images(images, note=session.note)
    check_figures(paths, methods, o, session.max_pixels)
    mi = open_model(session, model, str(checkpoint) if checkpoint else None, paths)
    run = plan(session, mi, o)
    run.since = since  # the images found and the model's loading are this call's too
    return run.collect()


def check(session: Session, settings: CamOptions) -> list[Method]:
    """What can be refused before the model loads (the methods, the region, ``amp``, options that conflict),
    and a warning for an option the run would not use; the methods to run."""
    methods, _ = check_options(settings)
    parse_box(settings.target_box)  # an inverted or empty box
    check_region(settings)
    check_amp(settings, session.device, methods)
    check_unused(methods, settings, session.warn)
    return methods


def figure_options(panel_size: int | None, methods: int, categories: int) -> str:
    """The options that size a cam figure, as an error names them."""
    said = [f"panel_size={panel_size}"] if panel_size else []
    if methods > 1:
        said.append(f"{methods} methods (method=)")
    if categories > 1:
        said.append(f"{categories} targets (target_category= or topk=)")
    return " with ".join(said) or "the image's size"


def check_figure(h: int, w: int, counts: list[int], side: int, max_pixels: int | None, panel_size: int | None,
                 name: str, area_only: bool = False) -> None:
    """Refuse a figure of :func:`visctl.render.map_figure` (``counts`` maps per row) over the pixel budget;
    ``area_only``: the image's orientation is not known (its header), so only its area counts."""
    from visctl import render

    fh, fw = render.map_figure_size(h, w, counts, side)
    if area_only:
        cols = min(1 + max(counts or [0]), 6)
        lines = sum(-(-(1 + c) // cols) for c in counts)
        ph, pw = render.fit_size(h, w, side)
        fh, fw = lines * ph, cols * pw  # the gaps left out: the same area either way round
    render.check_figure(fw, fh, max_pixels, figure_options(panel_size, max(counts or [0]), len(counts)),
                        f"the figure of {name}", hint="give a smaller panel_size=, or fewer methods or targets "
                        "(one figure holds a row per target, a panel per method)")


def check_figures(paths: list[Any], methods: list[Method], settings: CamOptions, max_pixels: int | None) -> None:
    """Before the model loads: refuse figures the options make over the pixel budget (each image's size from
    its header)."""
    from visctl import render
    from visctl.library._common import image_shapes

    rows = len(settings.target_category) if settings.target_category else max(1, int(settings.topk or 1))
    for h, w in image_shapes(paths):
        side = render.panel_size(h, w, settings.panel_size)
        check_figure(h, w, [len(methods)] * rows, side, max_pixels, settings.panel_size, f"a {w} x {h} image",
                     area_only=True)


def check_options(settings: CamOptions) -> tuple[list[Method], str]:
    """The methods and the colormap, refused before anything is loaded when they are not known. ``settings.method``:
    names (``all`` for every method), each run in the order given, once."""
    from visctl import _gradcam, cams, render
    from visctl.errors import ArgumentError

    if settings.method is None:
        raise ArgumentError("method=None names no CAM method", hint="pass a method name (gradcam), several "
                            "(['gradcam', 'layercam'] or 'gradcam,layercam') or 'all'")
    methods = list(dict.fromkeys(m for name in settings.method for m in cams.parse_method(name)))
    # the installed grad-cam must be one visctl supports, also when the methods compute natively (their
    # formulas are that version's; the other methods, smoothing and score use it): read from its metadata,
    # without importing it
    _gradcam.check()
    colormap = "jet" if settings.colormap is None else settings.colormap  # None: the default
    return methods, render.check_colormap(colormap)


def check_region(settings: CamOptions) -> None:
    """The region options' conflicts that the command line shows, refused before the model loads: a mask and a
    box both giving the region, and a region without its class."""
    from visctl.errors import ArgumentError

    given = settings.target_mask is not None and str(settings.target_mask) != "", settings.target_box is not None
    if all(given):
        raise ArgumentError("target_mask= and target_box= both give the region", hint="give one of them")
    if any(given) and not settings.target_category:
        raise ArgumentError(f"{'target_mask=' if given[0] else 'target_box='} gives a region, and no class for it",
                            hint="add target_category=NAME_OR_INDEX (-c): the class whose map covers the region")


def parse_box(target_box: str | Sequence[float] | None) -> list[float] | None:
    """``target_box``: ``x0,y0,x1,y1`` (or four numbers) as floats, refused unless x0 < x1 and y0 < y1 and it
    reaches into the image (x1, y1 > 0): an inverted or empty box was silently a region of another shape."""
    import math

    from visctl.errors import ArgumentError

    if target_box is None:
        return None
    hint = "four numbers x0,y0,x1,y1 in original pixels: the left, top, right and bottom edges (x0 < x1, y0 < y1)"
    try:
        parts = target_box.split(",") if isinstance(target_box, str) else list(target_box)
        box = [float(v) for v in parts]
    except (TypeError, ValueError):
        raise ArgumentError(f"target_box={target_box!r} is not four numbers", hint=hint) from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ArgumentError(f"target_box={target_box!r} is not four finite numbers", hint=hint)
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        swapped = f"{min(x0, x1):g},{min(y0, y1):g},{max(x0, x1):g},{max(y0, y1):g}"
        raise ArgumentError(f"target_box={target_box!r} is " + ("inverted" if x1 < x0 or y1 < y0 else "empty")
                            + f" (x0={x0:g}, x1={x1:g}, y0={y0:g}, y1={y1:g})",
                            hint=hint + (f"; did you mean {swapped}?" if x0 != x1 and y0 != y1 else ""))
    if x1 <= 0 or y1 <= 0:
        raise ArgumentError(f"target_box={target_box!r} lies left of or above the image",
                            hint=hint + "; the image's top-left pixel is 0,0")
    return box


def check_unused(methods: list[Method], settings: CamOptions, warn: Callable[[str], None]) -> None:
    """Options the run would not use, before the model loads: ``topk`` beside ``target_category`` (which
    names the classes itself) is refused; ``ratio_channels_to_ablate`` without AblationCAM gets one warning."""
    from visctl.errors import ArgumentError

    if settings.target_category and settings.topk != 1:
        raise ArgumentError(f"topk={settings.topk} and target_category= both choose the classes",
                            hint="give one of them: topk=K maps the top K predicted classes, target_category= "
                            "the classes named")
    if settings.ratio_channels_to_ablate != 1.0 and Method.ablationcam not in methods:
        warn(f"ratio_channels_to_ablate={settings.ratio_channels_to_ablate:g} has no effect: it is AblationCAM's, "
             f"and the methods are {', '.join(m.value for m in methods)}")


def check_amp(settings: CamOptions, device: str, methods: list[Method]) -> tuple[str, Any] | None:
    """``amp``'s (device type, dtype) for :class:`visctl.cams.CamEngine`, or None; refused on a CPU and for
    methods that need float32 throughout (:func:`visctl.cams.autocast_dtype`), before the model loads."""
    from visctl import cams

    dtype = cams.autocast_dtype(settings.amp.value, device, methods)
    return None if dtype is None else (str(device).split(":")[0], dtype)


def plan(session: Session, mi: ModelInputs, settings: CamOptions, *, save_path: Path | None = None) -> CamRun:
    """Plan a run on an opened model (:func:`visctl.library._common.open_model`): the task, the layers, the
    classes; :meth:`CamRun.items` does the work. ``save_path``: the CLI's ``--save-path``, an image file for
    one input's figure or else a folder [default: the run's ``--out-dir``]."""
    from visctl import config
    from visctl.errors import VisctlError

    o = settings
    check_region(o)
    parse_box(o.target_box)
    traced = None  # the example's traced forward, asked once: whether it predicts masks, then the layers' shapes
    configured = None
    if o.task is Task.auto:
        from visctl import segmentation
        from visctl.layers import trace

        configured = config.tool_option(mi.cfg, "task")
        if configured is None:
            traced = trace(mi.model, mi.example)
        segment = configured == "segmentation" or (traced is not None
                                                   and segmentation.is_segmentation_output(traced[1]))
    else:
        segment = o.task is Task.segmentation
    if segment:
        return _SegmentationRun(session, mi, o, inferred=o.task is Task.auto and configured != "segmentation")
    if o.target_mask or o.target_box:
        raise VisctlError("target_mask= and target_box= are regions of a segmentation model's class",
                          hint="use them with a segmentation model (task=segmentation)")
    return CamRun(session, mi, o, save_path=save_path, traced=traced)


class CamRun(Run):
    """One classification run: its parameters (the manifest's), then one :class:`CamItem` per image
    (:meth:`items`, a generator that the CLI writes as it goes), then :meth:`close`."""

    command = "cam"
    task = "classification"
    writer_threads = IO_THREADS  # the CLI's figures are drawn, encoded and written beside the run
    target: Path | None = None  # the CLI's figure file (plan's save_path) when there is one image
    score_model: Any  # what score runs: the CAM model, or a segmenter's region scorer (its .region set per call)

    def __init__(self, session: Session, mi: ModelInputs, settings: CamOptions, *, save_path: Path | None = None,
                 traced: Any = None) -> None:
        """``save_path``: as :func:`plan`'s; ``traced``: the example's traced forward, when already run."""
        from visctl import cams, config, render
        from visctl.library._common import output_names
        from visctl.output.checks import single_output

        o = settings
        self._begin(session, mi, o)
        if save_path is not None and single_output(save_path, len(mi.paths)):  # one image's figure: that file
            self.out_dir, self.target = save_path.parent, save_path
        else:
            self.out_dir = save_path
        methods, model, paths = self.methods, mi.model, mi.paths
        from visctl import provenance
        from visctl.layers import trace

        traced = traced if traced is not None else trace(model, mi.example)
        setup = cams.plan(model, mi.example, o.target_layers, o.vit_like, o.num_extra_tokens,
                          config.tool_option(mi.cfg, "target_layers"), traced=traced)
        self.setup = setup
        # what the outputs are, said as known: class scores (named or numbered), or an embedding's features
        self.unit = "class"
        headless = provenance.output_kind(model, traced)
        if headless:
            self.unit = "embedding feature"
            self.names = None
            if o.score:
                from visctl.errors import ModelError

                raise ModelError(f"score=True rates a map by its class's softmax probability, and {headless}",
                                 hint="drop score=True, or give the model with its classifier")
            session.warn(f"{headless}: the maps explain single features of it (the largest with topk=, or "
                         "target_category=N), not classes, and no probability is given")
        else:
            self.names, mismatched = output_names(session, mi, setup.num_classes)
            if mismatched:
                self.unit = "output unit"
        self.categories = cams.resolve_categories(o.target_category or (), self.names, setup.num_classes)
        if not self.categories:
            cams.check_topk(o.topk, setup.num_classes)
        self.layerless = _say_layerless(session, methods, o.target_layers)
        for note in setup.notes:
            if not (self.layerless and note.startswith(("target layers from the config", "default target layer"))):
                session.note(note)
        for warning in setup.warnings:
            session.warn(warning)
        per_image = sum(cams.forwards_per_image(m, setup.layer_channels, o.ratio_channels_to_ablate) for m in methods)
        self.slots = len(self.categories) or o.topk
        passes = per_image * self.slots * (6 if o.aug_smooth else 1)
        if o.score:
            from visctl import faithfulness

            passes += faithfulness.FORWARDS_PER_IMAGE + faithfulness.forwards_per_map() * len(methods) * self.slots
            self.score_model = cams.build_cam_model(model, "none")
        if passes > 10:
            session.log(f"{len(paths)} image(s) x {passes} forward passes each = {len(paths) * passes} forwards "
                        "(ScoreCAM/AblationCAM perturb every channel; ratio_channels_to_ablate= lowers it)")
        self.params = dict(
            inputs=[str(p) for p in paths], config=mi.cfg_spec, checkpoint=mi.checkpoint,
            methods=[m.value for m in methods], target_layers=None if self.layerless else setup.layers,
            **_layerless_param(methods), target_category=self.categories or None,
            topk=None if self.categories else o.topk, vit_like=setup.vit_like, aug_smooth=o.aug_smooth,
            eigen_smooth=o.eigen_smooth, device=session.device, threads=session.threads, batch_size=o.batch_size,
            panel_size=o.panel_size or f"the original's long side, {render.PANEL_FLOOR}..{render.PANEL_CAP}",
            format=self.image_format, amp=_amp_name(self.autocast))
        self.engines = [cams.CamEngine(model, m, setup.layers, setup.layouts, batch_size=o.batch_size,
                                       ratio_channels_to_ablate=o.ratio_channels_to_ablate, autocast=self.autocast)
                        for m in methods]
        self.unoriented: list[str] = []  # EigenCAM / KPCA-CAM maps whose gradient map gave no sign
        # the file names' layer part: none when no method used a target layer (FullGrad alone)
        self.layer_tag = "" if self.layerless else "_" + "+".join(setup.layers).replace(".", "_")

    def _begin(self, session: Session, mi: ModelInputs, settings: CamOptions) -> None:
        """What every run (classification, segmentation) starts with: the methods, the colormap and the autocast
        its options give, the model's memory format, and the run-wide findings, empty."""
        self.session, self.mi, self.settings = session, mi, settings
        self.methods, self.colormap = check_options(settings)
        self.autocast = check_amp(settings, session.device, self.methods)
        self.image_format = settings.image_format.value
        self.writer_queue = settings.batch_size  # one batch's figures wait for the writer's threads
        self.draw_in_writer = True  # the CLI's figures are drawn in the writer's threads (CamItem.drawing)
        self.channels_last = _channels_last(mi, session.device)
        self.started = time.time()
        self.since = mark(session)  # the library call marks its start earlier (:func:`cam`)
        self.skipped: list[SkippedMethod] = []
        self.blank: list[str] = []
        self.blank_at: list[str] = []
        self.sides: set[int] = set()
        self.ranking: list[dict] = []
        self.scored: dict[str, list] = {}
        self.scored_at: dict[str, list[str]] = {}  # the input of each score (merging torchrun's ranks)
        self.tag = "+".join(m.value for m in self.methods) if len(self.methods) < 4 else "all"

    # -- the work --
    def _skip_method(self, engine: Any, reason: str) -> SkippedMethod:
        self.session.log(f"{engine.method.value} cannot run on this model; skipped ({reason})")
        self.engines.remove(engine)
        skipped = SkippedMethod(engine.method.value, reason)
        self.skipped.append(skipped)
        return skipped

    def items(self) -> Iterator[CamItem | SkippedMethod]:
        """One :class:`CamItem` per image as it finishes (and a :class:`SkippedMethod` when a method fails)."""
        import functools
        import sys
        import traceback

        from visctl import cams, classes, featmaps, render, transforms
        from visctl.errors import VisctlError
        from visctl.output.writer import input_stems

        session, mi, names = self.session, self.mi, self.names
        targets: list[Any]  # per image a cams.ClassTarget or cams.RankTarget: both have .category
        for engine in list(self.engines):
            reason = cams.unsupported(engine.method, self.setup.layouts)
            if reason:
                yield self._skip_method(engine, reason)
        stems = input_stems(mi.paths)
        for b in batches(session, mi, self.settings.batch_size, "cam", channels_last=self.channels_last, grad=True):
            group, batch = b.items, b.tensor
            rows: list[list[tuple[str, list]]] = [[] for _ in group]
            maps_of: list[dict] = [{} for _ in group]
            captions_of: list[dict] = [{} for _ in group]
            scores_of: list[dict] = [{} for _ in group]
            probs_of: list[Any] = [None for _ in group]
            nonfinite: set[int] = set()  # images whose scores or maps are NaN/inf: skipped, not drawn
            if self.settings.score:  # each image's clean, mean-colour and blurred forwards serve all its maps
                from visctl import faithfulness

                scorer = faithfulness.Scorer(self.score_model, batch, seed=session.seed or 0)
            for slot in range(self.slots):
                # a rank is resolved on the clean image by the first method, then shared by all
                targets = ([cams.ClassTarget(self.categories[slot]) for _ in group] if self.categories
                           else [cams.RankTarget(slot) for _ in group])
                panels: list[list] = [[] for _ in group]
                for engine in list(self.engines):
                    try:
                        maps, logits = _maps(engine, batch, targets, self.settings.aug_smooth,
                                             self.settings.eigen_smooth, alone=self.settings.score)
                    except VisctlError:
                        raise
                    except Exception as err:  # a method that cannot run on this model: the others go on
                        from visctl.errors import out_of_memory

                        if out_of_memory(err) is not None:  # not the method's fault: the run's (exit 2, in words)
                            raise
                        if session.debug:
                            traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
                        first_line = (str(err).splitlines() or [""])[0]
                        yield self._skip_method(engine, f"{type(err).__name__}: {first_line}")
                        continue
                    probs = logits.float().softmax(-1).cpu()  # of the clean batch (of class scores only)
                    self.unoriented += [f"{group[i][0].name}: {engine.method.value} {self._caption(targets[i].category)}"
                                        for i in engine.unoriented]
                    nonfinite |= cams.nonfinite_rows(logits, maps)
                    if self.settings.score:
                        found = scorer(maps, [t.category for t in targets])
                    for i, (p, img, state) in enumerate(group):
                        cat = targets[i].category
                        if probs_of[i] is None and self.unit == "class":
                            probs_of[i] = probs[i].numpy().astype("float32")
                        fmap = transforms.to_original(maps[i], state, img.shape[:2]).astype("float32")
                        caption = (f"{engine.method.value} | {classes.label(names, cat)} p={float(probs[i, cat]):.2f}"
                                   if self.unit == "class" else f"{engine.method.value} | {self._caption(cat)}")
                        if featmaps.flat(maps[i], 1.0):  # grad-cam scales to [0, 1]: constant = blank
                            caption += " | BLANK: constant map (try another --target-layers or method)"
                            self.blank.append(f"{p.name}: {engine.method.value} {self._caption(cat)}")
                            self.blank_at.append(str(p))
                        if self.settings.score:
                            caption += " | " + found[i].caption()
                            self.scored.setdefault(engine.method.value, []).append(found[i])
                            self.scored_at.setdefault(engine.method.value, []).append(str(p))
                            scores_of[i][f"{engine.method.value}_c{cat}"] = found[i].__dict__
                        panels[i].append((caption, fmap))
                        maps_of[i][(engine.method.value, cat)] = fmap
                        captions_of[i][(engine.method.value, cat)] = caption
                if any(t.category is None for t in targets):  # every method was skipped
                    cams.resolve_ranks(targets, cams.predict(mi.model, batch))
                for i, t in enumerate(targets):
                    rows[i].append((self._caption(t.category), panels[i]))
            for i, (p, img, _state) in enumerate(group):
                if i in nonfinite:
                    session.skip(p, "the model's scores or maps for this image are NaN or infinite")
                    b.advance()
                    continue
                cats = [r[0] for r in rows[i]]
                figure = drawing = None
                if any(row_panels for _, row_panels in rows[i]):
                    side = render.panel_size(*img.shape[:2],  # type: ignore[call-arg]  # *shape is (h, w)
                                             self.settings.panel_size)
                    check_figure(img.shape[0], img.shape[1], [len(r[1]) for r in rows[i] if r[1]], side,
                                 session.max_pixels, self.settings.panel_size, p.name)
                    draw = functools.partial(render.map_figure, img, [r for r in rows[i] if r[1]],
                                             alpha=self.settings.alpha, colormap=self.colormap, panel_side=side)
                    name = f"{stems[p]}_cam_{self.tag}{self.layer_tag}.{self.image_format}".replace("++", "pp")
                    figure, drawing = self._figure(name, draw, f"{p.name}: {', '.join(cats)}",
                                                   dict(input=str(p), panel_size=side))
                raw_names = ({key: f"{stems[p]}_cam_{key[0]}_c{key[1]}"
                              f"{'' if key[0] in LAYERLESS else self.layer_tag}.npy".replace("++", "pp")
                              for key in maps_of[i]} if self.settings.save_raw else {})
                info: dict[str, Any] = dict(size=list(img.shape[:2]), targets=cats,
                                            **({"scores": scores_of[i]} if self.settings.score else {}))
                yield CamItem(path=str(p), size=(int(img.shape[0]), int(img.shape[1])), maps=maps_of[i],
                              captions=captions_of[i], targets=tuple(cats), probabilities=probs_of[i],
                              scores=scores_of[i], figure=figure, raw_names=raw_names, input_info=info,
                              drawing=drawing)
                b.advance()

    def _caption(self, category: Any) -> str:
        """``class 282 tiger cat`` / ``class 282``, or what the output is when it is not a class score
        (``embedding feature 36``, ``output unit 7``)."""
        from visctl import classes

        if self.unit == "class":
            return classes.caption(self.names, category)
        return f"{self.unit} {int(category)}"

    def _figure(self, name: str, draw: Callable[[], Any], caption: str, info: dict[str, Any],
                ) -> tuple[Figure | None, Drawing | None]:
        """The library's figure, drawn now, or the CLI's, drawn by the writer (:attr:`draw_in_writer`)."""
        if self.draw_in_writer:
            return None, Drawing(name, draw, caption, info)
        return Drawing(name, draw, caption, info).figure(), None

    # -- the CLI's writing, item by item --
    def record(self, writer: OutputWriter, item: CamItem | SkippedMethod, target: Path | None = None) -> None:
        """Write one thing :meth:`items` yielded, keeping the manifest true at once; ``target``: the figure's
        file [default: :func:`plan`'s ``save_path`` when it names one]."""
        if isinstance(item, SkippedMethod):
            # one failure entry per method (the run exits 1 and finish() warns once); its other panels stay
            writer.manifest["skipped_methods"] = [dict(method=s.method, reason=s.reason) for s in self.skipped]
            writer.fail(f"--method {item.method}", f"skipped: {item.reason}")
            return
        _record_side(writer, self.sides, item)
        item.write(writer, target=target or self.target)

    def merge_ranks(self, writer: OutputWriter) -> None:
        """Under torchrun, after the last image: every rank's records and run-wide findings (scores, blank
        maps, panel sizes, skipped methods) merged as a one-process run has them, on every rank."""
        from visctl import distributed, render

        if self.session.world <= 1:
            return
        mine = dict(sides=sorted(self.sides), skipped=[(s.method, s.reason) for s in self.skipped],
                    blank=list(zip(self.blank_at, self.blank)),
                    scored={m: list(zip(self.scored_at[m], v)) for m, v in self.scored.items()})
        paths, chunk = self.mi.paths, self.settings.batch_size
        parts = distributed.merge_records(writer, paths, chunk, mine)
        self.sides = {int(s) for part in parts for s in part["sides"]}
        if self.sides:
            writer.manifest["params"]["panel_size"] = render.sizes_param(self.sides)
        skipped: dict[str, str] = {}
        for part in parts:
            for method, reason in part["skipped"]:
                skipped.setdefault(method, reason)
        self.skipped = [SkippedMethod(m, r) for m, r in skipped.items()]
        if self.skipped:
            writer.manifest["skipped_methods"] = [dict(method=s.method, reason=s.reason) for s in self.skipped]
        self.blank = distributed.in_run_order([part["blank"] for part in parts], paths, chunk)
        methods = list(dict.fromkeys(m for part in parts for m in part["scored"]))
        self.scored = {m: distributed.in_run_order([part["scored"].get(m, []) for part in parts], paths, chunk)
                       for m in methods}

    def close(self, writer: OutputWriter | None = None) -> None:
        """After the last image (or an interrupt): the timing, the faithfulness ranking, the blank-map warning."""
        if writer is not None:
            writer.manifest["timings"]["cam_s"] = round(time.time() - self.started, 3)
        self._rank_scores(writer)
        if self.unoriented:
            self.session.note(f"{len(self.unoriented)} EigenCAM/KPCA-CAM map(s) oriented by the channel mean of the "
                              f"activations, e.g. {self.unoriented[0]}: the class's gradient-weighted map of the layer "
                              "is flat or uncorrelated with the principal component, so it gives no sign")
        if self.blank:
            if writer is not None:
                writer.manifest["flat_maps"] = self.blank
            self.session.warn(f"{len(self.blank)} map(s) are constant (blank), e.g. {self.blank[0]}: the layer gives "
                              "no signal for this method (a zero head, or a layer before its activation); try "
                              "another target_layers= or method")

    def _rank_scores(self, writer: OutputWriter | None) -> None:
        """With ``score``: rank the methods by their faithfulness, say it, and write the ranking image."""
        from visctl import faithfulness

        if self.settings.score and self.scored:
            self.ranking = faithfulness.ranking(self.scored)
            self.session.log("faithfulness (ROAD combined; deletion AUC lower and insertion AUC higher are "
                             "better):")
            for line in faithfulness.table(self.ranking).splitlines():  # a log line is one line (soft-wrapped)
                self.session.log(line)
            if writer is not None:
                _write_ranking(writer, self.ranking)

    def collect(self) -> CamResult:
        """Run every image and gather the frozen result (the library call)."""
        self.draw_in_writer = False  # each figure drawn now: the result holds it
        found = [x for x in self.items() if isinstance(x, CamItem)]
        self.close()
        skipped = tuple((f"--method {s.method}", f"skipped: {s.reason}") for s in self.skipped)
        params = dict(self.params)
        sides = {int(item.figure.info["panel_size"]) for item in found
                 if item.figure is not None and "panel_size" in item.figure.info}
        if sides:
            from visctl import render

            params["panel_size"] = render.sizes_param(sides)
        return CamResult(**self.gathered(params, failures=skipped),
                         inputs=tuple(dict(path=x.path, **x.input_info) for x in found), items=tuple(found),
                         methods=tuple(m.value for m in self.methods), target_layers=tuple(self._layers()),
                         task=self.task, skipped_methods=tuple(self.skipped), flat_maps=tuple(self.blank),
                         ranking=tuple(self.ranking))

    def _layers(self) -> list[str]:
        return [] if self.layerless else list(self.setup.layers)


#: methods that use no target layer (grad-cam's FullGrad hooks every Conv2d/BatchNorm2d with a bias instead)
LAYERLESS = ("fullgrad",)


def _say_layerless(session: Session, methods: Sequence[Any], given: Sequence[str] | None) -> bool:
    """Say once (a warning when target layers were given, else a note) that FullGrad uses no target layer;
    True when no method uses one, so that nothing is labelled with a layer."""
    ignoring = [m.value for m in methods if m.value in LAYERLESS]
    if not ignoring:
        return False
    only = len(ignoring) == len(methods)
    what = (f"{ignoring[0]} uses no target layer: its map combines the gradients at the input and at every "
            "Conv2d/BatchNorm2d layer with a bias")
    if given:
        session.warn(f"{what}; target_layers={list(given)!r} is ignored for it"
                     + ("" if only else " (the other methods use it)"))
    else:
        session.note(what + ("" if only else "; the target layers are the other methods'"))
    return only


def _layerless_param(methods: Sequence[Any]) -> dict[str, list[str]]:
    """The params' record of the methods that ignore ``target_layers`` (beside methods that use them)."""
    ignoring = [m.value for m in methods if m.value in LAYERLESS]
    return {"target_layers_ignored_by": ignoring} if ignoring and len(ignoring) < len(methods) else {}


def _amp_name(autocast: tuple[str, Any] | None) -> str:
    """The manifest's ``amp``: off, bf16 or fp16."""
    if autocast is None:
        return "off"
    return "bf16" if "bfloat16" in str(autocast[1]) else "fp16"


def _channels_last(mi: ModelInputs, device: str) -> bool:
    """Whether the run puts the model in channels_last (:func:`visctl.model_inputs.use_channels_last`), and does:
    only a model visctl built, and only when its forward runs so; a caller's nn.Module keeps its memory format.

    A forward may ``.view`` a conv's output (mmpretrain's VGG: ``x.view(x.size(0), -1)`` before its classifier),
    which an NHWC tensor refuses: one forward of the example in channels_last decides, and a model that fails
    it stays NCHW.
    """
    from visctl.model_inputs import use_channels_last

    if mi.cfg_spec == "<nn.Module>" or not use_channels_last(mi.model, device):
        return False
    import torch

    mi.model.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            mi.model(mi.example.contiguous(memory_format=torch.channels_last))  # the example is on the device
    except RuntimeError:
        mi.model.to(memory_format=torch.contiguous_format)
        return False
    return True


def _record_side(writer: OutputWriter, sides: set[int], item: CamItem) -> None:
    fig = item.picture
    if fig is not None and "panel_size" in fig.info:
        from visctl import render

        sides.add(int(fig.info["panel_size"]))
        writer.manifest["params"]["panel_size"] = render.sizes_param(sides)


def _maps(engine: Any, batch: Any, targets: list[Any], aug_smooth: bool, eigen_smooth: bool,
          alone: bool) -> tuple[Any, Any]:
    """The engine's maps and clean logits for the batch; ``alone`` (--score): each image's in a batch of its
    own, so that its maps, and so its scores, do not depend on the other images (a batched convolution
    rounds each image a little differently with the batch's size, and ROAD's percentile masks amplify it).
    The scores' own forwards cost ~30 times the map's, so this costs little."""
    if not alone or len(targets) == 1:
        return engine(batch, targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
    import numpy as np
    import torch

    parts = [engine(batch[i:i + 1], targets[i:i + 1], aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
             for i in range(len(targets))]
    return np.concatenate([m for m, _ in parts]), torch.cat([lg for _, lg in parts])


def _ranking_png(rows: list[dict]) -> bytes | None:
    """The ranking image (several methods scored), as the CLI writes it."""
    if len(rows) <= 1:
        return None
    from visctl import faithfulness
    from visctl.render import figure_png

    return figure_png(faithfulness.ranking_figure(rows))


def _ranking_figure(rows: list[dict]) -> Figure | None:
    data = _ranking_png(rows)
    if data is None:
        return None
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy()  # type: ignore[index]  # our PNG
    return Figure("cam_ranking.png", image, "methods ranked by faithfulness (ROAD combined)")


def _write_ranking(writer: OutputWriter, rows: list[dict]) -> None:
    """The methods ranked by faithfulness: in the manifest, and as the gallery's first image."""
    if not rows:
        return
    writer.manifest["faithfulness_ranking"] = rows
    data = _ranking_png(rows)
    if data is not None:
        target = writer.write_bytes("cam_ranking.png", data)
        writer.add_output(target, "image", caption="methods ranked by faithfulness (ROAD combined)")
        outputs = writer.manifest["outputs"]
        outputs.insert(0, outputs.pop())  # the gallery opens with the ranking


class _SegmentationRun(CamRun):
    """Segmentation: one panel per class present (or asked), its map over its region, the predicted outlines."""

    task = "segmentation"

    def __init__(self, session: Session, mi: ModelInputs, settings: CamOptions, *, inferred: bool = False) -> None:
        """``inferred``: the task was taken from the model's per-pixel output, not given (``task``, the config)."""
        from visctl import cams, config, segmentation
        from visctl.errors import InputError
        from visctl.layers import detect_layout, find_layer, probe

        o = settings
        self._begin(session, mi, o)
        methods = self.methods
        unused = [name for name, on in (
            (f"topk={o.topk}", o.topk != 1), (f"vit_like={o.vit_like}", o.vit_like is not None),
            (f"num_extra_tokens={o.num_extra_tokens}", o.num_extra_tokens is not None),
            ("aug_smooth=True", o.aug_smooth), ("eigen_smooth=True", o.eigen_smooth),
            (f"ratio_channels_to_ablate={o.ratio_channels_to_ablate:g}",
             Method.ablationcam in methods and o.ratio_channels_to_ablate != 1.0),
            (f"panel_size={o.panel_size}", o.panel_size is not None)) if on]
        if unused:  # a segmentation run maps each class's region at the model's own layers, as they are
            session.warn(f"{', '.join(unused)} had no effect: a segmentation model's maps do not use "
                         + ("it" if len(unused) == 1 else "them"))
        target_mask = self.target_mask = Path(o.target_mask) if o.target_mask else None
        model = mi.model
        example_logits = segmentation.logits(model, mi.example)
        if not segmentation.is_segmentation_output(example_logits):
            from visctl.errors import ModelError

            raise ModelError(f"segmentation (task=segmentation, or the config's visctl.task) needs per-pixel "
                             f"class logits (N, C, H, W), and this model outputs {tuple(example_logits.shape)}",
                             hint="leave task= out (auto: the model's output decides) or use task=classification; "
                             "set visctl.task in the config only for a segmentation model")
        self.num_classes = int(example_logits.shape[1])
        from visctl.library._common import class_names

        self.names = class_names(session, mi, self.num_classes)
        self.asked = cams.resolve_categories(o.target_category or (), self.names, self.num_classes)
        self.background = segmentation.background_index(self.names, model)
        pr = probe(model, mi.example, logits=False)
        in_hw = (int(mi.example.shape[2]), int(mi.example.shape[3]))
        layers = [find_layer(model, n)[0] for n in o.target_layers or config.tool_option(mi.cfg, "target_layers") or []]
        if not layers:
            chosen = segmentation.mmseg_default_layer(model, mi.example)
            if chosen is not None:
                session.note(f"default target layer {chosen[0]}: {chosen[1]}")
            layers = [chosen[0] if chosen else segmentation.default_layer(pr, self.num_classes, inferred)]
        self.layers = layers
        layouts = [detect_layout(pr.shape_of(n), in_hw, False, None, n) for n in layers]
        self.layerless = _say_layerless(session, methods, o.target_layers)
        session.note(("segmentation (taken from the model's per-pixel output; task= to say otherwise)" if inferred
                      else "segmentation") + f": target layers {'none' if self.layerless else ', '.join(layers)}; regions: "
                     + ("target_mask=" if target_mask else "target_box=" if o.target_box else "the predicted masks"))
        box = self.box = parse_box(o.target_box)
        if (target_mask or box) and not self.asked:
            raise InputError("a region needs its class", hint="add target_category=NAME_OR_INDEX")
        # the mask, read once (an unreadable one is the run's error); its emptiness and size are each input's
        self.mask = segmentation.read_region_mask(target_mask, session.max_pixels) if target_mask else None
        cam_model, why = segmentation.cam_model(model)
        if why:
            session.note(why)
        self.engines = [cams.CamEngine(cam_model, m, layers, layouts, batch_size=o.batch_size, autocast=self.autocast)
                        for m in methods]
        self.score_model = segmentation.region_score(model) if o.score else None
        self.params = dict(inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint,
                           task="segmentation", methods=[m.value for m in methods],
                           target_layers=None if self.layerless else layers, **_layerless_param(methods),
                           target_category=self.asked or None,
                           target_mask=str(target_mask) if target_mask else None, target_box=box,
                           background=self.background, device=session.device, format=self.image_format,
                           amp=_amp_name(self.autocast))

    def _layers(self) -> list[str]:
        return [] if self.layerless else list(self.layers)

    def _given_region(self, img: Any, state: Any, hw: tuple[int, int]) -> Any:
        """The --target-box / --target-mask region in the model input's pixels (None: the predicted masks), or
        why this image has none: a box outside it, a mask of another size or with no pixel inside, a region
        that the test pipeline crops away."""
        from visctl import segmentation

        h, w = img.shape[:2]
        if self.box is not None:
            box = self.box
            text = ",".join(f"{v:g}" for v in box)
            if box[0] >= w or box[1] >= h:
                return f"--target-box {text} lies outside the {w}x{h} image: no region, no map"
            region = segmentation.region_from_box(box, state, hw)
            what = f"--target-box {text}"
        elif self.mask is not None:
            m = self.mask
            if m.shape != (h, w):
                return (f"--target-mask {self.target_mask} is {m.shape[1]}x{m.shape[0]}, the image is {w}x{h}: "
                        "give a mask of the image's size")
            if not m.any():
                return (f"--target-mask {self.target_mask} is empty: no pixel of it is nonzero (an image with an "
                        "alpha channel: no nonzero alpha), no region, no map")
            region = segmentation.region_from_mask(m, state, hw)
            what = f"--target-mask {self.target_mask}"
        else:
            return None
        if not region.any():
            return f"{what}: its region lies where the test pipeline crops the image away: no map"
        return region

    def items(self) -> Iterator[CamItem | SkippedMethod]:
        import functools

        import numpy as np
        from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

        from visctl import classes, faithfulness, render, segmentation, transforms
        from visctl.output.writer import input_stems

        session, mi, names, box = self.session, self.mi, self.names, self.box
        from visctl.classes import dataset_palette

        # the dataset's own palette where it has one (mmseg's, as its visualizer paints the classes)
        colors = dataset_palette(mi.cfg, self.num_classes) or render.class_colors(max(self.num_classes, 1))
        stems = input_stems(mi.paths)
        for b in batches(session, mi, self.settings.batch_size, "cam", channels_last=self.channels_last, grad=True):
            batch = b.tensor
            out = segmentation.logits(mi.model, batch)
            preds = out.argmax(1).cpu().numpy()
            for i, (p, img, state) in enumerate(b.items):
                pred = preds[i]
                present = [int(c) for c in np.unique(pred) if int(c) != self.background]
                wanted = self.asked or present
                rows: list[tuple[str, list]] = []
                maps: dict[tuple[str, int], Any] = {}
                captions: dict[tuple[str, int], str] = {}
                found_scores: dict[str, dict] = {}
                # the prediction on the photo's pixels: outlines, and the size of a class's region in the captions
                on_original = segmentation.prediction_on_original(mi.model, out[i], pred, state, img.shape[:2])
                given = self._given_region(img, state, pred.shape)  # a box or mask: the same for every class
                if isinstance(given, str):  # no region to explain: a failed input, said as what it is
                    session.skip(p, given)
                    b.advance()
                    continue
                for c in wanted:
                    region = given if given is not None else (pred == c).astype(np.float32)
                    label = classes.label(names, c)  # the class's name, or its index when it has none
                    if not region.any():
                        rows.append((f"{classes.caption(names, c)}: no pixels of it predicted", []))
                        continue
                    panels = []
                    for engine in self.engines:
                        cmaps, _ = engine(batch[i:i + 1], [SemanticSegmentationTarget(c, region)])
                        fmap = transforms.to_original(cmaps[0], state, img.shape[:2]).astype("float32")
                        # the class's pixels on the photo (the model's input may be 1024x768 for a 480x360 photo);
                        # a given box or mask: its region
                        size = (f"{int((on_original == c).sum())} px" if box is None and self.target_mask is None
                                else "the given region")
                        text = f"{engine.method.value} | {label if label != str(c) else classes.caption(names, c)} ({size})"
                        if self.score_model is not None:
                            self.score_model.region = region
                            f = faithfulness.score(self.score_model, batch[i:i + 1], cmaps, [c],
                                                   seed=session.seed or 0)[0]
                            text += " | " + f.caption()
                            self.scored.setdefault(engine.method.value, []).append(f)
                            self.scored_at.setdefault(engine.method.value, []).append(str(p))
                            found_scores[f"{engine.method.value}_c{c}"] = f.__dict__
                        panels.append((text, fmap))
                        maps[(engine.method.value, c)] = fmap
                        captions[(engine.method.value, c)] = text
                    rows.append((classes.caption(names, c), panels))
                base = segmentation.outlines(img, on_original, present, colors)
                drawn = [r for r in rows if r[1]]
                missing = [r[0].split(": ")[0] for r in rows if not r[1]]
                if missing:  # the manifest's targets say it too; the terminal must, when no picture comes of it
                    session.warn(f"{p.name}: no pixel predicted as {', '.join(missing)}: no map for "
                                 f"{'them' if len(missing) > 1 else 'it'}"
                                 + ("" if drawn else ", and no picture (predicted: " + ", ".join(
                                     classes.label(names, c) for c in present) + ")"))
                figure = drawing = None
                if drawn:
                    draw = functools.partial(render.map_figure, base, drawn, alpha=self.settings.alpha,
                                             colormap=self.colormap)
                    figure, drawing = self._figure(f"{stems[p]}_segcam_{self.tag}.{self.image_format}".replace("++", "pp"),
                                                   draw, f"{p.name}: {', '.join(r[0] for r in rows)}", dict(input=str(p)))
                raw_names = ({key: f"{stems[p]}_segcam_{key[0]}_c{key[1]}.npy".replace("++", "pp") for key in maps}
                             if self.settings.save_raw else {})
                info = dict(size=list(img.shape[:2]), targets=[r[0] for r in rows],
                            predicted=[names[c] if names and c < len(names) else c for c in present],
                            **({"scores": found_scores} if self.settings.score else {}))
                yield CamItem(path=str(p), size=(int(img.shape[0]), int(img.shape[1])), maps=maps, captions=captions,
                              targets=tuple(r[0] for r in rows), scores=found_scores, figure=figure,
                              raw_names=raw_names, input_info=info, drawing=drawing)
                b.advance()

    def close(self, writer: OutputWriter | None = None) -> None:
        self._rank_scores(writer)
