"""Datasets from configs: class folders, annotation lists, plain folders, local CIFAR, FakeData.

A dataset here yields raw samples — an RGB uint8 image, a label (or None) and a path (or None) — and the
pipeline runs outside it, so browsing never deep-copies a dataset or its caches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visctl.errors import ConfigError, InputError

# OpenMMLab dataset wrappers that hold the real dataset under `dataset`
_WRAPPERS = ("RepeatDataset", "ClassBalancedDataset", "KFoldDataset", "ConcatDataset")
# torchvision / OpenMMLab datasets that fetch their files from the internet when missing
_DOWNLOADING = ("MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST", "SVHN", "STL10", "Caltech101", "Caltech256",
                "Flowers102", "OxfordIIITPet", "Food101", "StanfordCars", "CUB", "VOC", "COCO", "Places365",
                "INaturalist", "CelebA", "DTD", "FGVCAircraft")


@dataclass
class Sample:
    """One raw sample."""

    image: Any  # (H, W, 3) RGB uint8
    label: int | None
    path: str | None


class Dataset:
    """A list of samples with class names; ``load(i)`` reads one."""

    classes: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        raise NotImplementedError

    def name(self, index: int) -> str:
        """A stable name for sample ``index`` (its path, else its index)."""
        return f"{index:06d}"

    def class_name(self, label: int | None) -> str | None:
        """The name of class ``label`` (an index into ``classes``), or None when it has none."""
        if label is None or not self.classes or not 0 <= label < len(self.classes):
            return None
        return self.classes[label]

    def labels(self) -> list[int]:
        """Every sample's label (-1 for none), without reading the images where the dataset knows them."""
        return [-1 if (lab := self.load(i).label) is None else lab for i in range(len(self))]


class FileDataset(Dataset):
    """Image files with optional labels; an image over ``max_pixels`` fails to load like a broken file."""

    def __init__(self, files: list[tuple[Path, int | None]], classes: list[str] | None,
                 max_pixels: int | None = None) -> None:
        self.files = files
        self.classes = classes
        self.max_pixels = max_pixels  # kept here: the DataLoader workers load with it

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Sample:
        from visctl.images import read_image

        path, label = self.files[index]
        return Sample(read_image(path, self.max_pixels), label, str(path))

    def name(self, index: int) -> str:
        return str(self.files[index][0])

    def labels(self) -> list[int]:
        return [-1 if lab is None else lab for _, lab in self.files]


class TorchvisionDataset(Dataset):
    """A torchvision dataset that returns PIL images (FakeData)."""

    def __init__(self, ds: Any, classes: list[str] | None) -> None:
        self.ds = ds
        self.classes = classes

    def __len__(self) -> int:
        return len(self.ds)

    def load(self, index: int) -> Sample:
        import numpy as np

        img, label = self.ds[index]
        return Sample(np.asarray(img.convert("RGB")), int(label), None)


# What a CIFAR python batch may ask the unpickler for: numpy's array, dtype and scalar reconstruction (the
# batches are a dict of bytes keys, a uint8 array and lists of ints and bytes, pickled by Python 2's cPickle),
# plain builtin containers, and the two helpers a Python 3 re-pack uses (protocol 5 arrays: _frombuffer;
# protocol 2 bytes: _codecs.encode, allowed with latin-1 only, below). Anything else — os.system,
# subprocess, builtins.eval, ... — is what a crafted file needs to run code, and is refused.
_CIFAR_GLOBALS = frozenset(
    [(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("builtins", n) for n in ("bytes", "bytearray", "dict", "list", "tuple", "set", "frozenset", "int",
                                  "float", "str", "bool")])


class _Refused(Exception):
    """A global that a CIFAR batch never holds, asked for by the file being unpickled."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle of ``bytes`` calls it, and nothing else."""
    if encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin-1")


def load_cifar_pickle(path: Path) -> Any:
    """Unpickle a CIFAR python batch (or meta file), allowing only what such files hold.

    ``pickle.load`` would call whatever a crafted file names (``os.system``, ...); this unpickler resolves only
    ``_CIFAR_GLOBALS`` and raises InputError, naming the file, for anything else.
    """
    import pickle

    class CifarUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("_codecs", "encode"):
                return _latin1_encode
            if (module, name) not in _CIFAR_GLOBALS:
                raise _Refused(f"{module}.{name}")
            return super().find_class(module, name)

    hint = "use the python version of CIFAR (cifar-10-batches-py / cifar-100-python)"
    try:
        with open(path, "rb") as fh:
            return CifarUnpickler(fh, encoding="bytes").load()
    except _Refused as exc:
        raise InputError(f"refusing to read {path}: it asks the unpickler for {exc}, which a CIFAR batch never "
                         "holds", hint="CIFAR batches hold only numpy arrays, lists and bytes; this file may be "
                         "crafted to run code: replace it with the original batch") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise InputError(f"{path} is not a CIFAR python batch ({type(exc).__name__}: {exc})", hint=hint) from None


def _entry(batch: Any, key: str, path: Path) -> Any:
    """``batch[key]`` under a bytes key (Python 2 pickles, read with encoding="bytes") or a str key (re-packs)."""
    if isinstance(batch, dict):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
    raise InputError(f"{path} is not a CIFAR python batch: it has no {key!r} entry",
                     hint="use the python version of CIFAR (cifar-10-batches-py / cifar-100-python)")


_CIFAR_HINT = "use the python version of CIFAR (cifar-10-batches-py / cifar-100-python), or re-pack the batch " \
    "as it does: data (N, 3072) uint8 rows (1024 red, 1024 green, 1024 blue values), N labels"


def _cifar_rows(data: Any, path: Path) -> Any:
    """A CIFAR batch's ``data`` as (N, 32, 32, 3) uint8 images: it must be N rows of 3 x 32 x 32 = 3072 bytes."""
    import numpy as np

    arr = np.asarray(data) if isinstance(data, np.ndarray) or isinstance(data, (list, tuple)) else None
    if arr is None or arr.dtype.kind not in "ui" or arr.ndim != 2 or arr.shape[1] != 3072:
        what = (f"{type(data).__name__}" if arr is None else
                f"a {arr.dtype} array of shape {arr.shape}" if arr.dtype.kind not in "ui" or arr.ndim != 2 else
                f"{arr.shape[0]} rows of {arr.shape[1]} values")
        raise InputError(f"{path}: the CIFAR data is {what}, not rows of 3072 values (3 x 32 x 32 pixels)",
                         hint=_CIFAR_HINT)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(f"{path}: the CIFAR data holds values outside 0-255 ({arr.min()} .. {arr.max()})",
                         hint=_CIFAR_HINT)
    return arr.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar_labels(values: Any, rows: int, n_cls: int, key: str, path: Path) -> list[int]:
    """A CIFAR batch's labels: one whole number in 0 .. n_cls-1 per data row."""
    import numbers

    if not isinstance(values, (list, tuple)) and not hasattr(values, "tolist"):
        raise InputError(f"{path}: the CIFAR {key} entry is {type(values).__name__}, not a list of labels",
                         hint=_CIFAR_HINT)
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    if not isinstance(values, list) or len(values) != rows:
        raise InputError(f"{path}: {len(values) if isinstance(values, list) else 1} labels for {rows} images",
                         hint=_CIFAR_HINT)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= int(v) < n_cls]
    if bad:
        raise InputError(f"{path}: {len(bad)} label(s) are not class indices 0 .. {n_cls - 1}, e.g. {bad[0]!r}",
                         hint=_CIFAR_HINT)
    return [int(v) for v in values]


class CifarDataset(Dataset):
    """CIFAR-10/100 from the python-version batches on disk (the format torchvision and mmpretrain read).

    Read directly, without torchvision's md5 check, so a subset or a re-packed copy works too; read with a
    restricted unpickler (``load_cifar_pickle``), so a crafted batch cannot run code.
    """

    def __init__(self, root: Path, kind: str, train: bool, classes: list[str] | None) -> None:
        import numpy as np

        folder = root / ("cifar-10-batches-py" if kind == "CIFAR10" else "cifar-100-python")
        if not folder.is_dir() and (root / ("data_batch_1" if kind == "CIFAR10" else "train")).exists():
            folder = root
        if kind == "CIFAR10":
            names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
            meta, key, label_key = "batches.meta", "label_names", "labels"
        else:
            names = ["train"] if train else ["test"]
            meta, key, label_key = "meta", "fine_label_names", "fine_labels"
        present = [folder / n for n in names if (folder / n).is_file()]
        if not present:
            raise ConfigError(f"{kind} files are not under {root}",
                              hint=f"visctl never downloads: put {folder.name}/ ({', '.join(names)}) there, or point "
                              "data_root at it")
        data: list[np.ndarray] = []
        labels: list[int] = []
        n_cls = 10 if kind == "CIFAR10" else 100
        for path in present:
            batch = load_cifar_pickle(path)
            data.append(_cifar_rows(_entry(batch, "data", path), path))
            labels.extend(_cifar_labels(_entry(batch, label_key, path), len(data[-1]), n_cls, label_key, path))
        self.images = np.concatenate(data)
        self._labels = labels
        if classes is None and (folder / meta).is_file():
            found = _entry(load_cifar_pickle(folder / meta), key, folder / meta)
            if not isinstance(found, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in found):
                raise InputError(f"{folder / meta}: {key} is not a list of class names", hint=_CIFAR_HINT)
            classes = [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in found]
        self.classes = classes

    def __len__(self) -> int:
        return len(self._labels)

    def load(self, index: int) -> Sample:
        return Sample(self.images[index], self._labels[index], None)

    def labels(self) -> list[int]:
        return list(self._labels)


def _whole(value: Any, where: str, least: int, example: str) -> int:
    """A whole number of at least ``least`` from a dataset dict (``size``, ``num_classes``, ...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{where}={value!r} is not a whole number of at least {least}", hint=example)
    return value


def length(dataset: Any) -> int:
    """``len(dataset)``, refused with one line where a dataset says a negative or non-integer length (Python's
    ``len`` raises ValueError / TypeError / OverflowError there)."""
    try:
        n = len(dataset)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(f"the dataset ({type(dataset).__name__}) reports no valid length: {exc}",
                          hint="a dataset's __len__ returns the number of samples, 0 or more; check its size "
                          "in the config (or the dataset class)") from None
    return n


#: the most samples whose labels are read one by one (by loading them) to choose samples by class: a dataset
#: that keeps its labels (class folders, annotation lists, CIFAR) gives them all at once instead
LABEL_SCAN_LIMIT = 20_000


def knows_labels(dataset: Any) -> bool:
    """Whether ``dataset.labels()`` comes without loading every sample (the class overrides it)."""
    return type(dataset).labels is not Dataset.labels


def scan_labels(dataset: Dataset, wanted: list[int] | None, per_class: int, limit: int | None = None,
                advance: Callable[[], None] | None = None) -> tuple[list[int], str | None]:
    """The labels to choose samples by class from: all of them where that is cheap or the dataset is small,
    else those of its first samples, read until every class in ``wanted`` has ``per_class`` samples, or
    ``limit`` samples were read.

    Returns:
        The labels (-1 for none) of samples 0 .. M-1, and None when M is the whole dataset, else a sentence
        saying where the reading stopped and why (for a warning).
    """
    n = length(dataset)
    if knows_labels(dataset):
        return dataset.labels(), None
    limit = LABEL_SCAN_LIMIT if limit is None else limit
    counts: dict[int, int] = {}
    labels: list[int] = []
    bounded = n > limit  # a dataset within the limit is read whole: its samples are drawn from all of it
    for i in range(min(n, limit)):
        lab = dataset.load(i).label
        labels.append(-1 if lab is None else int(lab))
        if lab is not None:
            counts[int(lab)] = counts.get(int(lab), 0) + 1
        if advance is not None:
            advance()
        if bounded and wanted and all(counts.get(c, 0) >= per_class for c in wanted):
            return labels, (f"read the labels of the first {len(labels):,} of the dataset's {n:,} samples, where "
                            f"each of the {len(wanted)} chosen classes has {per_class} "
                            "(max_num_samples_per_class=); the samples are drawn from those")
    if not bounded:
        return labels, None
    short = [c for c in (wanted or []) if counts.get(c, 0) < per_class]
    why = (f"; class(es) {', '.join(f'{c} ({counts.get(c, 0)})' for c in short[:8])}"
           f"{' ...' if len(short) > 8 else ''} have fewer than {per_class} there" if short else "")
    return labels, (f"read the labels of the first {len(labels):,} of the dataset's {n:,} samples (the scan limit: "
                    f"labels are read by loading each sample){why}; the samples are drawn from those")


def _unwrap(cfg: dict) -> dict:
    cfg = dict(cfg)
    while str(cfg.get("type", "")).split(".")[-1] in _WRAPPERS and isinstance(cfg.get("dataset"), dict):
        cfg = dict(cfg["dataset"])
    return cfg


def _config_classes(cfg: dict) -> list[str] | None:
    """The class names of a dataset dict: ``metainfo.classes`` over ``classes``; a str is a file, one a line.

    As mmpretrain's ``BaseDataset._compat_classes`` (mmpretrain/datasets/base_dataset.py, commit 0979e78):
    ``classes`` as a str is read with ``mmengine.list_from_file``, and
    ``metainfo = {'classes': tuple(class_names), **metainfo}`` lets ``metainfo['classes']`` win.
    """
    from visctl.config import check_class_names

    meta = cfg.get("metainfo")
    if isinstance(meta, dict) and meta.get("classes"):
        return check_class_names(meta.get("classes"), "dataset.metainfo.classes")
    return check_class_names(cfg.get("classes"), "dataset.classes")


def _class_folders(folder: Path, classes: list[str] | None, warn: Callable[[str], None]
                   ) -> tuple[list[tuple[Path, int | None]], list[str] | None]:
    """The labelled images of class folders under ``folder`` and the class names their labels index.

    Without ``classes``, mmpretrain's rule (mmpretrain/datasets/custom.py, commit 0979e78): ``find_folders``
    sorts the sub-folder names and numbers them in that order (``folders.sort(); folder_to_idx =
    {folders[i]: i ...}``), and ``get_samples`` walks ``sorted(folder_to_idx)`` then each folder's files
    sorted, labelling each ``folder_to_idx[folder_name]``.

    With ``classes``, a folder's label is the index of its name in ``classes``, so that name and image always
    agree. mmpretrain keeps the sorted-folder numbering here and only asserts, in
    ``CustomDataset._find_samples``, ``len(self.CLASSES) == len(classes)`` ("The number of subfolders ...
    doesn't match the number of specified classes"): a val split without one class is refused there, and a
    class list in another order than the sorted folders silently gives images another class's name.
    Numbering by name accepts a missing class folder and never misnames; a folder not in ``classes`` is
    listed in a warning and its images are skipped. Only when no folder is named after a class (ImageNet's
    wnid folders under human-readable class names) is mmpretrain's positional rule used, with its check that
    there is one folder per class, as a clear error.
    """
    from visctl.images import is_image_path
    from visctl.output.manifest import drop_visctl_outputs, is_visctl_folder

    def images_under(d: Path) -> list[Path]:  # what a visctl run wrote there (-o inside the data) is no sample
        return [p for p in drop_visctl_outputs(sorted(p for p in d.rglob("*") if p.is_file()))[0]
                if is_image_path(p)]

    subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not is_visctl_folder(p))
    if not subdirs:
        return [(p, None) for p in images_under(folder)], None
    if classes is None:
        folder_to_idx = {d: i for i, d in enumerate(subdirs)}
        classes = subdirs
    else:
        index: dict[str, int] = {}
        for i, c in enumerate(classes):
            index.setdefault(c, i)
        named = [d for d in subdirs if d in index]
        if named:
            folder_to_idx = {d: index[d] for d in named}
            extra = [d for d in subdirs if d not in index]
            if extra:
                warn(f"{folder}: {len(extra)} folder(s) not among the config's {len(classes)} classes, their "
                     f"images skipped: {', '.join(extra)}")
        elif len(subdirs) == len(classes):  # folders named otherwise (wnids): mmpretrain's positional rule
            folder_to_idx = {d: i for i, d in enumerate(subdirs)}
        else:
            raise InputError(f"the {len(subdirs)} folders under {folder} ({', '.join(subdirs[:5])}"
                             f"{', ...' if len(subdirs) > 5 else ''}) are not named after the config's "
                             f"{len(classes)} classes, and their number differs",
                             hint="name each class folder after its class in `classes`, or give one folder per "
                             "class (sorted folder names take the classes in order, as in mmpretrain)")
    files: list[tuple[Path, int | None]] = []
    empty = []
    for d in sorted(folder_to_idx):
        # sorted relative paths as strings, as get_samples sorts list_dir_or_file's names
        found = sorted((p.relative_to(folder / d).as_posix(), p) for p in images_under(folder / d))
        files.extend((p, folder_to_idx[d]) for _, p in found)
        if not found:
            empty.append(d)
    if empty and files:  # as get_samples' empty_folders and the warning _find_samples logs
        warn(f"{folder}: no image in the class folder(s) {', '.join(empty)}")
    if not files:  # class folders without images: the images beside them, unlabelled
        return [(p, None) for p in drop_visctl_outputs(sorted(folder.iterdir()))[0]
                if p.is_file() and is_image_path(p)], None
    return files, classes


def _python_warning(message: str) -> None:
    import warnings

    warnings.warn(message, stacklevel=3)


def build_dataset(cfg: dict, phase: str = "train", warn: Callable[[str], None] | None = None,
                  max_pixels: int | None = None) -> Dataset:
    """Build the dataset of a ``<phase>_dataloader.dataset`` dict without downloading anything.

    Understood: ImageFolder (root), mmpretrain's CustomDataset / ImageNet (data_root, data_prefix, ann_file
    with ``path label`` lines, or class folders), a plain folder or list (ImageList: root, files), CIFAR10 /
    CIFAR100 from local files, and FakeData. Labels index the config's ``classes`` (``metainfo.classes``,
    ``classes``): see ``_class_folders`` for class folders.

    Args:
        cfg: the dataset dict.
        phase: train, val or test (ImageNet's default folder, CIFAR's split).
        warn: called with each warning (skipped folders, empty class folders); ``warnings.warn`` by default.
        max_pixels: the pixel budget of one image (``--max-pixels``); None for none.
    """
    warn = warn or _python_warning
    cfg = _unwrap(cfg)
    kind = str(cfg.get("type", "")).split(".")[-1]
    classes = _config_classes(cfg)
    # the package's names: for annotation lists, and for class folders one per class (mmpretrain's rule); other
    # folders keep their own names, where mmpretrain refuses the layout
    fallback = cfg.pop(PACKAGE_CLASSES, None) if classes is None else None
    if kind in ("CIFAR10", "CIFAR100"):
        root = Path(str(cfg.get("root") or cfg.get("data_root") or cfg.get("data_prefix") or "."))
        train = cfg.get("train", cfg.get("split", phase) == "train" and not cfg.get("test_mode", False))
        return CifarDataset(root, kind, bool(train), classes)
    if kind == "FakeData":
        import torchvision

        size = _whole(cfg.get("size", 100), "FakeData size", 0, "size=1000 (the number of samples)")
        shape = cfg.get("image_size", (3, 64, 64))
        if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and shape[0] in (1, 3)
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
            raise ConfigError(f"FakeData image_size={shape!r} is not (channels, height, width) with 1 or 3 "
                              "channels", hint="image_size=(3, 64, 64)")
        shape = tuple(shape)
        if max_pixels is not None and int(shape[1]) * int(shape[2]) > max_pixels:
            raise ConfigError(f"FakeData image_size {shape} is over the budget of {max_pixels:,} pixels "
                              "(max_pixels=)", hint="use a smaller image_size, or raise max_pixels=")
        n_cls = _whole(cfg.get("num_classes", 10), "FakeData num_classes", 1, "num_classes=10")
        ds = torchvision.datasets.FakeData(size=size, image_size=shape, num_classes=n_cls,
                                           random_offset=_whole(cfg.get("random_offset", 0), "FakeData random_offset",
                                                                0, "random_offset=0"))
        return TorchvisionDataset(ds, classes or [str(i) for i in range(n_cls)])
    if kind in _DOWNLOADING:
        raise ConfigError(f"dataset type {kind} would need a download, and visctl never downloads",
                          hint="convert it to class folders (ImageFolder) or an annotation list (CustomDataset)")
    if kind in ("ImageFolder", "CustomDataset", "ImageNet", "ImageList", "ImageFolderDataset", ""):
        root = Path(str(cfg.get("data_root") or cfg.get("root") or "."))
        if cfg.get("files"):
            return FileDataset([(root / f, None) for f in cfg["files"]], classes, max_pixels)
        prefix = cfg.get("data_prefix", "")
        prefix = prefix.get("img_path", prefix.get("img", "")) if isinstance(prefix, dict) else (prefix or "")
        ann = cfg.get("ann_file")
        split = cfg.get("split")
        if kind == "ImageNet" and split:  # mmpretrain's ImageNet: data_prefix = split; ann_file meta/<split>.txt
            prefix = prefix or str(split)
            if not ann and (root / "meta" / f"{split}.txt").is_file():
                ann = f"meta/{split}.txt"
        elif kind == "ImageNet" and not prefix and not ann:
            prefix = phase
        folder = root / str(prefix)
        if ann:
            ann_path = Path(ann) if Path(ann).is_absolute() else root / ann
            if not ann_path.is_file():
                raise InputError(f"annotation file not found: {ann_path}", hint="check data_root and ann_file")
            classes = classes or fallback
            files = []
            for line in ann_path.read_text().splitlines():
                parts = line.strip().rsplit(" ", 1)
                if not parts or not parts[0]:
                    continue
                label = int(parts[1]) if len(parts) == 2 and parts[1].lstrip("-").isdigit() else None
                name = parts[0] if label is not None else line.strip()
                files.append((folder / name, label))
            # mmpretrain's load_data_list: `'gt_label': int(gt_label)`, an index into the classes as written
            named = len(classes) if classes else 0
            unnamed = sorted({lab for _, lab in files if lab is not None and not 0 <= lab < named})
            if classes and unnamed:
                warn(f"{ann_path}: label(s) {', '.join(map(str, unnamed[:10]))} have no name among the "
                     f"{len(classes)} classes")
            return FileDataset(files, classes, max_pixels)
        if not folder.is_dir():
            raise InputError(f"dataset folder not found: {folder}",
                             hint="set data_root (and data_prefix) in the config, or "
                             f"cfg_options=['{phase}_dataloader.dataset.data_root=PATH']")
        if fallback and sum(1 for p in folder.iterdir() if p.is_dir()) == len(fallback):
            classes = fallback
        files, found = _class_folders(folder, classes, warn)
        if not files:
            raise InputError(f"no images under {folder}", hint="expected class folders or image files")
        return FileDataset(files, found if found is not None else classes, max_pixels)
    raise ConfigError(f"dataset type {kind!r} is not understood",
                      hint="use ImageFolder, CustomDataset, ImageNet (local folders), ImageList, CIFAR10/100 "
                      "(local files) or FakeData")


#: a dataset dict's class names from its package's dataset class (``METAINFO``), used where they fit the data
PACKAGE_CLASSES = "_visctl_package_classes"


def package_classes(scope: str, kind: str) -> list[str] | None:
    """The class names an installed OpenMMLab package's dataset type declares (``METAINFO['classes']``, e.g.
    mmpretrain's ImageNet categories), or None."""
    from visctl import openmmlab

    if not kind or "." in kind or not openmmlab.is_package(scope):
        return None
    try:
        openmmlab.import_registry(scope)
        from mmengine.registry import DATASETS

        with openmmlab.registry(DATASETS, scope) as registry:
            found = registry.get(kind)
    except Exception:  # a registry that cannot import its datasets (a missing dependency): no names
        return None
    classes = (getattr(found, "METAINFO", None) or {}).get("classes") if isinstance(found, type) else None
    return [str(c) for c in classes] if classes else None


#: dataset types visctl reads itself even where the config's package registers them: CIFAR through a restricted
#: unpickler (the package's would unpickle anything, and download what is missing)
_READ_HERE = ("CIFAR10", "CIFAR100")


def package_dataset(cfg: dict, scope: Any, where: str, max_pixels: int | None = None) -> FileDataset | None:
    """The labelled image files of a dataset dict whose type is registered by the config's OpenMMLab package
    (``default_scope``), built through that package's ``DATASETS`` registry as its Runner builds it (without
    its pipeline: visctl runs the config's test pipeline) and read by ``get_data_info``: ``img_path`` and
    ``gt_label``, as the package's test loop gets them (its ``ann_file``, ``data_prefix``, ``split``,
    ``metainfo``, ``indices`` and class-folder rules, not visctl's reading of them). ``download`` is set False
    where the class takes it. None where the type is not the package's (visctl's own reading applies).
    """
    import inspect

    from visctl import openmmlab

    kind = str(cfg.get("type", ""))
    if not kind or not isinstance(scope, str) or not openmmlab.is_package(scope) \
            or kind.split(".")[-1] in _READ_HERE:
        return None
    openmmlab.import_registry(scope)
    from mmengine.registry import DATASETS

    spec = {k: v for k, v in cfg.items() if k != PACKAGE_CLASSES}
    spec["pipeline"] = []
    with openmmlab.registry(DATASETS, scope) as registry:
        try:
            found = registry.get(kind)
        except Exception:  # a registry that cannot import its datasets: visctl's own reading
            return None
        if not isinstance(found, type):
            return None
        try:
            if "download" in inspect.signature(found).parameters:
                spec["download"] = False
        except (TypeError, ValueError):
            pass
        try:
            dataset = registry.build(spec)
        except Exception as exc:  # the package's own check (a missing file or folder, a bad class list, ...)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            key = f"{where.split()[-1]}.dataset"
            hint = (f"the dataset dict keeps keys of the type it replaced: start it afresh, cfg_options=["
                    f"'{key}._delete_=True', '{key}.type={kind}', '{key}.data_root=PATH']"
                    if "unexpected keyword argument" in first else
                    f"check its data_root, data_prefix and ann_file (cfg_options=['{key}.data_root=PATH']), "
                    "or give audit data= a folder of class folders")
            raise InputError(f"{where}'s dataset ({kind}) could not be built by {scope}: {first}",
                             hint=hint) from None
    files: list[tuple[Path, int | None]] = []
    for i in range(length(dataset)):
        info = dataset.get_data_info(i)
        path = info.get("img_path") if isinstance(info, dict) else None
        if not path:
            raise ConfigError(f"{where}'s dataset ({kind}) holds its images in memory, not as image files",
                              hint="give data= a folder of class folders (ROOT/<class>/*.jpg)")
        files.append((Path(str(path)), _single_label(info.get("gt_label"), kind, where)))
    names = (getattr(dataset, "metainfo", None) or {}).get("classes")
    return FileDataset(files, [str(c) for c in names] if names else None, max_pixels)


def _single_label(value: Any, kind: str, where: str) -> int | None:
    """A sample's ``gt_label`` as one class index (None: no label); several labels are refused."""
    import numbers

    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ConfigError(f"{where}'s dataset ({kind}) gives an image {len(value)} labels: it is multi-label",
                              hint="audit measures one class per image: give data= a folder of class folders")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{where}'s dataset ({kind}) gives a label {value!r}, not a class index",
                          hint="give data= a folder of class folders")
    return int(value)


def dataset_config(cfg: Any, phase: str) -> tuple[dict, list[dict]]:
    """The ``<phase>_dataloader.dataset`` dict and its pipeline (the test pipeline for val/test if absent)."""
    from visctl.config import cfg_get, check_class_names

    ds = cfg_get(cfg, f"{phase}_dataloader.dataset")
    if not ds:
        raise ConfigError(f"the config has no {phase}_dataloader.dataset",
                          hint=f"add {phase}_dataloader = dict(dataset=dict(type=..., data_root=...)), or pick "
                          "another phase=")
    if not hasattr(ds, "keys"):
        raise ConfigError(f"{phase}_dataloader.dataset is {type(ds).__name__} ({ds!r}), not a dict",
                          hint=f"{phase}_dataloader = dict(dataset=dict(type='CustomDataset', data_root=...))")
    ds = _unwrap(dict(ds))
    top = check_class_names(cfg_get(cfg, "classes"), "classes") or check_class_names(
        cfg_get(cfg, "dataset_meta.classes"), "dataset_meta.classes")
    if top and not ds.get("classes"):  # the model's class order names the dataset's labels
        ds["classes"] = top
    if not _config_classes(ds) and cfg_get(cfg, "default_scope"):
        named = package_classes(str(cfg_get(cfg, "default_scope")), str(ds.get("type", "")))
        if named:  # the package's own names (mmpretrain's ImageNet: its 1000 categories), where they fit
            ds[PACKAGE_CLASSES] = named
    pipeline = ds.get("pipeline") or cfg_get(cfg, f"{phase}_pipeline") or []
    # the names visctl does not write itself run as the config's package's own (RandAugment, ...)
    from visctl.transforms import qualify

    return ds, qualify([dict(s) for s in pipeline], cfg_get(cfg, "default_scope"))


class PipelineSamples:
    """Map-style samples after a pipeline, for a torch DataLoader (workers pickle this, not the images).

    Each item: ``dict(index, name, label, views, masks, snapshots, error)``; a sample that cannot be read
    carries its ``error`` instead of failing the whole loader.
    """

    def __init__(self, dataset: Dataset, steps: list[dict], seed: int = 0, record: bool = False,
                 skip_types: tuple[str, ...] = ()) -> None:
        self.dataset = dataset
        self.steps = [s for s in steps if str(s.get("type", "")).split(".")[-1] not in skip_types]
        self.seed = seed
        self.record = record

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        import numpy as np

        from visctl.errors import VisctlError
        from visctl.transforms import run_views

        item: dict[str, Any] = dict(index=index, name=self.dataset.name(index), label=None, original=None,
                                    views=[], masks=[], snapshots=[], error=None)
        try:
            sample = self.dataset.load(index)
            # one generator per sample, from (seed, index): the same views whatever the order or workers
            states = run_views(sample.image, self.steps, np.random.default_rng([self.seed, index]), self.record,
                               max_pixels=getattr(self.dataset, "max_pixels", None))
        except VisctlError as err:
            item["error"] = err.message
            return item
        item.update(label=sample.label, original=sample.image, views=[s.img for s in states],
                    masks=[s.mask for s in states], snapshots=[s.snapshots or [] for s in states])
        return item


def keep_list(batch: list) -> list:
    """DataLoader collate function that keeps samples as they are (views differ in size)."""
    return batch


def iterate(samples: PipelineSamples, indices: list[int], num_workers: int = 0, batch_size: int = 8) -> Any:
    """Yield processed samples in order, through a DataLoader with ``num_workers`` workers."""
    from torch.utils.data import DataLoader, Subset

    loader: DataLoader = DataLoader(Subset(samples, indices),  # type: ignore[arg-type]  # any map-style object
                                    batch_size=batch_size, num_workers=num_workers, collate_fn=keep_list,
                                    shuffle=False)
    for batch in loader:
        yield from batch
