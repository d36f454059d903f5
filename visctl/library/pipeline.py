"""``visctl.pipeline``: a config's data pipeline applied to its dataset or to given images, step by step.

Each sample gives its original, the image after every step that changes it (the step names beside them) and
its final view(s), as RGB ``uint8`` arrays; its figure is the one ``visctl pipeline`` draws, under the name the
CLI writes (``<input stem>_<mode>.png``), and ``result.save(folder)`` writes the CLI's folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.choices import ChannelOrder, Mode
from visctl.library._run import Run, Since, mark
from visctl.options import PipelineOptions
from visctl.results import Figure, Result
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.output.writer import OutputWriter

#: transform types left out unless the caller says otherwise (tensor conversion and packing)
SKIP = ("ToTensor", "Normalize", "ImageToTensor", "Collect", "PackInputs")


def native_order(dataset: Any, steps: list[dict]) -> str:
    """The channel order the OpenMMLab pipeline's images have: ``LoadImageFromFile``'s ``channel_order`` (BGR
    unless it says otherwise); datasets held in memory (CIFAR) give their arrays as RGB, as mmpretrain's do."""
    from visctl import datasets

    for step in steps:
        if str(step.get("type", "")).split(".")[-1] in ("LoadImageFromFile", "LoadImage"):
            return str(step.get("channel_order", "bgr")).upper()
    return "RGB" if isinstance(dataset, (datasets.CifarDataset, datasets.TorchvisionDataset)) else "BGR"


def channel_swap(channel_order: ChannelOrder | None, native: str, bgr2rgb: bool = False) -> bool:
    """Whether the panels' channels are swapped: mmpretrain's ``-c/--channel-order`` names the order the
    pipeline's images are in, and shows them as that (a wrong order shows swapped colours, as there); None:
    the images' own order, true colours. ``bgr2rgb`` (mmcls 0.x) swaps them whatever the order."""
    from visctl.errors import InputError

    if channel_order is None:
        return bgr2rgb
    if bgr2rgb:
        raise InputError("bgr2rgb=True and channel_order= both set the channel order",
                         hint="give one: bgr2rgb=True swaps the channels (mmcls 0.x), channel_order=BGR|RGB names "
                         "the pipeline's channel order (mmpretrain)")
    return channel_order.value != native


def check_skip(skip_type: tuple[str, ...] | None, steps: Any, warn: Any) -> None:
    """``--skip-type`` names that no step of the pipeline has: one warning naming the pipeline's types (a name
    given replaces the default list, mmpretrain's browse_dataset.py habit, so the default's steps are drawn)."""
    if not skip_type:
        return
    types = [str(s.get("type", "")).split(".")[-1] for s in steps if hasattr(s, "get")]
    unknown = [t for t in skip_type if t not in types]
    if not unknown:
        return
    drawn = [t for t in SKIP if t in types and t not in skip_type]
    warn(f"skip_type={unknown!r}: no step of this pipeline has that type (its steps: "
         f"{', '.join(types) or 'none'}); a skip_type= list replaces the default ({' '.join(SKIP)})"
         + (f", so {', '.join(drawn)} is drawn" if drawn else ""))


def check_rescale(rescale_factor: float | None, mode: str, adaptive: bool = False) -> None:
    """mmpretrain's ``-r/--rescale-factor`` scales the original image of ``--mode original`` only (``mode``:
    the run's mode, or browse's ``grid``)."""
    from visctl.errors import InputError

    if rescale_factor is None:
        return
    if not rescale_factor > 0:
        raise InputError(f"rescale_factor={rescale_factor:g} is not above 0", hint="rescale_factor= is a positive "
                         "number, e.g. rescale_factor=10 for CIFAR's 32 px images")
    if mode != "original":
        raise InputError(f"rescale_factor={rescale_factor:g} rescales the original image of mode=original, not the "
                         f"{mode} figures", hint="add mode=original (as mmpretrain's browse_dataset.py, which "
                         "ignores it in the other modes)" + ("; the grid's rows are rows=" if mode == "grid" else ""))
    if adaptive:
        raise InputError("adaptive=True and rescale_factor= both resize the original image",
                         hint="give one: rescale_factor= scales by a factor, adaptive=True fits the edge limits")


def _readonly(a: Any) -> Any:
    import numpy as np

    if a is None:
        return None
    a = np.asarray(a)
    if a.flags.writeable:
        a = a.copy()
        a.setflags(write=False)
    return a


@dataclass(frozen=True)
class PipelineView(Result):
    """One sample through the pipeline.

    ``steps[v]`` names the snapshots ``images[v]`` of view ``v`` (``original``, then every step that changed
    the image; filled when the pipeline was recorded, which :func:`pipeline` always does); ``views``
    are the final images, ``masks`` their masks (None where a view has none).
    """

    command: ClassVar[str] = "pipeline"

    name: str = ""
    index: int = 0
    label: int | None = None
    class_name: str | None = None
    original: np.ndarray | None = field(default=None, repr=False)
    views: tuple[np.ndarray, ...] = field(default=(), repr=False)
    masks: tuple[np.ndarray | None, ...] = field(default=(), repr=False)
    steps: tuple[tuple[str, ...], ...] = ()
    images: tuple[tuple[np.ndarray, ...], ...] = field(default=(), repr=False)
    figure: Figure | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        """The sample's file (its :attr:`name`)."""
        return self.name

    @property
    def items(self) -> tuple[PipelineView, ...]:
        """A one-sample result: its one item is itself."""
        return (self,)

    def figures(self) -> list[Figure]:
        return [self.figure] if self.figure is not None else []

    def write(self, writer: OutputWriter) -> None:
        """The figure, then the sample as an input of the run (as the CLI records it)."""
        super().write(writer)
        writer.add_input(self.name, label=self.label, class_name=self.class_name, views=len(self.views))


@dataclass(frozen=True)
class PipelineResult(Result):
    """Every sample's :class:`PipelineView`, in order (``samples``), and the run's skipped inputs."""

    command: ClassVar[str] = "pipeline"

    samples: tuple[PipelineView, ...] = ()
    mode: str = "concat"

    @property
    def items(self) -> tuple[PipelineView, ...]:
        """The samples (:attr:`samples`), as the result's sequence."""
        return self.samples

    def figures(self) -> list[Figure]:
        return [f for s in self.samples for f in s.figures()]

    def write(self, writer: OutputWriter) -> None:
        for sample in self.samples:
            sample.write(writer)


def image_dataset(cfg: Any, images: Any, phase: str, session: Session) -> tuple[Any, list[dict]]:
    """Given images (paths, arrays, PIL images) as an unlabelled dataset, and the config's pipeline for them:
    ``<phase>_dataloader.dataset.pipeline``, else ``<phase>_pipeline``."""
    from visctl import datasets
    from visctl.config import cfg_get
    from visctl.errors import ConfigError
    from visctl.images import as_images
    from visctl.transforms import qualify

    paths = as_images(images, note=session.note)
    session.protect(*paths)
    ds = cfg_get(cfg, f"{phase}_dataloader.dataset") or {}
    ds = datasets._unwrap(dict(ds)) if ds else {}
    steps = ds.get("pipeline") or cfg_get(cfg, f"{phase}_pipeline")
    if not steps:
        raise ConfigError(f"the config has no {phase} pipeline",
                          hint=f"add {phase}_pipeline = [dict(type=...), ...] or {phase}_dataloader.dataset.pipeline")
    classes = cfg_get(cfg, "classes") or cfg_get(cfg, "dataset_meta.classes")
    return datasets.FileDataset([(p, None) for p in paths], list(classes) if classes else None,
                                session.max_pixels), qualify([dict(s) for s in steps], cfg_get(cfg, "default_scope"))


def stems_of(paths: list[Any]) -> list[str]:
    """Output stems of the inputs (:func:`visctl.output.input_stems`), in order."""
    from visctl.output.writer import input_stems

    stems = input_stems(paths)
    return [stems[p] for p in paths]


def config_label(config: Any, cfg: Any) -> str:
    """How the manifest names the config: its path as given, else the loaded config's file, else ``<config>``."""
    return str(config) if isinstance(config, (str, Path)) else getattr(cfg, "filename", None) or "<config>"


def check_edges(settings: PipelineOptions) -> None:
    """The edge limits size the panels of ``adaptive`` only, and the shortest may not pass the longest."""
    o = settings
    for name in ("min_edge_length", "max_edge_length"):
        value = getattr(o, name)
        if value != getattr(PipelineOptions, name) and not o.adaptive:  # as -r without mode original: an error
            raise arguments.ArgumentError(f"{name}={value} limits the panels of adaptive=True only",
                                          hint=f"add adaptive=True, or drop {name}=")
    if o.adaptive and o.min_edge_length > o.max_edge_length:
        raise arguments.ArgumentError(f"min_edge_length={o.min_edge_length} is above max_edge_length="
                                      f"{o.max_edge_length}", hint="the adaptive size keeps each figure's edges "
                                      "between the two: give min <= max")


def plan(session: Session, config: Any, images: Any, settings: PipelineOptions, *, num_workers: int = 0,
         ) -> PipelineRun:
    """Check the options, load the config and the dataset (or ``images``), and say what the run will do.

    ``num_workers``: DataLoader worker processes (``visctl browse --mode``'s; a pipeline run of its own has none).
    """
    from visctl import datasets

    o, since = settings, mark(session)
    arguments.model_spec(config, "config", modules=False)
    check_edges(o)
    check_rescale(o.rescale_factor, o.mode.value, o.adaptive)
    channel_swap(o.channel_order, "BGR", o.bgr2rgb)  # refuses both at once before the dataset is read
    cfg = session.load_config(config, models=False)
    phase = o.phase.value
    if images is None:
        ds_cfg, steps = datasets.dataset_config(cfg, phase)
        dataset = datasets.build_dataset(ds_cfg, phase, warn=session.warn, max_pixels=session.max_pixels)
    else:
        dataset, steps = image_dataset(cfg, images, phase, session)
    check_skip(o.skip_type, steps, session.warn)
    skip = SKIP if o.skip_type is None else o.skip_type
    # every step's image is kept where the figures draw them (collect() keeps them for the result too)
    samples = datasets.PipelineSamples(dataset, steps, seed=o.seed, record=o.mode is Mode.pipeline, skip_types=skip)
    size = datasets.length(dataset)
    count = size if o.number < 0 else min(o.number, size)
    params = dict(config=config_label(config, cfg), phase=phase, number=count, mode=o.mode.value,
                  skip_type=list(skip), adaptive=o.adaptive, seed=o.seed, steps=list(samples.steps))
    if o.rescale_factor is not None:
        params["rescale_factor"] = o.rescale_factor
    if o.channel_order is not None:
        params["channel_order"] = o.channel_order.value
    names = [dataset.name(i) for i in range(count)]
    if images is None:
        session.protect(*names)
    files = getattr(dataset, "files", None)  # image_dataset's FileDataset keeps the in-memory images
    paths = [files[i][0] for i in range(count)] if images is not None and files else [Path(n) for n in names]
    return PipelineRun(session, o, dataset, samples, count, params, names, dict(zip(names, stems_of(paths))),
                       channel_swap(o.channel_order, native_order(dataset, steps), o.bgr2rgb), num_workers, since)


def check_figure(item: dict, settings: PipelineOptions, name: str, max_pixels: int | None) -> None:
    """Refuse a sample's figure over the pixel budget before it is drawn, naming the options that size it."""
    import math

    from visctl import render

    o = settings
    mode = o.mode.value
    fh, fw = render.pipeline_figure_size(item, mode, o.adaptive, o.min_edge_length, o.max_edge_length,
                                         o.rescale_factor)
    h, w = item["original"].shape[:2]
    what = f"the figure of {Path(name).name} ({w} x {h})"
    if o.mode is Mode.original and o.rescale_factor is not None:
        budget = max_pixels if max_pixels is not None else render.FIGURE_LIMIT
        most = math.sqrt(budget / max(1, h * w))
        render.check_figure(fw, fh, max_pixels, f"rescale_factor={o.rescale_factor:g}", what,
                            hint=f"give rescale_factor= at most {most:.4g} for this image")
    elif o.adaptive:
        render.check_figure(fw, fh, max_pixels, f"adaptive=True with min_edge_length={o.min_edge_length} and "
                            f"max_edge_length={o.max_edge_length}", what, hint="give a smaller max_edge_length=")
    else:
        render.check_figure(fw, fh, max_pixels, f"mode={mode}", what,
                            hint="draw fewer panels (mode=original or mode=transformed), or resize in the pipeline")


@dataclass(eq=False)
class PipelineRun(Run):
    """A pipeline run (:func:`plan`): its dataset, the samples' pipeline and what the manifest records."""

    command: ClassVar[str] = "pipeline"

    session: Session
    settings: PipelineOptions
    dataset: Any
    samples: Any  # datasets.PipelineSamples
    count: int
    params: dict[str, Any]
    names: list[str]
    stems: dict[Any, str]
    swap: bool  # the panels' channels swapped (bgr2rgb, or a channel_order other than the images' own)
    num_workers: int = 0
    since: Since = (0, 0, 0.0)  # where the call began (:func:`mark`)

    def items(self) -> Iterator[PipelineView]:
        """Each sample's :class:`PipelineView` as it is processed; an unreadable one goes to ``session.skip``.
        Its ``steps`` and ``images`` are filled where the figure draws them (mode pipeline; :meth:`collect`
        fills them always)."""
        from visctl import datasets, render

        o, session, mode = self.settings, self.session, self.settings.mode.value
        with session.progress(self.count, "pipeline") as advance:
            for item in datasets.iterate(self.samples, list(range(self.count)), num_workers=self.num_workers):
                advance()
                name = self.names[item["index"]]
                if item["error"]:
                    session.skip(name, item["error"])
                    continue
                class_name = self.dataset.class_name(item["label"])
                label = ("no label" if item["label"] is None else f"label {item['label']}" +
                         (f": {class_name}" if class_name is not None else ""))
                check_figure(item, o, name, session.max_pixels)
                image = render.pipeline_figure(item, mode, label, o.adaptive, o.min_edge_length, o.max_edge_length,
                                               self.swap, o.rescale_factor)
                figure = Figure(f"{self.stems[name]}_{mode}.png", _readonly(image), f"{Path(name).name}: {label}",
                                dict(input=name))
                yield PipelineView(
                    name=name, index=item["index"], label=item["label"], class_name=class_name,
                    original=_readonly(item["original"]), views=tuple(_readonly(v) for v in item["views"]),
                    masks=tuple(_readonly(m) for m in item["masks"]),
                    steps=tuple(tuple(step for step, _ in snaps) for snaps in item["snapshots"]),
                    images=tuple(tuple(_readonly(img) for _, img in snaps) for snaps in item["snapshots"]),
                    figure=figure)

    def collect(self) -> PipelineResult:
        """Every sample's view, every step's image kept, as one :class:`PipelineResult`."""
        self.samples.record = True
        samples = tuple(self.items())
        return PipelineResult(**self.gathered(), samples=samples, mode=self.settings.mode.value)


@arguments.typed("pipeline")
def pipeline(config: Any, images: Any = None, settings: PipelineOptions | None = None, *,
             options: RunOptions | None = None, session: Session | None = None,
             **fields: Any) -> PipelineResult:
    """Samples of ``config``'s ``<phase>`` dataset (or ``images``) through its pipeline, step by step.

    Args:
        config: an mmengine config (a path, a dict or a ``Config``) with ``<phase>_dataloader.dataset``
            (or, for ``images``, a ``<phase>_pipeline``).
        images: a path, folder, glob, numpy RGB image, PIL image or a list of them [default: the dataset].
        settings: the run's options, a :class:`visctl.PipelineOptions` (phase, number, mode, ...) [default: its
            defaults].
        options: how the run writes and reports (:class:`visctl.RunOptions`).
        session: a :class:`visctl.Session` to run in (its notes, failures and writer) [default: a new one].
        **fields: fields of :class:`visctl.PipelineOptions` by name, replacing those of ``settings``
            (``mode="pipeline"``, ``number=4``).
    """
    o = PipelineOptions.build(settings, **fields)
    return plan(session or Session(options), config, images, o).collect()
