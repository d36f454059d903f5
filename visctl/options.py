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
import types
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
    BrowseMode,
    ChannelOrder,
    EmbedMethod,
    ImageFormat,
    Merge,
    MergeMetric,
    Mode,
    Normalize,
    NormPixStats,
    Parameter,
    Phase,
    Pooling,
    Reduction,
    Task,
    TsneInit,
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
        if not self.command:
            raise TypeError(f"{type(self).__name__} is a base class: make one command's options "
                            f"({', '.join(c.__name__ for c in BY_COMMAND.values())})")
        kinds = arguments.TYPES[self.command]
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = kinds.get(f.name)
            enum = _enum_of(hints[f.name])
            if enum is not None and value is not None:
                value = arguments.choice(enum, value, f.name)
            elif kind is not None:
                value = _member_values(value)  # Method.layercam where a name is taken: "layercam"
                arguments.types(self.command, **{f.name: value})
                value = _normalised(kind, f.name, value, hints[f.name], (self.command, f.name) in arguments.LISTS)
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


def _member_values(value: Any) -> Any:
    """A :mod:`visctl.choices` member as its value, in a list too (a field of names takes them)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)) and any(isinstance(v, Enum) for v in value):
        return type(value)(v.value if isinstance(v, Enum) else v for v in value)
    return value


def _enum_of(hint: Any) -> type[Enum] | None:
    """The Enum a field's annotation names (``Phase`` or ``Phase | None``), else None."""
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and issubclass(arg, Enum):
            return arg
    return None


def _normalised(kind: str, name: str, value: Any, hint: Any = None, listed: bool = False) -> Any:
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
    if bare in ("number", "box") and isinstance(value, list):
        return tuple(value)
    if bare == "number" and listed:  # a list field given one value: a list of one
        return (value,)
    return value


@dataclass(frozen=True)
class MapOptions(Options):
    """What the map commands' options share (:class:`CamOptions`, :class:`FeatmapOptions`,
    :class:`BoxamOptions`): how their maps and figures are written."""

    save_raw: bool = False
    """also save the maps as float32 .npy (``result.save(folder)``)"""
    image_format: ImageFormat = ImageFormat.png
    """the figures as png (lossless, the slowest to encode and the largest), jpg (quality 95, several times faster to
    encode: for large runs) or webp (quality 90, the smallest)"""


@dataclass(frozen=True)
class CamOptions(MapOptions):
    """``visctl cam``'s options (:func:`visctl.cam`)."""

    command: ClassVar[str] = "cam"

    method: tuple[str, ...] = ("gradcam",)
    """CAM methods (``"all"``, ``"gradcam,layercam"`` or a list), case-insensitive"""
    target_layers: tuple[str, ...] | None = None
    """layer paths, e.g. ``"backbone.layer4"``, ``"layer4[-1]"``, ``"blocks.-1.norm1"`` (a list, or comma-separated)"""
    target_category: tuple[str, ...] | None = None
    """class indices or names, one row each [default: the predicted top ``topk``]"""
    topk: int = 1
    """without ``target_category``: the top K predicted classes, one row each"""
    vit_like: bool | None = None
    """whether the model is treated as ViT-like [default: None, detected]"""
    num_extra_tokens: int | None = None
    """extra (class/distillation) tokens before the patch tokens [default: from the model or the grid]"""
    aug_smooth: bool = False
    """test-time augmentation (6 passes per image)"""
    eigen_smooth: bool = False
    """keep the first principal component of the maps (less noise)"""
    ratio_channels_to_ablate: float = 1.0
    """AblationCAM: ablate only this fraction of channels (top and bottom)"""
    alpha: float = 0.5
    """heatmap opacity, 0 to 1"""
    colormap: str | None = "jet"
    """jet, turbo, viridis, inferno, magma, ... (None: jet)"""
    panel_size: int | None = None
    """long side of each panel in pixels [default: the original image's, at most 384, at least 160]; the size used is
    in the manifest's params"""
    batch_size: int = 16
    """images per forward"""
    score: bool = False
    """faithfulness of every map: ROAD, deletion/insertion AUC, keep-top-20% confidence change; with several methods
    a ranking"""
    task: Task = Task.auto
    """classification, segmentation (per-pixel logits: a map per class present over its predicted pixels), or auto:
    the config's ``visctl.task``, else the model's output"""
    target_mask: str | Path | None = None
    """segmentation: the target class's region, a mask file (an image or .npy at the original size, nonzero inside;
    not an array) instead of the predicted mask"""
    target_box: str | tuple[float, ...] | None = None
    """segmentation: the region as ``"x0,y0,x1,y1"`` or four numbers, in original pixels"""
    amp: Amp = Amp.off
    """CUDA only: autocast the forward to bf16 or fp16 (gradient methods whose graph starts at the target layer);
    refused on a CPU"""


@dataclass(frozen=True)
class FeatmapOptions(MapOptions):
    """``visctl featmap``'s options (:func:`visctl.featmap`)."""

    command: ClassVar[str] = "featmap"

    target_layers: tuple[str, ...] | None = None
    """layer paths, e.g. ``"backbone.layer4"``, ``"layer4[-1]"``, ``"blocks.-1.norm1"`` (a list, or comma-separated)
    [default: the config's, else the last spatial feature layer]"""
    channel_reduction: Reduction = Reduction.squeeze_mean
    """how channels become one map: squeeze_mean, select_max, pixel_wise_max or none (the ``topk`` channels)"""
    topk: int = 4
    """with ``channel_reduction="none"``: the K channels with the largest activation sum; -1 draws a 1- or 3-channel
    feature as it is"""
    arrangement: tuple[int, int] | None = None
    """(rows, cols) of the top-k grid [default: near square, never dropping a panel]"""
    overlaid: bool = True
    """draw the maps on the image (True), or the maps alone (False)"""
    alpha: float = 0.5
    """heatmap opacity, 0 to 1"""
    use_norm: bool = False
    """z-score each channel before the reduction"""
    normalize: Normalize = Normalize.per_map
    """the colour scale, shared per map, per layer (across images) or globally; the scale is in each caption"""
    resize_shape: tuple[int, int] | None = None
    """(H, W) of every panel"""
    colormap: str | None = None
    """an OpenCV (jet, turbo, viridis, ...) or matplotlib (coolwarm, ...) colormap [default: jet; coolwarm with
    ``signed``]"""
    compare: Any = None
    """a second model (config, name, dict or module), or a (config, checkpoint) pair"""
    compare_checkpoint: str | None = None
    """``compare``'s weights (or give ``compare`` as a (config, checkpoint) pair)"""
    signed: bool = False
    """with ``compare``: A-B on a diverging colormap (instead of ``|A-B|``)"""
    score_thr: float | None = None
    """detectors: draw the boxes scoring at least this under the maps (mmyolo's habit) [default: no boxes]"""
    repo: str | None = None
    """mmrazor's habit: the OpenMMLab package of the model (mmdet, mmpretrain, ...), set as the config's
    ``default_scope``"""
    panel_size: int | None = None
    """long side of each panel in pixels [default: the original image's, at most 384, at least 160]; the size used is
    in the manifest's params"""
    batch_size: int = 16
    """images per forward"""


@dataclass(frozen=True)
class BoxamOptions(MapOptions):
    """``visctl boxam``'s options (:func:`visctl.boxam`)."""

    command: ClassVar[str] = "boxam"

    method: BoxMethod | None = None
    """the CAM method; the gradient ones score each kept box [default: layercam, whose per-pixel gradients keep a
    box's map on the box; gradcam, as mmyolo's boxam_vis_demo, on mmyolo/mmdet YOLOv5/v6/X and RTMDet detectors]"""
    target_layers: tuple[str, ...] | None = None
    """layer paths, e.g. ``"backbone.layer4"``, ``"layer4[-1]"``, ``"blocks.-1.norm1"`` (a list, or comma-separated)"""
    topk: int | None = None
    """at most K boxes per image, best first; -1: all [default: 10; -1 on mmdet/mmyolo detectors, as boxam_vis_demo]"""
    score_thr: float = 0.3
    """keep boxes scoring at least this"""
    norm_in_bbox: bool = False
    """normalise the map inside each box, zero outside"""
    per_box: bool = False
    """one map per box instead of one for all boxes"""
    no_boxes: bool = False
    """do not draw the boxes"""
    alpha: float = 0.5
    """heatmap opacity, 0 to 1"""
    colormap: str | None = "jet"
    """an OpenCV or matplotlib colormap (None: jet)"""
    ratio_channels_to_ablate: float = 1.0
    """AblationCAM: ablate only this fraction of channels (top and bottom), fewer forwards"""
    max_shape: tuple[int, ...] | None = None
    """cap on the map size: (H, W), or one number for both; a larger layer output is resized bilinearly to at most
    this before the CAM, as mmyolo's boxam (-1: no cap)"""
    panel_size: int | None = None
    """long side of each panel in pixels [default: the original image's, at most 512, at least 160]; the size used is
    in the manifest's params"""
    batch_size: int = 4
    """images per forward"""

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
    """tile side in pixels [default: the config's ``visctl.patch_size``, else 640]"""
    patch_overlap_ratio: float = 0.25
    """overlap of neighbouring tiles, 0 to 0.95"""
    merge: Merge = Merge.nms
    """how the tiles' boxes are joined: nms, nmm or wbf (class-aware)"""
    merge_iou_thr: float | None = None
    """overlap at which boxes merge [default: 0.25 on an mmdet/mmyolo detector, as large_image_demo.py; else 0.5]"""
    merge_metric: MergeMetric | None = None
    """iou, or ios (intersection over the smaller box: a box cut by a tile border merges with the whole
    one) [default: iou on an mmdet/mmyolo detector, as large_image_demo.py; else ios]"""
    score_thr: float = 0.3
    """drop boxes below this before merging"""
    full_image: bool = False
    """also detect on the whole image scaled to one tile, and merge"""
    max_side: int = 4096
    """longest side of the saved pictures, in pixels"""
    batch_size: int = 8
    """tiles per forward"""
    debug: bool = False
    """also draw the tile grid and every unmerged box (a second figure)"""
    deploy: bool = False
    """call ``switch_to_deploy()`` on the modules that have it (fuses RepVGG-style blocks) before inference"""
    save_patch: bool = False
    """with ``debug``: one picture per tile with that tile's boxes, in ``<image>_patch/``"""


@dataclass(frozen=True)
class TsneOptions(Options):
    """``visctl tsne``'s options (:func:`visctl.tsne`)."""

    command: ClassVar[str] = "tsne"

    phase: Phase | None = None
    """the dataset of this dataloader [default: test, else val]"""
    test_cfg: Any = None
    """a config whose test_dataloader is used (a file, a dict or an mmengine Config)"""
    target_layers: tuple[str, ...] | None = None
    """layer paths, e.g. ``"backbone.layer4"``, ``"layer4[-1]"``, ``"blocks.-1.norm1"`` (a list, or comma-separated)"""
    vis_stage: VisStage | None = None
    """mmpretrain's stage instead of ``target_layers``: backbone (its last stage's output), neck (its output) or
    pre_logits (the input of the head's last linear layer)"""
    all_stages: bool = False
    """every stage beside the default layer"""
    pooling: Pooling = Pooling.avg
    """how a layer's output becomes one vector: avg, max, cls (the class token) or flatten"""
    num_extra_tokens: int | None = None
    """extra tokens before the patch tokens [default: from the model, else 1 when tokens fit a grid after one]"""
    max_num_class: int = 20
    """without ``class_idx``: the first N classes present in the dataset"""
    max_num_samples_per_class: int = 100
    """samples per class, drawn at random with ``seed``"""
    class_idx: tuple[int, ...] | None = None
    """only these classes"""
    method: EmbedMethod = EmbedMethod.tsne
    """tsne (openTSNE FFT when installed, else scikit-learn), umap (umap-learn) or pca"""
    n_components: int = 2
    """embed in N dimensions; the plot shows the first two, the CSV has all"""
    init: TsneInit = TsneInit.pca
    """the t-SNE/UMAP starting layout: pca or random"""
    n_iter_without_progress: int | None = None
    """scikit-learn's early stop (not used by openTSNE) [default: 300]"""
    perplexity: float = 30.0
    """t-SNE: the effective number of neighbours (lowered to (N-1)/3 for N samples when larger)"""
    n_iter: int = 1000
    """t-SNE iterations, early exaggeration included (scikit-learn runs at least 250)"""
    learning_rate: str | float = "auto"
    """the embedding's learning rate: a number or ``"auto"``"""
    early_exaggeration: float = 12.0
    """t-SNE: how much clusters are pulled apart in the first iterations"""
    metric: str = "euclidean"
    """distance between features for t-SNE and UMAP (``"euclidean"``, ``"cosine"``, ...)"""
    legend: bool = True
    """class names in a legend"""
    marker_size: float = 12.0
    """point size in the plot"""
    thumbnails: bool = False
    """draw small images at their points"""
    title: str | None = None
    """the plot's title [default: ``"<config stem> | <layer>"``]"""
    num_workers: int = 0
    """DataLoader worker processes"""
    batch_size: int = 32
    """images per forward"""
    seed: int = 0
    """seed of the sampling and the embedding"""


@dataclass(frozen=True)
class ReconOptions(Options):
    """``visctl recon``'s options (:func:`visctl.recon`)."""

    command: ClassVar[str] = "recon"

    mask_ratio: float | None = None
    """share of patches masked, exactly [default: the model's]"""
    mask_file: str | Path | None = None
    """a mask for every image (.npy or image, patch grid or pixel size, nonzero = masked)"""
    use_vis_pipeline: bool = False
    """take the mask from the config pipeline's mask generator (SimMIM, BEiT)"""
    norm_pix: bool = False
    """True: the model predicts per-patch normalised pixels, un-normalise them (see ``norm_pix_stats``); False: as
    the model's ``norm_pix_loss`` says"""
    target_generator: bool = False
    """MaskFeat: show the target (the HOG of the image) as the first panel instead of the RGB image"""
    save_raw: bool = False
    """also save each reconstruction as .npy (``save()``)"""
    batch_size: int = 16
    """images per forward"""
    seed: int | None = 0
    """the masks' seed: the same masks every run (None: new random masks each run)"""
    norm_pix_stats: NormPixStats = NormPixStats.patch
    """where ``norm_pix`` takes each patch's mean and std: patch (its own, the masked patches' from pixels the model
    did not see, as visualize_reconstruction.py) or visible (the visible patches': what the model alone predicts)"""


@dataclass(frozen=True)
class LrOptions(Options):
    """``visctl lr``'s options (:func:`visctl.lr`)."""

    command: ClassVar[str] = "lr"

    dataset_size: int | None = None
    """training samples [default: counted from ``train_dataloader.dataset``]"""
    ngpus: int = 1
    """GPUs (the total batch is batch_size x ngpus)"""
    batch_size: int | None = None
    """per-GPU batch [default: ``train_dataloader.batch_size``]"""
    drop_last: bool | None = None
    """whether the last incomplete batch is dropped [default: ``train_dataloader.drop_last``]"""
    title: str | None = None
    """the plot's title [default: the config's name]"""
    style: str | None = None
    """a matplotlib style, e.g. ``"ggplot"``"""
    window_size: str = "12*7"
    """the figure's size, ``"W*H"`` in inches"""
    log_scale: bool = False
    """a logarithmic axis for the learning rate (or the ``parameter`` plotted)"""
    parameter: Parameter | None = None
    """plot only ``"lr"``, ``"momentum"`` or ``"wd"`` (the values keep every column) [default: all that change]"""


@dataclass(frozen=True)
class DatasetOptions(Options):
    """What the dataset commands' options share (:class:`PipelineOptions`, :class:`BrowseOptions`)."""

    phase: Phase = Phase.train
    """train, val or test: which dataloader's dataset and pipeline"""
    skip_type: tuple[str, ...] | None = None
    """transform types left out [default: ToTensor Normalize ImageToTensor Collect PackInputs]; a list given replaces
    the default one"""
    channel_order: ChannelOrder | None = None
    """BGR or RGB, the order the pipeline's images are in (mmpretrain's ``-c``), shown as that: the wrong one swaps
    the colours as mmpretrain shows them [default: their own order]"""
    rescale_factor: float | None = None
    """with mode original: scale the original by this factor (mmpretrain's ``-r``)"""
    seed: int = 0
    """the random transforms' seed (the same views each run)"""


@dataclass(frozen=True)
class PipelineOptions(DatasetOptions):
    """``visctl pipeline``'s options (:func:`visctl.pipeline`)."""

    command: ClassVar[str] = "pipeline"

    number: int = 20
    """samples, from the first (-1: all)"""
    mode: Mode = Mode.concat
    """what each figure shows: original, transformed, concat (both) or pipeline (every step)"""
    adaptive: bool = False
    """scale each panel into the edge limits"""
    min_edge_length: int = 200
    """with ``adaptive``: the shortest a panel's short edge may be (pixels)"""
    max_edge_length: int = 1000
    """with ``adaptive``: the longest a panel's long edge may be (pixels); wins over ``min_edge_length``"""
    bgr2rgb: bool = False
    """swap the channels of every panel (mmcls 0.x's flag)"""


@dataclass(frozen=True)
class BrowseOptions(DatasetOptions):
    """``visctl browse``'s options (:func:`visctl.browse`)."""

    command: ClassVar[str] = "browse"

    number: int = 32
    """samples, from the first (-1: all)"""
    mode: BrowseMode = BrowseMode.grid
    """grid: pages of samples after the pipeline; original, transformed, concat (both) or pipeline (every step): one
    figure per sample, as mmpretrain's browse_dataset.py draws them (the run and result of :func:`visctl.pipeline`)"""
    rows: int | None = None
    """grid rows and columns per page [default: 4 each; None, as they are refused with a per-sample ``mode``]"""
    cols: int | None = None
    """grid rows and columns per page [default: 4 each; None, as they are refused with a per-sample ``mode``]"""
    num_workers: int = 0
    """DataLoader worker processes"""


@dataclass(frozen=True)
class AuditOptions(Options):
    """``visctl audit``'s options (:func:`visctl.audit`)."""

    command: ClassVar[str] = "audit"

    data: str | Path | None = None
    """a folder of class folders (``ROOT/<class>/*.jpg``) [default: the config's test, else val, dataset]"""
    phase: Phase | None = None
    """the config's dataloader to audit [default: test, else val]"""
    annotations: str | Path | None = None
    """the objects' boxes: a COCO instances .json, a VOC .xml or a folder of them"""
    region: str | Path | None = None
    """a folder of object masks named like the images (.png or .npy, nonzero inside)"""
    method: str = "gradcam"
    """the CAM method of every map [default: gradcam, the gradient method that ranks first by faithfulness on the
    demo classifier]"""
    agree_with: str | None = None
    """a second method: the agreement of its maps with ``method``'s (Spearman, top-region IoU) is measured too"""
    target_layers: tuple[str, ...] | None = None
    """layer paths, e.g. ``"backbone.layer4"``, ``"layer4[-1]"``, ``"blocks.-1.norm1"`` (a list, or comma-separated)"""
    tolerance: float = 15.0
    """pointing game: a peak this many pixels from the object is a hit (Zhang et al. 2018 use 15)"""
    top_percent: float = 20.0
    """the map's top region for the IoU measures, in % of the pixels (above 0, at most 100)"""
    border: float = 0.1
    """the border band's width, as a share of the image's short side (above 0, at most 0.5; at least 1 px)"""
    worst: int = 48
    """thumbnails of the N worst images (and N most-moved with ``compare``) in the report"""
    compare: str | None = None
    """a second checkpoint of the same config: a path or a URL, kept as given"""
    fail_under: dict[str, float] | None = None
    """NAME=VALUE bounds (a string, a list of them, or a dict of name -> value), read as {name: value}"""
    batch_size: int = 16
    """images per forward"""

    def __post_init__(self) -> None:
        from visctl import audits

        compare = self.compare
        super().__post_init__()
        if compare is not None:  # not a Path: an http(s):// checkpoint would lose a slash
            object.__setattr__(self, "compare", str(compare))
        bounds = self.fail_under
        if bounds is not None:
            found = (audits.check_thresholds(dict(bounds)) if isinstance(bounds, Mapping)
                     else audits.parse_thresholds([bounds] if isinstance(bounds, str) else bounds))
            object.__setattr__(self, "fail_under", types.MappingProxyType(found) if found else None)


#: command -> its options' class
BY_COMMAND: dict[str, type[Options]] = {
    cls.command: cls for cls in (CamOptions, FeatmapOptions, BoxamOptions, SliceOptions, TsneOptions, ReconOptions,
                                 LrOptions, PipelineOptions, BrowseOptions, AuditOptions)
}
