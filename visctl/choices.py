"""Every closed choice a user makes (``--method``, ``--task``, ``--format``, ...), as one Enum each.

The commands show them as their flags' choices and the library takes them (or their values); nothing else
lives here, and this module imports only the standard library.
"""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    """What the model's output is."""

    auto = "auto"
    classification = "classification"
    segmentation = "segmentation"


class Method(str, Enum):
    """The CAM methods of pytorch-grad-cam that take a classifier target."""

    gradcam = "gradcam"
    gradcamplusplus = "gradcam++"
    xgradcam = "xgradcam"
    eigencam = "eigencam"
    eigengradcam = "eigengradcam"
    layercam = "layercam"
    hirescam = "hirescam"
    gradcamelementwise = "gradcamelementwise"
    scorecam = "scorecam"
    ablationcam = "ablationcam"
    fullgrad = "fullgrad"
    shapleycam = "shapleycam"
    kpcacam = "kpca_cam"
    fem = "fem"
    randomcam = "randomcam"


class BoxMethod(str, Enum):
    """grad-cam methods with a detection target."""

    gradcam = "gradcam"
    gradcamplusplus = "gradcam++"
    xgradcam = "xgradcam"
    eigencam = "eigencam"
    layercam = "layercam"
    ablationcam = "ablationcam"


class Amp(str, Enum):
    """The autocast dtype of the forward."""

    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class ImageFormat(str, Enum):
    """What the output figures are encoded as."""

    png = "png"
    jpg = "jpg"
    webp = "webp"


class Reduction(str, Enum):
    """How a (C, H, W) feature becomes what is drawn."""

    squeeze_mean = "squeeze_mean"
    select_max = "select_max"
    pixel_wise_max = "pixel_wise_max"
    none = "none"


class Normalize(str, Enum):
    """Which maps share one min-max scale."""

    per_map = "per-map"
    per_layer = "per-layer"
    global_ = "global"


class Merge(str, Enum):
    """How overlapping detections (from tiles, or tiles and the full image) become one."""

    nms = "nms"
    nmm = "nmm"
    wbf = "wbf"


class MergeMetric(str, Enum):
    """How two boxes' overlap is measured when they merge: over their union, or over the smaller box (a box cut
    by a tile border merges with the whole one)."""

    iou = "iou"
    ios = "ios"


class Pooling(str, Enum):
    """How a layer output becomes one vector per image."""

    avg = "avg"
    max = "max"
    cls = "cls"
    flatten = "flatten"


class EmbedMethod(str, Enum):
    """The 2-D projection."""

    tsne = "tsne"
    umap = "umap"
    pca = "pca"


class TsneInit(str, Enum):
    """The t-SNE / UMAP starting layout."""

    pca = "pca"
    random = "random"


class VisStage(str, Enum):
    """mmpretrain's ``extract_feat`` stages (``--vis-stage``)."""

    backbone = "backbone"
    neck = "neck"
    pre_logits = "pre_logits"


class NormPixStats(str, Enum):
    """Where a norm-pix prediction gets each patch's mean and std (``--norm-pix-stats``)."""

    patch = "patch"  # each patch's own, the hidden ones' included (mmselfsup's visualize_reconstruction.py)
    visible = "visible"  # the visible patches' (what the model could know)


class Phase(str, Enum):
    """A dataloader of the config."""

    train = "train"
    val = "val"
    test = "test"


class Mode(str, Enum):
    """What each output shows."""

    original = "original"
    transformed = "transformed"
    concat = "concat"
    pipeline = "pipeline"


class BrowseMode(str, Enum):
    """Grid pages (visctl's), or one figure per sample as mmpretrain's browse_dataset.py --mode."""

    grid = "grid"
    original = "original"
    transformed = "transformed"
    concat = "concat"
    pipeline = "pipeline"


class ChannelOrder(str, Enum):
    """The channel order of the pipeline's images (mmpretrain's -c/--channel-order)."""

    BGR = "BGR"
    RGB = "RGB"


class Parameter(str, Enum):
    """mmpretrain vis_scheduler's ``--parameter``: the one value to plot."""

    lr = "lr"
    momentum = "momentum"
    wd = "wd"


class LogLevel(str, Enum):
    """mmpretrain vis_scheduler's ``--log-level`` choices."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"
