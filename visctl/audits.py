"""Where a classifier looks, over a labelled dataset: localisation measures of CAMs, annotations, running tallies.

The measures take one map (float, (H, W), at the original image's size, >= 0; NaN where the model never saw
the pixel, read as 0) and, where annotations exist, the object's region (a boolean (H, W) mask: the union of
the class's boxes, or a segmentation mask):

* ``pointing`` -- the pointing game of Zhang et al. 2018 ("Top-down neural attention by excitation
  backprop", IJCV 126, §5.1): a hit (1) when the map's maximum lies on the object, "with a 15-pixel
  tolerance" (its Euclidean distance to the nearest object pixel at most ``tolerance``), else a miss (0).
* ``energy`` -- the energy-based pointing game of Wang et al. 2020 (Score-CAM, CVPR workshops, §5.2): the
  share of the map's energy inside the object, ``sum(map[inside]) / sum(map)``.
* ``iou`` -- the intersection over union of the map's top ``percent`` % pixels with the object (the region
  a thresholded map would call the object, as in weakly supervised localisation; Zhou et al. 2016 threshold
  at a share of the maximum, here a share of the pixels, so that every map covers the same area).

Without annotations (and beside them):

* ``border`` -- the share of the map's energy in the image's border band (``border`` of the short side on
  every edge): a model that looks at the frame, a watermark or a corner marker puts its energy there.
* ``entropy`` -- the Shannon entropy of the map read as a distribution over the pixels, divided by the
  entropy of a uniform one (``log N``): 0 all on one pixel, 1 spread evenly.
* ``spearman`` / ``agreement_iou`` -- the agreement of two methods' maps of the same class: Spearman's rank
  correlation of their pixels (on the maps area-resized to at most 64 px a side, as ties and cost need) and
  the IoU of their top ``percent`` % regions.

A constant map (grad-cam scales it to all zeros) points nowhere: pointing 0; its other measures read it as
uniform (energy: the object's area share, entropy 1). Nothing here imports torch; numpy and OpenCV are
imported inside the functions.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visctl.errors import InputError

if TYPE_CHECKING:
    import numpy as np

#: Zhang et al. 2018's tolerance of the pointing game, in original pixels
TOLERANCE = 15.0
#: the share of the pixels a map's "top region" holds (iou, agreement_iou)
TOP_PERCENT = 20.0
#: the border band's width as a share of the image's short side
BORDER = 0.1
#: the side the agreement maps are area-resized to at most (Spearman on 64 x 64 = 4096 pixels)
AGREEMENT_SIDE = 64

#: name -> (higher is better, needs an object region, what it is): every measure a row may hold
MEASURES: dict[str, tuple[bool, bool, str]] = {
    "pointing": (True, True, "the map's peak on the object (15 px tolerance; Zhang et al. 2018)"),
    "energy": (True, True, "share of the map's energy inside the object (Wang et al. 2020)"),
    "iou": (True, True, "IoU of the map's top region with the object"),
    "border": (False, False, "share of the map's energy in the image border"),
    "entropy": (False, False, "normalised entropy of the map (0 peaked, 1 flat)"),
    "spearman": (True, False, "rank correlation of two methods' maps"),
    "agreement_iou": (True, False, "IoU of two methods' top regions"),
}
#: what --fail-under may name besides the measures
RATES = {"accuracy": "share of correct predictions",
         "right_reason": "share of correct predictions whose peak is on the object"}


# ---- the measures ----------------------------------------------------------------------------------------

def _clean(fmap: Any, copy: bool = True) -> np.ndarray:
    """The map as float32 >= 0, NaN (outside the model's view) as 0 (a new array; with ``copy=False``, a float32
    numpy map is cleaned in place)."""
    import numpy as np

    arr = np.array(fmap, np.float32, copy=True if copy else None)
    np.fmax(arr, np.float32(0), out=arr)  # NaN and -inf -> 0 in one pass (fmax takes the number over a NaN)
    if arr.size and np.isposinf(arr.max()):
        arr[np.isposinf(arr)] = 0.0
    return arr


def _energy_map(fmap: Any) -> np.ndarray:
    """The map as energy: a constant (all-zero) map reads as uniform."""
    import numpy as np

    arr = _clean(fmap)
    return arr if arr.sum() > 0 else np.ones_like(arr)


def peak(fmap: Any) -> tuple[int, int] | None:
    """(x, y) of the map's maximum (the first in row-major order on a tie), None for a constant map."""
    return _peak(_clean(fmap))


def _peak(arr: np.ndarray) -> tuple[int, int] | None:
    import numpy as np

    if arr.size == 0:
        return None
    at = int(np.argmax(arr))
    if arr.flat[at] <= arr.min():
        return None
    y, x = np.unravel_index(at, arr.shape)
    return int(x), int(y)


def pointing(fmap: Any, region: Any, tolerance: float = TOLERANCE) -> float:
    """The pointing game (Zhang et al. 2018, §5.1): 1.0 when the map's maximum lies within ``tolerance``
    pixels (Euclidean) of an object pixel of ``region``, else 0.0; a constant map points nowhere (0.0)."""
    return _pointing(peak(fmap), region, tolerance)


def _pointing(at: tuple[int, int] | None, region: Any, tolerance: float) -> float:
    import numpy as np

    mask = np.asarray(region, bool)
    if at is None or not mask.any():
        return 0.0
    x, y = at
    r = int(math.floor(tolerance))
    y0, y1, x0, x1 = max(0, y - r), min(mask.shape[0], y + r + 1), max(0, x - r), min(mask.shape[1], x + r + 1)
    window = mask[y0:y1, x0:x1]
    if not window.any():
        return 0.0
    ys, xs = np.nonzero(window)
    d2 = (ys + y0 - y) ** 2 + (xs + x0 - x) ** 2
    return 1.0 if float(d2.min()) <= tolerance * tolerance else 0.0


def energy(fmap: Any, region: Any) -> float:
    """The energy-based pointing game (Wang et al. 2020, §5.2): ``sum(map inside) / sum(map)``."""
    import numpy as np

    arr = _energy_map(fmap)
    return float(arr[np.asarray(region, bool)].sum() / arr.sum())


def top_region(fmap: Any, percent: float = TOP_PERCENT) -> np.ndarray:
    """The map's top ``percent`` % pixels as a boolean mask: every pixel at least the k-th largest value
    (k = ceil(percent % of the pixels)) and above zero; a constant map's is the whole image."""
    return _top(_clean(fmap), percent)


def _top(arr: np.ndarray, percent: float, positive: np.ndarray | None = None) -> np.ndarray:
    """:func:`top_region` of a clean map (``positive``: its values above zero, where the caller has them). The
    k-th largest value is found exactly without sorting: a selection (O(N)) among the positive values only,
    as the zeros are never in the region (where fewer than k are positive, the region is every positive one)."""
    import numpy as np

    if positive is None:
        positive = arr.ravel()
        positive = positive[positive > 0]
    if not positive.size:
        return np.ones(arr.shape, bool)
    k = max(1, int(math.ceil(arr.size * percent / 100.0)))
    if positive.size <= k:
        return arr > 0
    kth = np.partition(positive, positive.size - k)[positive.size - k]
    return arr >= kth


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two boolean masks (0.0 when both are empty)."""
    import numpy as np

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    inter = int(np.count_nonzero(a & b))
    union = int(np.count_nonzero(a)) + int(np.count_nonzero(b)) - inter
    return float(inter / union) if union else 0.0


def top_iou(fmap: Any, region: Any, percent: float = TOP_PERCENT) -> float:
    """IoU of the map's top ``percent`` % region (:func:`top_region`) with the object."""
    return iou(top_region(fmap, percent), region)


def border_mask(shape: tuple[int, int], width: float = BORDER) -> np.ndarray:
    """The border band: ``max(1, round(width * short side))`` pixels along every edge."""
    import numpy as np

    h, w = shape
    band = max(1, int(round(width * min(h, w))))
    mask = np.zeros((h, w), bool)
    mask[:band], mask[-band:], mask[:, :band], mask[:, -band:] = True, True, True, True
    return mask


def border(fmap: Any, width: float = BORDER) -> float:
    """The share of the map's energy in its border band (:func:`border_mask`)."""
    arr = _energy_map(fmap)
    return float(arr[border_mask(arr.shape, width)].sum() / arr.sum())


def entropy(fmap: Any) -> float:
    """Shannon entropy of the map normalised to sum 1, over ``log N`` (N pixels): in [0, 1]."""
    import numpy as np

    arr = _energy_map(fmap)
    return _entropy(arr, float(arr.sum(dtype=np.float64)))


def _small(fmap: Any, side: int) -> np.ndarray:
    import cv2

    arr = _clean(fmap).astype("float32")
    h, w = arr.shape
    f = side / max(h, w)
    if f >= 1:
        return arr
    return cv2.resize(arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def spearman(a: Any, b: Any, side: int = AGREEMENT_SIDE) -> float:
    """Spearman's rank correlation of two maps' pixels (ties ranked by their mean rank), on the maps
    area-resized to at most ``side`` pixels a side; 0.0 when either map is constant."""
    import numpy as np
    from scipy.stats import rankdata

    x, y = _small(a, side).ravel(), _small(b, side).ravel()
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    rx, ry = rankdata(x), rankdata(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def measure(fmap: Any, region: Any | None, *, tolerance: float = TOLERANCE, percent: float = TOP_PERCENT,
            border_width: float = BORDER) -> dict[str, float | None]:
    """Every measure of one map: the region's (None without a region) and the others."""
    return measure_clean(_clean(fmap), region, tolerance=tolerance, percent=percent, border_width=border_width)


def clean(fmap: Any) -> np.ndarray:
    """The map cleaned for :func:`measure_clean` (float32, >= 0, NaN as 0), in place where it is a float32
    array already (a map the caller owns: the audit's maps carried back to the original pixels)."""
    return _clean(fmap, copy=False)


def measure_clean(arr: np.ndarray, region: Any | None, *, tolerance: float = TOLERANCE,
                  percent: float = TOP_PERCENT, border_width: float = BORDER) -> dict[str, float | None]:
    """:func:`measure` of a map :func:`clean` made already (every measure reads the same clean map)."""
    import numpy as np

    positive = arr.ravel()
    positive = positive[positive > 0]  # a CAM is mostly zeros after its ReLU: what the sums and the top read
    weights = arr if positive.size else np.ones_like(arr)
    total = float(weights.sum(dtype=np.float64))
    out: dict[str, float | None] = dict(pointing=None, energy=None, iou=None)
    if region is not None:
        inside = np.asarray(region, bool)
        out["pointing"] = _pointing(_peak(arr), inside, tolerance)
        out["energy"] = float(weights[inside].sum(dtype=np.float64) / total)
        out["iou"] = iou(_top(arr, percent, positive), inside)
    out["border"] = float(weights[border_mask(arr.shape, border_width)].sum(dtype=np.float64) / total)
    out["entropy"] = _entropy(positive if positive.size else weights, total, arr.size)
    return out


def _entropy(weights: np.ndarray, total: float, size: int | None = None) -> float:
    """``-sum(p log p) / log N`` over the positive weights, ``p = w / total``; N is ``size`` (the map's pixels)
    where ``weights`` are only its positive values already (the audit's measures gather them once), else
    ``weights.size``."""
    import numpy as np

    size = weights.size if size is None else size
    if size <= 1:
        return 0.0
    positive = weights if size != weights.size else weights[weights > 0]
    p = positive.astype(np.float64) / total
    return float(-(p * np.log(p)).sum() / math.log(size))


def agreement(a: Any, b: Any, percent: float = TOP_PERCENT) -> dict[str, float]:
    """How far two methods' maps of one class agree: :func:`spearman` and the IoU of their top regions."""
    return dict(spearman=spearman(a, b), agreement_iou=iou(top_region(a, percent), top_region(b, percent)))


# ---- annotations -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Obj:
    """One annotated object: its category name (or None), its box (x0, y0, x1, y1) in original pixels with
    exclusive ends, and its polygons (COCO ``segmentation``, lists of x, y, ...) when it has them."""

    category: str | None
    box: tuple[float, float, float, float]
    polygons: tuple[tuple[float, ...], ...] = ()


@dataclass
class Annotations:
    """Objects by image, looked up by an image's path (:meth:`objects`); or a folder of masks (``masks``)."""

    by_name: dict[str, list[tuple[str, list[Obj]]]] = field(default_factory=dict)  # basename -> (file_name, objs)
    masks: Path | None = None
    source: str = ""
    categories: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)  # what was left out of the file, said as notes

    def add(self, file_name: str, objs: list[Obj]) -> None:
        key = file_name.replace("\\", "/")
        self.by_name.setdefault(key.rsplit("/", 1)[-1], []).append((key, objs))
        self.categories.update(o.category for o in objs if o.category is not None)

    def objects(self, path: str | Path) -> list[Obj] | None:
        """The objects annotated for the image at ``path`` (None when the file does not list it): its
        ``file_name`` is matched by the longest path suffix the two share (``val2017/1.jpg`` against
        ``/data/coco/val2017/1.jpg``), else by the file name alone when only one entry has it."""
        posix = str(path).replace("\\", "/")
        found = self.by_name.get(posix.rsplit("/", 1)[-1])
        if not found:
            stem = Path(posix).stem  # VOC: Annotations/<stem>.xml for JPEGImages/<stem>.jpg
            found = self.by_name.get(f"{stem}.xml")
            if not found:
                return None
        if len(found) == 1:
            return found[0][1]
        best = [objs for name, objs in found if posix.endswith("/" + name.lstrip("./")) or posix == name]
        return best[0] if len(best) == 1 else None

    def mask_file(self, path: str | Path, root: Path | None) -> Path | None:
        """The mask of ``path`` in the ``masks`` folder: the same relative path under it (from ``root``), else
        the same file stem at its top, as ``.png``, ``.npy`` or any image suffix."""
        from visctl.images import IMAGE_SUFFIXES

        if self.masks is None:
            return None
        p = Path(path)
        candidates: list[Path] = []
        if root is not None:
            try:
                rel = p.resolve().relative_to(Path(root).resolve())
                candidates += [self.masks / rel.with_suffix(s) for s in (".png", ".npy", p.suffix)]
            except ValueError:
                pass
        candidates += [self.masks / (p.stem + s) for s in (".png", ".npy", *sorted(IMAGE_SUFFIXES))]
        return next((c for c in candidates if c.is_file()), None)


def read_coco(path: Path) -> Annotations:
    """A COCO instances file: ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``,
    ``category_id``, ``bbox`` as [x, y, width, height], optional polygon ``segmentation``) and ``categories``
    (``id``, ``name``); the format pycocotools' ``COCO`` reads (crowd RLE masks are read by their boxes)."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"cannot read the COCO file {path}: {exc}", hint="give a COCO instances .json") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InputError(f"{path} is not a COCO instances file: it has no 'images' list",
                         hint="give a COCO .json with images, annotations and categories")
    names = {_id_key(c.get("id")): str(c.get("name")) for c in doc.get("categories") or [] if isinstance(c, dict)}
    objs: dict[Any, list[Obj]] = {}
    annotations = [a for a in doc.get("annotations") or [] if isinstance(a, dict)]
    unusable: list[Any] = []
    bad_polygons: list[Any] = []
    for a in annotations:
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: an integer past float's range
            unusable.append(_shown(a.get("bbox")))
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            unusable.append(_shown(a.get("bbox")))
            continue
        polys = _polygons(a.get("segmentation"))
        if polys is None:  # a polygon of odd length, or of coordinates that are no finite numbers
            bad_polygons.append(_shown(a.get("segmentation")))
            continue
        objs.setdefault(_id_key(a.get("image_id")), []).append(
            Obj(names.get(_id_key(a.get("category_id"))), (x, y, x + w, y + h), polys))
    found = Annotations(source=f"COCO {Path(path).name}")
    ids = set()
    for im in doc["images"]:
        if isinstance(im, dict) and isinstance(im.get("file_name"), str):
            found.add(im["file_name"], objs.get(_id_key(im.get("id")), []))
            ids.add(_id_key(im.get("id")))
    hint = "COCO's bbox is [x, y, width, height] in pixels; each annotation's image_id is the id of an entry of images"
    if annotations and not objs:
        what = (f"a usable bbox (e.g. {unusable[0]}: not 4 finite numbers with a positive width and height)"
                if unusable else f"a usable segmentation (e.g. {bad_polygons[0]}: a polygon is an even number "
                "(at least 6) of finite x, y coordinates)")
        raise InputError(f"{path}: none of its {len(annotations)} annotations has {what}", hint=hint)
    orphans = [k for k in objs if k not in ids]
    if objs and len(orphans) == len(objs):
        shown = sorted(ids, key=str)[:3]
        raise InputError(f"{path}: its annotations are of image ids none of its images has (e.g. {orphans[0]!r}; "
                         f"the images' ids: {', '.join(map(repr, shown))}{', ...' if len(ids) > 3 else ''})",
                         hint=hint)
    if unusable:
        found.problems.append(f"{len(unusable)} annotation(s) have no usable bbox (e.g. {unusable[0]}) and are "
                              "left out")
    if bad_polygons:
        found.problems.append(f"{len(bad_polygons)} annotation(s) have an unusable segmentation polygon (e.g. "
                              f"{bad_polygons[0]}: not an even number of finite x, y coordinates) and are left out")
    if orphans:
        found.problems.append(f"{sum(len(objs[k]) for k in orphans)} annotation(s) are of image ids no image has "
                              f"(e.g. {orphans[0]!r}) and are left out")
    return found


def _id_key(value: Any) -> Any:
    """An image id as pycocotools matches it (a dict key: 1 and 1.0 are one id, "1" another)."""
    return value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else repr(value)


def _shown(value: Any, limit: int = 80) -> str:
    """A value of the file, shown in a message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...]"


#: a coordinate beyond this many pixels is no image's (OpenCV's fillPoly takes int32 coordinates)
_FAR = 2.0 ** 30


def _polygons(seg: Any) -> tuple[tuple[float, ...], ...] | None:
    """An annotation's polygon ``segmentation`` as tuples of floats (() for none, or an RLE mask: read by its
    box); None where a polygon is unusable: an odd number of coordinates, or ones that are no finite numbers."""
    if not isinstance(seg, list):
        return ()
    out = []
    for p in seg:
        if not isinstance(p, list):
            continue
        if len(p) % 2:
            return None
        try:
            coords = tuple(float(v) for v in p if not isinstance(v, bool))
        except (TypeError, ValueError, OverflowError):
            return None
        if len(coords) != len(p) or not all(math.isfinite(v) and abs(v) < _FAR for v in coords):
            return None
        if len(coords) >= 6:
            out.append(coords)
    return tuple(out)


def read_voc(path: Path) -> Annotations:
    """PASCAL VOC annotation files (one ``.xml`` or a folder of them): each ``object``'s ``name`` and
    ``bndbox``. VOC's corners are 1-based pixel indices, both included (the devkit's convention), so the box
    in 0-based pixels with exclusive ends is ``(xmin - 1, ymin - 1, xmax, ymax)``."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    files = sorted(path.rglob("*.xml")) if path.is_dir() else [path]
    found = Annotations(source=f"VOC {path.name}")
    unusable = 0
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError) as exc:
            raise InputError(f"cannot read the VOC file {f}: {exc}", hint="give VOC .xml annotation files") from None
        objs = []
        for o in root.iter("object"):
            box = o.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr]
            except (AttributeError, ValueError):
                unusable += 1
                continue
            if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)) or xmax < xmin or ymax < ymin:
                unusable += 1
                continue
            objs.append(Obj((o.findtext("name") or "").strip() or None, (xmin - 1, ymin - 1, xmax, ymax)))
        name = (root.findtext("filename") or "").strip()
        found.add(name or f.name, objs)
        if name and Path(name).stem != f.stem:  # the xml's own name, too
            found.add(f.name, objs)
    if unusable and not any(objs for entries in found.by_name.values() for _, objs in entries):
        raise InputError(f"{path}: none of its {unusable} object(s) has a usable bndbox (4 finite corners, "
                         "xmin <= xmax, ymin <= ymax)", hint="VOC's bndbox holds xmin, ymin, xmax, ymax: 1-based "
                         "pixel corners, both included")
    if unusable:
        found.problems.append(f"{unusable} object(s) have no usable bndbox (4 finite corners, xmin <= xmax, "
                              "ymin <= ymax) and are left out")
    return found


def read_annotations(path: Path | None = None, region: Path | None = None) -> Annotations | None:
    """``--annotations`` (a COCO .json, a VOC .xml or a folder of them) or ``--region`` (a folder of masks)."""
    if path is not None and region is not None:
        raise InputError("annotations= and region= both give the objects", hint="give one of them")
    if region is not None:
        if not Path(region).is_dir():
            raise InputError(f"region={region} is not a folder",
                             hint="a folder of masks named like the images (nonzero inside the object)")
        return Annotations(masks=Path(region), source=f"masks in {region}")
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        raise InputError(f"annotation file not found: {path}", hint="give a COCO .json, a VOC .xml or a folder of them")
    if path.is_dir() or path.suffix.lower() == ".xml":
        found = read_voc(path)
    elif path.suffix.lower() == ".json":
        found = read_coco(path)
    else:
        raise InputError(f"{path}: annotations are read from COCO .json or VOC .xml files",
                         hint="give a COCO instances .json, a VOC .xml or a folder of VOC .xml files")
    if not found.by_name:
        raise InputError(f"{path} annotates no image", hint="check the file (COCO: images[].file_name)")
    return found


def object_region(objs: list[Obj], class_name: str | None, shape: tuple[int, int],
                  categories: set[str], class_names: Iterable[str] | None) -> np.ndarray | None:
    """The object of ``class_name`` as a boolean (H, W) mask: the union of its boxes (or polygons, where the
    file has them). When the file's category names are none of the model's class names, every object counts
    (one object per image, named otherwise); None when the image has no object of the class."""
    import cv2
    import numpy as np

    named = bool(categories & set(class_names or ()))
    chosen = [o for o in objs if not named or o.category == class_name]
    if not chosen:
        return None
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    for o in chosen:
        if o.polygons:
            for poly in o.polygons:
                pts = np.asarray(poly, np.float64).reshape(-1, 2)
                cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
            continue
        x0, y0, x1, y1 = o.box
        # pixels whose centre lies inside the box
        c0, r0 = max(0, int(math.ceil(x0 - 0.5))), max(0, int(math.ceil(y0 - 0.5)))
        c1, r1 = min(w, int(math.ceil(x1 - 0.5))), min(h, int(math.ceil(y1 - 0.5)))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = 1
    return mask.astype(bool) if mask.any() else None


def mask_region(path: Path, shape: tuple[int, int], max_pixels: int | None) -> np.ndarray:
    """A ``--region`` mask file as a boolean (H, W) mask of the image's size (nonzero inside)."""
    import numpy as np

    from visctl.images import read_mask

    arr = read_mask(path, max_pixels)
    if arr.shape != tuple(shape):
        raise InputError(f"the mask {path} is {arr.shape[1]}x{arr.shape[0]}, its image {shape[1]}x{shape[0]}",
                         hint="give each mask at its image's size")
    return np.asarray(arr) != 0


# ---- exact running sums (the same digits in any order: torchrun's ranks sum their shards) -----------------

class ExactSum:
    """A float sum kept exactly (Shewchuk's partials, as ``math.fsum``): the result does not depend on the
    order of the additions, so a run sharded over several processes sums to a one-process run's digits."""

    __slots__ = ("partials",)

    def __init__(self, partials: Iterable[float] = ()) -> None:
        self.partials: list[float] = list(partials)

    def add(self, x: float) -> None:
        i = 0
        for y in self.partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                self.partials[i] = lo
                i += 1
            x = hi
        self.partials[i:] = [x]

    def merge(self, other: ExactSum) -> None:
        for x in other.partials:
            self.add(x)

    @property
    def value(self) -> float:
        return math.fsum(self.partials)


class Tally:
    """Counts and exact sums of one group (a class, or the whole run)."""

    def __init__(self) -> None:
        self.n = 0
        self.correct = 0
        self.right_reason = 0  # correct, peak on the object
        self.wrong_reason = 0  # correct, peak off the object: right for the wrong reason
        self.located = 0  # correct predictions with an object region
        self.sums: dict[str, ExactSum] = {}
        self.counts: dict[str, int] = {}

    def add(self, row: dict[str, Any]) -> None:
        self.n += 1
        self.correct += int(bool(row["correct"]))
        if row["correct"] and row.get("pointing") is not None:
            self.located += 1
            if row["pointing"] >= 1:
                self.right_reason += 1
            else:
                self.wrong_reason += 1
        for name in MEASURES:
            v = row.get(name)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                s = self.sums.get(name)
                if s is None:
                    s = self.sums[name] = ExactSum()
                s.add(float(v))
                self.counts[name] = self.counts.get(name, 0) + 1

    def merge(self, other: Tally) -> None:
        self.n += other.n
        self.correct += other.correct
        self.right_reason += other.right_reason
        self.wrong_reason += other.wrong_reason
        self.located += other.located
        for name, s in other.sums.items():
            self.sums.setdefault(name, ExactSum()).merge(s)
            self.counts[name] = self.counts.get(name, 0) + other.counts[name]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(n=self.n, accuracy=_round(self.correct / self.n) if self.n else None)
        for name in MEASURES:
            if self.counts.get(name):
                out[name] = _round(self.sums[name].value / self.counts[name])
        if self.located:
            out["right_reason"] = _round(self.right_reason / self.located)
        out["right_for_wrong_reason"] = self.wrong_reason
        return out


def _round(v: float) -> float:
    return float(f"{v:.6g}")


# ---- the rows, the CSV and the worst images --------------------------------------------------------------

#: the CSV's columns, in order (audit.csv); measures of the predicted class's map carry a ``pred_`` prefix
COLUMNS = ("index", "path", "label", "class", "predicted", "predicted_class", "correct", "p_true", "p_predicted",
           "object", "peak_x", "peak_y", "pointing", "energy", "iou", "border", "entropy", "spearman",
           "agreement_iou", "right_for_wrong_reason", "pred_pointing", "pred_energy", "pred_iou", "pred_border",
           "pred_entropy")


def csv_header() -> str:
    return ",".join(COLUMNS) + "\n"


def csv_line(row: dict[str, Any]) -> str:
    """One row of audit.csv: every number with 6 significant digits, an empty cell where a measure has none."""
    cells = []
    for c in COLUMNS:
        v = row.get(c)
        if v is None:
            cells.append("")
        elif isinstance(v, bool):
            cells.append(str(int(v)))
        elif isinstance(v, float):
            cells.append("" if math.isnan(v) else f"{v:.6g}")
        else:
            cells.append(str(v))
    return csv_record(cells)


def csv_record(cells: Iterable[str]) -> str:
    """One CSV record ending in ``\n``: a cell holding a comma, a quote, ``\r`` or ``\n`` quoted (the csv module
    with ``lineterminator="\n"`` leaves a bare ``\r`` unquoted, which splits the record for every reader). Cells
    are written exactly as they are: a file name starting with ``=`` is not changed (spreadsheets may read it as
    a formula; the CSV keeps the names exact, for the programs that read it)."""
    out = []
    for cell in cells:
        if any(c in cell for c in ',"\r\n'):
            cell = '"' + cell.replace('"', '""') + '"'
        out.append(cell)
    return ",".join(out) + "\n"


def badness(row: dict[str, Any]) -> tuple[float, ...]:
    """How a row sorts, worst first: with an object, its pointing, energy and IoU (lowest first); without,
    the border share (highest first); then the run order."""
    if row.get("pointing") is not None:
        return (row["pointing"], row["energy"], row["iou"], row["index"])
    return (-row["border"], row["index"])


@dataclass(frozen=True)
class Kept:
    """One of the worst images: its row and its thumbnail (RGB uint8)."""

    key: tuple[float, ...]
    row: dict[str, Any]
    thumb: Any = field(default=None, repr=False)


class Worst:
    """The ``n`` lowest keys seen, with their thumbnails; a thumbnail is drawn only for a row that gets in."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.kept: list[Kept] = []
        self.bar: tuple[float, ...] | None = None  # the key a row must be under to get in, once n are kept

    def may_take(self, key: tuple[float, ...]) -> bool:
        """Whether a row of ``key`` could still get in (read from another thread: the bar only falls, so a row
        that gets in later was under the bar read now)."""
        bar = self.bar
        return self.n > 0 and (bar is None or key < bar)

    def offer(self, key: tuple[float, ...], row: dict[str, Any], draw: Callable[[], Any]) -> None:
        if self.n <= 0 or (len(self.kept) >= self.n and key >= self.kept[-1].key):
            return
        keys = [k.key for k in self.kept]
        self.kept.insert(bisect.bisect(keys, key), Kept(key, row, draw()))
        del self.kept[self.n:]
        if len(self.kept) >= self.n:
            self.bar = self.kept[-1].key

    def merge(self, others: Iterable[Kept]) -> None:
        self.kept = sorted([*self.kept, *others], key=lambda k: k.key)[:self.n]
        self.bar = self.kept[-1].key if self.n > 0 and len(self.kept) >= self.n else None


# ---- the thumbnails --------------------------------------------------------------------------------------

def thumbnail(image: Any, fmap: Any, boxes: list[tuple[float, float, float, float]], region: Any | None,
              at: tuple[int, int] | None, side: int = 160, colormap: str = "jet") -> np.ndarray:
    """The map over the image at ``side`` px (long side), the object's boxes (or mask outline) in green and
    the map's peak as a white ring."""
    import cv2
    import numpy as np

    from visctl import render

    h, w = image.shape[:2]
    f = side / max(h, w)
    small = render.fit(image, side)
    out = render.overlay(small, _clean(fmap), alpha=0.5, colormap=colormap)
    green = (40, 230, 40)
    if boxes:
        for x0, y0, x1, y1 in boxes:
            cv2.rectangle(out, (int(round(x0 * f)), int(round(y0 * f))),
                          (int(round(x1 * f)) - 1, int(round(y1 * f)) - 1), green, 1)
    elif region is not None:
        m = cv2.resize(np.asarray(region, np.uint8), (out.shape[1], out.shape[0]), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, green, 1)
    if at is not None:
        c = (int(round((at[0] + 0.5) * f)), int(round((at[1] + 0.5) * f)))
        cv2.circle(out, c, 5, (0, 0, 0), 2)
        cv2.circle(out, c, 5, (255, 255, 255), 1)
    return out


def side_by_side(a: Any, b: Any, gap: int = 4) -> np.ndarray:
    """Two thumbnails of one image next to each other (the compared checkpoints)."""
    import numpy as np

    h = max(a.shape[0], b.shape[0])
    out = np.full((h, a.shape[1] + gap + b.shape[1], 3), 255, np.uint8)
    out[:a.shape[0], :a.shape[1]] = a
    out[:b.shape[0], a.shape[1] + gap:] = b
    return out


def table(summary: dict[str, Any]) -> list[str]:
    """The per-class summary as text lines (stderr): one line per class, then the whole run."""
    overall = summary.get("overall", {})
    names = [m for m in ("accuracy", "pointing", "energy", "iou", "border", "entropy", "spearman", "right_reason")
             if m in overall]
    short = dict(accuracy="acc", pointing="point", energy="energy", iou="iou", border="border", entropy="entropy",
                 spearman="spearman", right_reason="right")
    lines = [f"{'class':<20}{'n':>7}" + "".join(f"{short[m]:>9}" for m in names)
             + ("  wrong-reason" if "right_reason" in overall else "")]

    def line(name: str, s: dict[str, Any]) -> str:
        cells = "".join(f"{s[m]:>9.3f}" if isinstance(s.get(m), float) else f"{'-':>9}" for m in names)
        tail = f"{s.get('right_for_wrong_reason', 0):>14d}" if "right_reason" in overall else ""
        return f"{name[:19]:<20}{s.get('n', 0):>7d}{cells}{tail}"

    lines += [line(str(c["class"]), c) for c in summary.get("per_class", [])]
    lines.append(line("all", overall))
    return lines


# ---- --fail-under ----------------------------------------------------------------------------------------

def parse_thresholds(specs: Iterable[str] | None) -> dict[str, float]:
    """``fail_under`` (``NAME=VALUE``, several in a list or comma-separated) as {name: value}; the names are the
    measures and the rates (:data:`MEASURES`, :data:`RATES`)."""
    from visctl.errors import ArgumentError

    known = [*MEASURES, *RATES]
    out: dict[str, float] = {}
    for spec in specs or []:
        for part in str(spec).split(","):
            name, sep, value = part.partition("=")
            name = name.strip()
            hint = f'NAME=VALUE with NAME one of {", ".join(known)}, e.g. fail_under="pointing=0.8"'
            if not sep or name not in known:
                raise ArgumentError(f"fail_under={part!r}: " + ("not NAME=VALUE" if not sep
                                                                else f"unknown measure {name!r}"), hint=hint)
            try:
                number = float(value)
            except ValueError:
                raise ArgumentError(f"fail_under={part!r}: {value!r} is not a number", hint=hint) from None
            if not math.isfinite(number):
                raise ArgumentError(f"fail_under={part!r}: {value!r} is not a finite number", hint=hint)
            if name in out:
                raise ArgumentError(f"fail_under= names {name} twice ({f'{name}={out[name]:g}'!r} and {part.strip()!r})",
                                    hint=f'give one threshold per measure, e.g. fail_under="{name}={number:g}"')
            out[name] = number
    return out


def check_thresholds(thresholds: Any) -> dict[str, float]:
    """The API's ``fail_under`` given as a dict: the same checks as the string form (known names, finite
    numbers)."""
    from visctl.errors import ArgumentError

    if not isinstance(thresholds, dict):
        raise ArgumentError(f"fail_under {thresholds!r} is not a dict, a str or a list of str",
                            hint='give e.g. {"pointing": 0.8} or "pointing=0.8"')
    specs = []
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentError(f"fail_under[{name!r}] = {value!r} is not a number",
                                hint='give e.g. {"pointing": 0.8}')
        specs.append(f"{name}={float(value)!r}")
    return parse_thresholds(specs)


def failed_thresholds(summary: dict[str, Any], thresholds: dict[str, float]) -> list[str]:
    """The thresholds the run's means fall under, as ``pointing 0.62 < 0.8``; a measure the run could not
    compute (no annotations) fails too, as ``pointing n/a (no annotations)``."""
    out = []
    for name, want in thresholds.items():
        got = summary.get(name)
        if got is None:
            out.append(f"{name} n/a < {want:g}" + (" (no object annotations)" if name in ("pointing", "energy",
                                                                                        "iou", "right_reason")
                                                   else ""))
        elif got < want:
            out.append(f"{name} {got:.4g} < {want:g}")
    return out
