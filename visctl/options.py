"""Every command's own options, as one typed, frozen object each (:class:`CamOptions`, :class:`FeatmapOptions`, ...).

The CLI builds one from a command line in one call (``visctl._options.command``) and the library takes it
(``visctl.cam(img, model, settings=CamOptions(method="layercam"))``, or the same fields as keywords:
``visctl.cam(img, model, method="layercam")``). Each field is checked and normalised when the object is made:
its kind and range come from :data:`visctl.arguments.TYPES` and :data:`visctl.arguments.LIMITS`, a choice is
read as its Enum of :mod:`visctl.choices` (case-insensitive), a list as a tuple. An error names the field
(``topk=0 is out of range``); the CLI prints it with the flag instead (``--topk 0 is out of range``), from the
one map of field to flag that the commands' declarations make (``visctl._options.flag_names``).

The options every command shares (device, threads, ...) are :class:`visctl.RunOptions`, passed as ``options``.
Stdlib only: no torch, no typer.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from visctl import arguments
from visctl.choices import (
    Amp,
    BoxMethod,
    ChannelOrder,
    EmbedMethod,
    ImageFormat,
    Merge,
    Mode,
    Normalize,
    NormPixStats,
    Parameter,
    Phase,
    Pooling,
    Reduction,
    Task,
    VisStage,
)
from visctl.errors import ArgumentError

OptionsT = TypeVar("OptionsT", bound="Options")

#: the kinds of :data:`visctl.arguments.TYPES` whose values are read as a tuple of names
_LISTS = ("names", "categories", "skip_type")


@dataclass(frozen=True)
class Options:
    """The base of every command's options: frozen, each field checked and normalised when made."""

    command: ClassVar[str] = ""

    def __post_init__(self) -> None:
        kinds = arguments.TYPES[self.command]
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = kinds.get(f.name)
            enum = _enum_of(hints[f.name])
            if enum is not None and value is not None:
                value = arguments.choice(enum, value, f.name)
            elif kind is not None:
                arguments.types(self.command, **{f.name: value})
                value = _normalised(kind, f.name, value, hints[f.name])
            object.__setattr__(self, f.name, value)

    @classmethod
    def build(cls: type[OptionsT], settings: OptionsT | None = None, **fields: Any) -> OptionsT:
        """``settings`` (or the defaults) with ``fields`` replaced: what a library function makes of its
        ``settings=`` and keyword arguments. A name that is no field is refused, with the nearest one."""
        if settings is not None and not isinstance(settings, cls):
            raise ArgumentError(f"settings={_shown(settings)} is not a visctl.{cls.__name__}",
                                hint=f"pass visctl.{cls.__name__}(...), or the options as keyword arguments")
        names = [f.name for f in dataclasses.fields(cls)]
        for name in fields:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                raise ArgumentError(f"visctl.{cls.command} has no option {name!r}",
                                    hint=f"did you mean {near[0]}=?" if near else
                                    f"its options: {', '.join(names)}")
        return dataclasses.replace(settings, **fields) if settings is not None else cls(**fields)

    @classmethod
    def of(cls: type[OptionsT], values: Mapping[str, Any]) -> OptionsT:
        """The options among ``values`` (a command line's parsed values, by name); the others keep their
        defaults."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

    def replace(self: OptionsT, **fields: Any) -> OptionsT:
        """A copy with ``fields`` changed (checked as when made)."""
        return type(self).build(self, **fields)

    def as_dict(self) -> dict[str, Any]:
        """Every field by name, as plain values: a choice as its string, a tuple as a list, a path as a str."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"<{type(value).__name__}>"


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _enum_of(hint: Any) -> type[Enum] | None:
    """The Enum a field's annotation names (``Phase`` or ``Phase | None``), else None."""
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and issubclass(arg, Enum):
            return arg
    return None


def _normalised(kind: str, name: str, value: Any, hint: Any = None) -> Any:
    """A checked value in its one form: a list of names as a tuple, a pair as a tuple, a file as a Path."""
    if value is None:
        return None
    bare = kind.rstrip("?")
    if bare == "names":
        return tuple(arguments.names(value, name, "a name") or ())
    if bare == "categories":
        return tuple(arguments.categories(value, name) or ())
    if bare == "skip_type":
        found = arguments.skip_types(value)
        return None if found is None else tuple(found)
    if bare == "path":  # a file as a Path where the field says so; a URL (an https:// checkpoint) stays a string:
        # a Path would merge its two slashes; a checkpoint field (str) keeps what was given, as the manifest says it
        wants_path = Path in (hint, *typing.get_args(hint))
        return Path(value) if wants_path and not (isinstance(value, str) and "://" in value) else value
    if bare == "number" and isinstance(value, list):
        return tuple(value)
    return value


@dataclass(frozen=True)
class CamOptions(Options):
    """``visctl cam``'s options (:func:`visctl.cam`)."""

    command: ClassVar[str] = "cam"

    #: CAM methods (``"all"``, ``"gradcam,layercam"`` or a list), case-insensitive
    method: tuple[str, ...] = ("gradcam",)
    target_layers: tuple[str, ...] | None = None
    #: class indices or names, one row each [default: the predicted top ``topk``]
    target_category: tuple[str, ...] | None = None
    topk: int = 1
    vit_like: bool | None = None
    num_extra_tokens: int | None = None
    aug_smooth: bool = False
    eigen_smooth: bool = False
    ratio_channels_to_ablate: float = 1.0
    alpha: float = 0.5
    colormap: str | None = "jet"
    panel_size: int | None = None
    save_raw: bool = False
    batch_size: int = 16
    score: bool = False
    task: Task = Task.auto
    target_mask: Path | None = None
    target_box: str | tuple[float, ...] | None = None
    image_format: ImageFormat = ImageFormat.png
    amp: Amp = Amp.off


@dataclass(frozen=True)
class FeatmapOptions(Options):
    """``visctl featmap``'s options (:func:`visctl.featmap`)."""

    command: ClassVar[str] = "featmap"

    target_layers: tuple[str, ...] | None = None
    channel_reduction: Reduction = Reduction.squeeze_mean
    topk: int = 4
    arrangement: tuple[int, int] | None = None
    overlaid: bool = True
    alpha: float = 0.5
    use_norm: bool = False
    normalize: Normalize = Normalize.per_map
    resize_shape: tuple[int, int] | None = None
    colormap: str | None = None
    #: a second model (config, name, dict or module), or a (config, checkpoint) pair
    compare: Any = None
    compare_checkpoint: str | None = None
    signed: bool = False
    score_thr: float | None = None
    repo: str | None = None
    panel_size: int | None = None
    batch_size: int = 16
    save_raw: bool = False
    image_format: ImageFormat = ImageFormat.png


@dataclass(frozen=True)
class BoxamOptions(Options):
    """``visctl boxam``'s options (:func:`visctl.boxam`)."""

    command: ClassVar[str] = "boxam"

    method: BoxMethod | None = None
    target_layers: tuple[str, ...] | None = None
    topk: int | None = None
    score_thr: float = 0.3
    norm_in_bbox: bool = False
    per_box: bool = False
    no_boxes: bool = False
    alpha: float = 0.5
    colormap: str | None = "jet"
    ratio_channels_to_ablate: float = 1.0
    max_shape: tuple[int, ...] | None = None
    panel_size: int | None = None
    batch_size: int = 4
    save_raw: bool = False
    image_format: ImageFormat = ImageFormat.png

    def __post_init__(self) -> None:
        if isinstance(self.method, (list, tuple)):  # one engine draws each box's map: several methods, several runs
            raise ArgumentError(f"method={list(self.method)!r}: boxam runs one method",
                                hint="call boxam once per method, e.g. method='layercam'")
        super().__post_init__()
        if self.max_shape is not None:  # H W, or one size for both (an int or a list of one)
            shape = self.max_shape
            object.__setattr__(self, "max_shape", tuple(shape) if isinstance(shape, (list, tuple)) else (shape,))


@dataclass(frozen=True)
class SliceOptions(Options):
    """``visctl slice``'s options (:func:`visctl.slice`)."""

    command: ClassVar[str] = "slice"

    patch_size: int | None = None
    patch_overlap_ratio: float = 0.25
    merge: Merge = Merge.nms
    merge_iou_thr: float | None = None
    merge_metric: str | None = None
    score_thr: float = 0.3
    full_image: bool = False
    max_side: int = 4096
    batch_size: int = 8
    debug: bool = False
    deploy: bool = False
    save_patch: bool = False


@dataclass(frozen=True)
class TsneOptions(Options):
    """``visctl tsne``'s options (:func:`visctl.tsne`)."""

    command: ClassVar[str] = "tsne"

    phase: Phase | None = None
    #: a config whose test_dataloader is used (a file, a dict or an mmengine Config)
    test_cfg: Any = None
    target_layers: tuple[str, ...] | None = None
    vis_stage: VisStage | None = None
    all_stages: bool = False
    pooling: Pooling = Pooling.avg
    num_extra_tokens: int | None = None
    max_num_class: int = 20
    max_num_samples_per_class: int = 100
    class_idx: tuple[int, ...] | None = None
    method: EmbedMethod = EmbedMethod.tsne
    n_components: int = 2
    init: str = "pca"
    n_iter_without_progress: int | None = None
    perplexity: float = 30.0
    n_iter: int = 1000
    learning_rate: str | float = "auto"
    early_exaggeration: float = 12.0
    metric: str = "euclidean"
    legend: bool = True
    marker_size: float = 12.0
    thumbnails: bool = False
    title: str | None = None
    num_workers: int = 0
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class ReconOptions(Options):
    """``visctl recon``'s options (:func:`visctl.recon`)."""

    command: ClassVar[str] = "recon"

    mask_ratio: float | None = None
    mask_file: Path | None = None
    use_vis_pipeline: bool = False
    norm_pix: bool = False
    target_generator: bool = False
    save_raw: bool = False
    batch_size: int = 16
    seed: int | None = 0
    norm_pix_stats: NormPixStats = NormPixStats.patch


@dataclass(frozen=True)
class LrOptions(Options):
    """``visctl lr``'s options (:func:`visctl.lr`)."""

    command: ClassVar[str] = "lr"

    #: training samples [default: counted from ``train_dataloader.dataset``]
    dataset_size: int | None = None
    #: GPUs (the total batch is batch_size x ngpus)
    ngpus: int = 1
    #: per-GPU batch [default: ``train_dataloader.batch_size``]
    batch_size: int | None = None
    #: whether the last incomplete batch is dropped [default: ``train_dataloader.drop_last``]
    drop_last: bool | None = None
    #: the plot's title [default: the config's name]
    title: str | None = None
    #: a matplotlib style, e.g. ``"ggplot"``
    style: str | None = None
    #: the figure's size, ``"W*H"`` in inches
    window_size: str = "12*7"
    #: a logarithmic axis for the learning rate (or the ``parameter`` plotted)
    log_scale: bool = False
    #: plot only ``"lr"``, ``"momentum"`` or ``"wd"`` (the values keep every column) [default: all that change]
    parameter: Parameter | None = None


@dataclass(frozen=True)
class DatasetOptions(Options):
    """What the dataset commands' options share (:class:`PipelineOptions`, :class:`BrowseOptions`)."""

    #: train, val or test: which dataloader's dataset and pipeline
    phase: Phase = Phase.train
    #: transform types left out [default: ToTensor Normalize ImageToTensor Collect PackInputs]; a list given
    #: replaces the default one
    skip_type: tuple[str, ...] | None = None
    #: BGR or RGB, the order the pipeline's images are in (mmpretrain's ``-c``), shown as that: the wrong one
    #: swaps the colours as mmpretrain shows them [default: their own order]
    channel_order: ChannelOrder | None = None
    #: the random transforms' seed (the same views each run)
    seed: int = 0


@dataclass(frozen=True)
class PipelineOptions(DatasetOptions):
    """``visctl pipeline``'s options (:func:`visctl.pipeline`)."""

    command: ClassVar[str] = "pipeline"

    #: samples, from the first (-1: all)
    number: int = 20
    #: what each figure shows: original, transformed, concat (both) or pipeline (every step)
    mode: Mode = Mode.concat
    #: scale each panel into the edge limits
    adaptive: bool = False
    #: with ``adaptive``: the shortest a panel's short edge may be (pixels)
    min_edge_length: int = 200
    #: with ``adaptive``: the longest a panel's long edge may be (pixels); wins over ``min_edge_length``
    max_edge_length: int = 1000
    #: swap the channels of every panel (mmcls 0.x's flag)
    bgr2rgb: bool = False
    #: with mode original: scale the original by this factor (mmpretrain's ``-r``)
    rescale_factor: float | None = None


@dataclass(frozen=True)
class BrowseOptions(DatasetOptions):
    """``visctl browse``'s options (:func:`visctl.browse`)."""

    command: ClassVar[str] = "browse"

    #: samples, from the first (-1: all)
    number: int = 32
    #: grid rows and columns per page [default: 4 each; None, as the CLI refuses them with a per-sample
    #: ``--mode``]
    rows: int | None = None
    cols: int | None = None
    #: DataLoader worker processes
    num_workers: int = 0


@dataclass(frozen=True)
class AuditOptions(Options):
    """``visctl audit``'s options (:func:`visctl.audit`)."""

    command: ClassVar[str] = "audit"

    data: Path | None = None
    phase: Phase | None = None
    annotations: Path | None = None
    region: Path | None = None
    method: str = "gradcam"
    agree_with: str | None = None
    target_layers: tuple[str, ...] | None = None
    tolerance: float = 15.0
    top_percent: float = 20.0
    border: float = 0.1
    worst: int = 48
    #: a second checkpoint of the same config: a path or a URL, kept as given
    compare: str | None = None
    #: NAME=VALUE bounds (a string, a list of them, or a dict of name -> value), read as {name: value}
    fail_under: dict[str, float] | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        from visctl import audits

        compare = self.compare
        super().__post_init__()
        if compare is not None:  # not a Path: an http(s):// checkpoint would lose a slash
            object.__setattr__(self, "compare", str(compare))
        bounds = self.fail_under
        if bounds is not None:
            found = (audits.check_thresholds(bounds) if isinstance(bounds, dict)
                     else audits.parse_thresholds([bounds] if isinstance(bounds, str) else bounds))
            object.__setattr__(self, "fail_under", found or None)


#: command -> its options' class
BY_COMMAND: dict[str, type[Options]] = {
    cls.command: cls for cls in (CamOptions, FeatmapOptions, BoxamOptions, SliceOptions, TsneOptions, ReconOptions,
                                 LrOptions, PipelineOptions, BrowseOptions, AuditOptions)
}
