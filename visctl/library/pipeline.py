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
from visctl.choices import ChannelOrder, Mode, Phase
from visctl.results import Figure, Result
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.output.writer import OutputWriter

#: transform types left out unless the caller says otherwise (tensor conversion and packing)
SKIP = ("ToTensor", "Normalize", "ImageToTensor", "Collect", "PackInputs")
MODES = tuple(m.value for m in Mode)
PHASES = tuple(p.value for p in Phase)
CHANNEL_ORDERS = tuple(c.value for c in ChannelOrder)


def native_order(dataset: Any, steps: list[dict]) -> str:
    """The channel order the OpenMMLab pipeline's images have: ``LoadImageFromFile``'s ``channel_order`` (BGR
    unless it says otherwise); datasets held in memory (CIFAR) give their arrays as RGB, as mmpretrain's do."""
    from visctl import datasets

    for step in steps:
        if str(step.get("type", "")).split(".")[-1] in ("LoadImageFromFile", "LoadImage"):
            return str(step.get("channel_order", "bgr")).upper()
    return "RGB" if isinstance(dataset, (datasets.CifarDataset, datasets.TorchvisionDataset)) else "BGR"


def channel_swap(channel_order: Any, native: str, bgr2rgb: bool = False) -> bool:
    """Whether the panels' channels are swapped: mmpretrain's ``-c/--channel-order`` names the order the
    pipeline's images are in, and shows them as that (a wrong order shows swapped colours, as there); None:
    the images' own order, true colours. ``bgr2rgb`` (mmcls 0.x) swaps them whatever the order."""
    from visctl.errors import InputError

    if channel_order is None:
        return bgr2rgb
    order = _choice(str(getattr(channel_order, "value", channel_order)).upper(), CHANNEL_ORDERS, "channel order")
    if bgr2rgb:
        raise InputError("--bgr2rgb and -c/--channel-order both set the channel order",
                         hint="give one: --bgr2rgb swaps the channels (mmcls 0.x), -c BGR|RGB names the "
                         "pipeline's channel order (mmpretrain)")
    return order != native


def check_skip(skip_type: list[str] | None, steps: Any, warn: Any) -> None:
    """``--skip-type`` names that no step of the pipeline has: one warning naming the pipeline's types (a name
    given replaces the default list, mmpretrain's browse_dataset.py habit, so the default's steps are drawn)."""
    if not skip_type:
        return
    types = [str(s.get("type", "")).split(".")[-1] for s in steps if hasattr(s, "get")]
    unknown = [t for t in skip_type if t not in types]
    if not unknown:
        return
    drawn = [t for t in SKIP if t in types and t not in skip_type]
    warn(f"--skip-type {', '.join(unknown)}: no step of this pipeline has that type (its steps: "
         f"{', '.join(types) or 'none'}); a --skip-type list replaces the default ({' '.join(SKIP)})"
         + (f", so {', '.join(drawn)} is drawn" if drawn else ""))


def check_rescale(rescale_factor: float | None, mode: str, adaptive: bool = False) -> None:
    """mmpretrain's ``-r/--rescale-factor`` scales the original image of ``--mode original`` only."""
    from visctl.errors import InputError

    if rescale_factor is None:
        return
    if not rescale_factor > 0:
        raise InputError(f"rescale factor {rescale_factor}", hint="-r/--rescale-factor is a positive number, "
                         "e.g. -r 10 for CIFAR's 32 px images")
    if mode != "original":
        raise InputError(f"-r/--rescale-factor rescales the original image of --mode original, not the {mode} "
                         "figures", hint="add -m original (as mmpretrain's browse_dataset.py, which ignores -r in "
                         "the other modes); browse's grid rows are --rows")
    if adaptive:
        raise InputError("--adaptive and -r/--rescale-factor both resize the original image",
                         hint="give one: -r scales by a factor, --adaptive fits the edge limits")


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
    the image; filled when the pipeline was recorded, which :func:`pipeline_views` always does); ``views``
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


@dataclass
class PipelinePlan:
    """What a run knows before its first sample: the dataset, the steps, the manifest's parameters."""

    dataset: Any
    samples: Any  # datasets.PipelineSamples
    count: int
    params: dict[str, Any]
    names: list[str]
    stems: dict[Any, str]
    mode: str
    drawing: dict[str, Any]
    num_workers: int = 0


def _choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    from visctl.errors import InputError

    value = getattr(value, "value", value)  # the CLI's enums
    if value not in choices:
        raise InputError(f"{what} {value!r}", hint=f"use one of {', '.join(choices)}")
    return str(value)


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


def plan(config: Any, images: Any = None, *, phase: str = "train", number: int = 20,
         skip_type: Any = None, mode: str = "concat", adaptive: bool = False, min_edge_length: int = 200,
         max_edge_length: int = 1000, bgr2rgb: bool = False, rescale_factor: float | None = None,
         channel_order: str | None = None, seed: int = 0, record: bool = True, num_workers: int = 0,
         session: Session, config_name: str | None = None) -> PipelinePlan:
    """Load the config and the dataset (or ``images``), and say what the run will do."""
    from visctl import arguments, datasets

    arguments.model_spec(config, "config", modules=False)
    arguments.check("pipeline", number=number, min_edge_length=min_edge_length, max_edge_length=max_edge_length,
                    rescale_factor=rescale_factor, seed=seed)
    for name, value, default in (("--min-edge-length", min_edge_length, 200),
                                 ("--max-edge-length", max_edge_length, 1000)):
        if value != default and not adaptive:  # as -r without --mode original: an error, not a silent no-op
            raise arguments.ArgumentError(f"{name} {value} limits the panels of --adaptive only",
                                          hint=f"add --adaptive, or drop {name}")
    if adaptive and min_edge_length > max_edge_length:
        raise arguments.ArgumentError(f"--min-edge-length {min_edge_length} is above --max-edge-length "
                                      f"{max_edge_length}", hint="the adaptive size keeps each figure's edges "
                                      "between the two: give min <= max")
    skip_type = arguments.skip_types(skip_type)
    phase = _choice(phase, PHASES, "phase")
    mode = _choice(mode, MODES, "mode")
    check_rescale(rescale_factor, mode, adaptive)
    if channel_order is not None:
        channel_order = _choice(str(getattr(channel_order, "value", channel_order)).upper(), CHANNEL_ORDERS,
                                "channel order")
    channel_swap(channel_order, "BGR", bgr2rgb)  # refuses both at once before the dataset is read
    cfg = session.load_config(config)
    if images is None:
        ds_cfg, steps = datasets.dataset_config(cfg, phase)
        dataset = datasets.build_dataset(ds_cfg, phase, warn=session.warn, max_pixels=session.max_pixels)
    else:
        dataset, steps = image_dataset(cfg, images, phase, session)
    check_skip(skip_type, steps, session.warn)
    skip = tuple(skip_type if skip_type is not None else SKIP)
    samples = datasets.PipelineSamples(dataset, steps, seed=seed, record=record, skip_types=skip)
    size = datasets.length(dataset)
    count = size if number < 0 else min(number, size)
    if config_name is None:
        config_name = str(config) if isinstance(config, (str, Path)) else getattr(cfg, "filename", None) or "<config>"
    swap = channel_swap(channel_order, native_order(dataset, steps), bgr2rgb)
    params = dict(config=config_name, phase=phase, number=count, mode=mode, skip_type=list(skip), adaptive=adaptive,
                  seed=seed, steps=list(samples.steps))
    if rescale_factor is not None:
        params["rescale_factor"] = rescale_factor
    if channel_order is not None:
        params["channel_order"] = channel_order
    names = [dataset.name(i) for i in range(count)]
    if images is None:
        session.protect(*names)
    files = getattr(dataset, "files", None)  # image_dataset's FileDataset keeps the in-memory images
    paths = [files[i][0] for i in range(count)] if images is not None and files else [Path(n) for n in names]
    return PipelinePlan(dataset, samples, count, params, names, dict(zip(names, stems_of(paths))), mode,
                        dict(adaptive=adaptive, min_edge=min_edge_length, max_edge=max_edge_length, bgr2rgb=swap,
                             rescale_factor=rescale_factor), num_workers)


def check_figure(item: dict, mode: str, drawing: dict[str, Any], name: str, max_pixels: int | None) -> None:
    """Refuse a sample's figure over the pixel budget before it is drawn, naming the options that size it."""
    import math

    from visctl import render

    fh, fw = render.pipeline_figure_size(item, mode, drawing["adaptive"], drawing["min_edge"], drawing["max_edge"],
                                         drawing["rescale_factor"])
    h, w = item["original"].shape[:2]
    what = f"the figure of {Path(name).name} ({w} x {h})"
    budget = max_pixels if max_pixels is not None else render.FIGURE_LIMIT
    if mode == "original" and drawing["rescale_factor"] is not None:
        most = math.sqrt(budget / max(1, h * w))
        render.check_figure(fw, fh, max_pixels, f"-r/--rescale-factor {drawing['rescale_factor']:g} (rescale_factor=)",
                            what, hint=f"give a smaller -r/--rescale-factor: at most {most:.4g} for this image")
    elif drawing["adaptive"]:
        render.check_figure(fw, fh, max_pixels, f"--adaptive with --min-edge-length {drawing['min_edge']} and "
                            f"--max-edge-length {drawing['max_edge']} (min_edge_length=, max_edge_length=)", what,
                            hint="give a smaller --max-edge-length")
    else:
        render.check_figure(fw, fh, max_pixels, f"-m/--mode {mode} (mode=)", what,
                            hint="draw fewer panels (-m original or transformed), or resize in the pipeline")


def iter_pipeline_views(p: PipelinePlan, session: Session) -> Iterator[PipelineView]:
    """Each sample's :class:`PipelineView` as it is processed; an unreadable one goes to ``session.skip``."""
    from visctl import datasets, render

    with session.progress(p.count, "pipeline") as advance:
        for item in datasets.iterate(p.samples, list(range(p.count)), num_workers=p.num_workers):
            advance()
            name = p.names[item["index"]]
            if item["error"]:
                session.skip(name, item["error"])
                continue
            class_name = p.dataset.class_name(item["label"])
            label = ("no label" if item["label"] is None else f"label {item['label']}" +
                     (f": {class_name}" if class_name is not None else ""))
            d = p.drawing
            check_figure(item, p.mode, d, name, session.max_pixels)
            image = render.pipeline_figure(item, p.mode, label, d["adaptive"], d["min_edge"], d["max_edge"],
                                           d["bgr2rgb"], d["rescale_factor"])
            figure = Figure(f"{p.stems[name]}_{p.mode}.png", _readonly(image), f"{Path(name).name}: {label}",
                            dict(input=name))
            yield PipelineView(
                name=name, index=item["index"], label=item["label"], class_name=class_name,
                original=_readonly(item["original"]), views=tuple(_readonly(v) for v in item["views"]),
                masks=tuple(_readonly(m) for m in item["masks"]),
                steps=tuple(tuple(step for step, _ in snaps) for snaps in item["snapshots"]),
                images=tuple(tuple(_readonly(img) for _, img in snaps) for snaps in item["snapshots"]),
                figure=figure)


@arguments.typed("pipeline")
def pipeline_views(config: Any, images: Any = None, *, phase: str = "train", number: int = 20,
                   skip_type: Any = None, mode: str = "concat", adaptive: bool = False, min_edge_length: int = 200,
                   max_edge_length: int = 1000, bgr2rgb: bool = False, rescale_factor: float | None = None,
                   channel_order: str | None = None, seed: int = 0, options: RunOptions | None = None,
                   session: Session | None = None) -> PipelineResult:
    """Samples of ``config``'s ``<phase>`` dataset (or ``images``) through its pipeline, step by step.

    Args:
        config: an mmengine config (a path, a dict or a ``Config``) with ``<phase>_dataloader.dataset``
            (or, for ``images``, a ``<phase>_pipeline``).
        images: a path, folder, glob, numpy RGB image, PIL image or a list of them [default: the dataset].
        phase: train, val or test; number: samples from the first (-1: all).
        skip_type: transform types left out [default: ToTensor Normalize ImageToTensor Collect PackInputs].
        mode: what each figure shows: original, transformed, concat (both) or pipeline (every step).
        adaptive: scale each panel into the edge limits.
        min_edge_length: the shortest edge a panel may have (pixels), with ``adaptive``.
        max_edge_length: the longest edge a panel may have (pixels), with ``adaptive``.
        bgr2rgb: swap the channels of every panel (mmcls 0.x's flag).
        rescale_factor: with mode original, scale the original by this factor (mmpretrain's ``-r``).
        channel_order: BGR or RGB, the order the pipeline's images are in (mmpretrain's ``-c``): shown as that,
            so the wrong one swaps the colours as mmpretrain shows them [default: their own order].
        seed: the random transforms' seed (the same views each run).
        options: how the run writes and reports (:class:`visctl.RunOptions`).
        session: a :class:`visctl.Session` to run in (its notes, failures and writer) [default: a new one].
    """
    ctx = session or Session(options)
    skipped, noted = len(ctx.failures), len(ctx.notes)
    p = plan(config, images, phase=phase, number=number, skip_type=skip_type, mode=mode, adaptive=adaptive,
             min_edge_length=min_edge_length, max_edge_length=max_edge_length, bgr2rgb=bgr2rgb,
             rescale_factor=rescale_factor, channel_order=channel_order, seed=seed, session=ctx)
    samples = tuple(iter_pipeline_views(p, ctx))
    params = dict(p.params, max_pixels=ctx.max_pixels) if ctx.max_pixels is not None else p.params
    return PipelineResult(params=params, failures=tuple((f.path, f.error) for f in ctx.failures[skipped:]),
                          notes=tuple(ctx.notes[noted:]), samples=samples, mode=p.mode)
