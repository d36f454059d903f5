"""`visctl pipeline` and `visctl browse`, and the datasets behind them."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, manifest, record_loads
from mmengine import Config

from visctl import datasets, render, transforms
from visctl.errors import ConfigError, InputError
from visctl.shapes import write_scenes


@pytest.fixture
def folder_cfg(tmp_path):
    """A class-folder dataset with an mmpretrain-style config (CustomDataset, OpenMMLab transform names)."""
    write_scenes(tmp_path / "data" / "train", range(0, 12))
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "classes = ['circle', 'square', 'triangle', 'cross']\n"
        "train_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=48),\n"
        "    dict(type='RandomFlip', prob=0.5), dict(type='RandomFlip', prob=0.5, direction='vertical'),\n"
        "    dict(type='ColorJitter', brightness=0.3), dict(type='PackInputs')]\n"
        f"train_dataloader = dict(batch_size=4, dataset=dict(type='CustomDataset', data_root='{tmp_path / 'data'}',\n"
        "    data_prefix='train', pipeline=train_pipeline))\n")
    return cfg


def test_pipeline_mode_shows_every_step_even_duplicates(invoke, folder_cfg, tmp_path):
    result = invoke("pipeline", folder_cfg, "--number", "3", "--mode", "pipeline", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "out")
    assert len(m["outputs"]) == 3
    steps = [s["type"] for s in m["params"]["steps"]]
    assert steps == ["LoadImageFromFile", "RandomResizedCrop", "RandomFlip", "RandomFlip", "ColorJitter"]
    ds_cfg, pipe = datasets.dataset_config(__import__("mmengine").Config.fromfile(str(folder_cfg)), "train")
    samples = datasets.PipelineSamples(datasets.build_dataset(ds_cfg), pipe, record=True, skip_types=("PackInputs",))
    labels = [label for label, _ in samples[0]["snapshots"][0]]
    assert labels[0] == "original" and len(labels) == 5  # four image steps after the original, both flips kept
    assert labels[2] == "RandomFlip(prob=0.5)" and labels[3] == "RandomFlip(prob=0.5, direction=vertical)"


def test_seed_repeats_random_transforms(folder_cfg):
    ds_cfg, pipe = datasets.dataset_config(__import__("mmengine").Config.fromfile(str(folder_cfg)), "train")
    ds = datasets.build_dataset(ds_cfg)
    a = datasets.PipelineSamples(ds, pipe, seed=3)[5]["views"][0]
    b = datasets.PipelineSamples(ds, pipe, seed=3)[5]["views"][0]
    c = datasets.PipelineSamples(ds, pipe, seed=4)[5]["views"][0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("hw, expected", [
    ((300, 100), (600, 200)),     # portrait, short edge raised to 200
    ((100, 300), (200, 600)),     # landscape, the width is the short edge (the peer used the height twice)
    ((10, 20), (200, 400)),       # tiny
    ((4000, 3000), (1000, 750)),  # huge
    ((50, 2000), (25, 1000)),     # elongated: the long-edge limit wins
    ((500, 400), (500, 400)),     # already inside the limits
])
def test_adaptive_sizes(hw, expected):
    assert render.adaptive_size(*hw, 200, 1000) == expected


def test_corrupt_file_is_skipped_and_reported(invoke, folder_cfg, tmp_path):
    (tmp_path / "data" / "train" / "cross" / "broken.png").write_bytes(b"garbage")
    result = invoke("browse", folder_cfg, "--number", "-1", "-o", tmp_path / "out")
    assert result.exit_code == 1
    m = manifest(tmp_path / "out")
    assert len(m["inputs"]) == 12 and m["failures"][0]["path"].endswith("broken.png")


def test_browse_num_workers_load_samples_in_worker_processes(invoke, folder_cfg, tmp_path, monkeypatch):
    loads = record_loads(monkeypatch, tmp_path / "loads.txt")
    result = invoke("browse", folder_cfg, "--number", "10", "--rows", "2", "--cols", "2", "--num-workers", "2",
                    "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "out")
    assert len(m["outputs"]) == 3 and len(m["inputs"]) == 10  # 4 + 4 + 2 samples
    assert all(i["shape"] == [48, 48] for i in m["inputs"])
    rows = loads()
    assert sorted(i for i, _, _ in rows) == list(range(10))  # each sample loaded once...
    assert all(pid != os.getpid() for _, pid, _ in rows)  # ...in a process other than this one
    assert {w for _, _, w in rows} == {0, 1} and len({pid for _, pid, _ in rows}) == 2  # by both workers
    ds = datasets.build_dataset(datasets.dataset_config(Config.fromfile(str(folder_cfg)), "train")[0])
    assert [i["path"] for i in m["inputs"]] == [ds.name(i) for i in range(10)]  # in dataset order all the same


def test_browse_without_workers_loads_in_this_process(invoke, folder_cfg, tmp_path, monkeypatch):
    loads = record_loads(monkeypatch, tmp_path / "loads.txt")
    assert invoke("browse", folder_cfg, "--number", "3", "-o", tmp_path / "out").exit_code == 0
    assert loads() == [(i, os.getpid(), -1) for i in range(3)]


def test_multiview_and_masks(tmp_path):
    img = np.full((64, 96, 3), 200, np.uint8)
    steps = [dict(type="MultiView", num_views=[2, 1], transforms=[
        [dict(type="RandomResizedCrop", scale=32)], [dict(type="Resize", scale=(40, 40))]])]
    states = transforms.run_views(img, steps, np.random.default_rng(0))
    assert [s.img.shape[:2] for s in states] == [(32, 32), (32, 32), (40, 40)]
    masked = transforms.run_views(img, [dict(type="Resize", scale=(192, 192)), dict(
        type="SimMIMMaskGenerator", input_size=192, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6)],
        np.random.default_rng(0))[0]
    assert masked.mask.shape == (48, 48) and masked.mask.mean() == pytest.approx(22 / 36)
    drawn = render.draw_mask(masked.img, masked.mask)
    assert drawn.mean() < masked.img.mean()


def _write_cifar(root, n=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))


def test_local_cifar_dataset_and_no_download(invoke, tmp_path):
    _write_cifar(tmp_path / "cifar")
    ds = datasets.build_dataset(dict(type="CIFAR10", data_root=str(tmp_path / "cifar")), "train")
    assert len(ds) == 100 and ds.classes[3] == "cat" and ds.load(0).image.shape == (32, 32, 3)
    assert len(datasets.build_dataset(dict(type="CIFAR10", data_root=str(tmp_path / "cifar"), test_mode=True))) == 20
    cfg = tmp_path / "c.py"
    cfg.write_text(f"train_dataloader = dict(dataset=dict(type='CIFAR10', data_root='{tmp_path / 'cifar'}', "
                   "pipeline=[dict(type='RandomCrop', crop_size=32, padding=4), dict(type='RandomFlip', prob=0.5)]))\n")
    result = invoke("browse", cfg, "--number", "8", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    with pytest.raises(ConfigError, match="CIFAR100 files are not under") as e:
        datasets.build_dataset(dict(type="CIFAR100", data_root=str(tmp_path / "nothing")))
    assert "never downloads" in e.value.hint
    with pytest.raises(ConfigError, match="would need a download"):
        datasets.build_dataset(dict(type="MNIST", data_root="x"))


def test_fakedata_annotation_lists_and_missing_folders(tmp_path):
    assert len(datasets.build_dataset(dict(type="FakeData", size=7, image_size=(3, 16, 16)))) == 7
    write_scenes(tmp_path / "imgs", range(3))
    files = sorted(p.relative_to(tmp_path / "imgs") for p in (tmp_path / "imgs").rglob("*.png"))
    (tmp_path / "ann.txt").write_text("".join(f"{f} {i}\n" for i, f in enumerate(files)))
    ds = datasets.build_dataset(dict(type="CustomDataset", data_root=str(tmp_path), data_prefix="imgs",
                                     ann_file="ann.txt"))
    assert [ds.load(i).label for i in range(3)] == [0, 1, 2]
    with pytest.raises(InputError, match="dataset folder not found"):
        datasets.build_dataset(dict(type="ImageFolder", root=str(tmp_path / "none")))


def test_mmpretrain_style_config_runs_without_mmpretrain(invoke, tmp_path):
    cfg = ROOT / "tests" / "configs" / "mmpretrain" / "resnet50_8xb32-coslr-warmup_in1k.py"
    write_scenes(tmp_path / "imagenet" / "val", range(4))
    result = invoke("pipeline", cfg, "--phase", "val", "--number", "2", "--cfg-options",
                    f"val_dataloader.dataset.data_root={tmp_path / 'imagenet'}", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert [s["type"] for s in manifest(tmp_path / "out")["params"]["steps"]] == [
        "LoadImageFromFile", "ResizeEdge", "CenterCrop"]


# --- labels of class folders: the config's `classes` name them -------------------------------------------------
# mmpretrain (mmpretrain/datasets/custom.py, commit 0979e78) numbers class folders in sorted order
# (`find_folders`: `folders.sort(); folder_to_idx = {folders[i]: i ...}`) and, when `classes` is given, only
# asserts `len(self.CLASSES) == len(classes)` in `CustomDataset._find_samples`. visctl keeps the sorted rule
# without `classes`, and with `classes` gives each folder the index of its name there (see
# datasets._class_folders for why), so the checks below hold per file.

CLASSES = ["circle", "square", "triangle", "cross"]  # visctl.shapes.CLASSES: the demo model's output order


def _partial_cfg(tmp_path, root, extra: str = "") -> Path:
    cfg = tmp_path / "partial_cfg.py"
    cfg.write_text(f"classes = {CLASSES!r}\n"
                   "val_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(48, 48))]\n"
                   f"val_dataloader = dict(dataset=dict(type='CustomDataset', data_root='{root}', "
                   f"pipeline=val_pipeline{extra}))\n")
    return cfg


def test_class_folders_take_their_index_in_the_config_classes(partial_classes):
    root, truth, extra = partial_classes
    said: list[str] = []
    for kind, key in (("CustomDataset", "data_root"), ("ImageFolder", "root")):
        ds = datasets.build_dataset({"type": kind, key: str(root), "classes": CLASSES}, warn=said.append)
        got = {Path(ds.name(i)): ds.labels()[i] for i in range(len(ds))}
        assert got == {p: CLASSES.index(name) for p, name in truth.items()}  # unsorted/ images skipped
        assert all(ds.load(i).label == ds.labels()[i] for i in range(len(ds)))
        assert {ds.class_name(lab) for lab in got.values()} == {"square", "triangle", "cross"}
        assert ds.classes == CLASSES
        # files in mmpretrain's get_samples order: sorted folders, then sorted files
        assert [Path(ds.name(i)) for i in range(len(ds))] == sorted(truth, key=lambda p: (p.parent.name, p.name))
    assert len(said) == 2 and all("unsorted" in w and "skipped" in w and "circle" not in w for w in said)
    # metainfo.classes wins over classes (mmpretrain's _compat_classes), and classes may be a file
    names = root.parent / "names.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    ds = datasets.build_dataset(dict(type="CustomDataset", data_root=str(root), classes=str(names),
                                     metainfo=dict(classes=["cross", "triangle", "square"])), warn=said.append)
    assert {Path(ds.name(i)): ds.labels()[i] for i in range(len(ds))} == {
        p: ["cross", "triangle", "square"].index(name) for p, name in truth.items()}
    ds = datasets.build_dataset(dict(type="CustomDataset", data_root=str(root), classes=str(names)), warn=said.append)
    assert ds.classes == CLASSES and ds.class_name(ds.labels()[0]) == truth[Path(ds.name(0))]


def test_class_folders_without_classes_or_named_otherwise_follow_mmpretrain(partial_classes, tmp_path):
    root, truth, extra = partial_classes
    ds = datasets.build_dataset(dict(type="CustomDataset", data_root=str(root)))
    folders = ["cross", "square", "triangle", "unsorted"]  # find_folders: sorted names, numbered in that order
    assert ds.classes == folders
    assert {Path(ds.name(i)): ds.labels()[i] for i in range(len(ds))} == {
        **{p: folders.index(name) for p, name in truth.items()}, **{p: 3 for p in extra}}
    # folders named otherwise than the classes (ImageNet's wnids): one per class, taken in sorted order
    wnids = tmp_path / "wnids"
    for i, name in enumerate(["n003", "n001", "n002", "n000"]):
        write_scenes(wnids / "train" / name / "x", range(i, i + 1))
    ds = datasets.build_dataset(dict(type="ImageNet", data_root=str(wnids), classes=CLASSES))
    assert [Path(ds.name(i)).parts[-4] for i in range(4)] == ["n000", "n001", "n002", "n003"]
    assert ds.labels() == [0, 1, 2, 3]
    with pytest.raises(InputError, match="not named after the config's 5 classes") as e:
        datasets.build_dataset(dict(type="ImageNet", data_root=str(wnids), classes=CLASSES + ["x"]))
    assert "one folder per" in e.value.hint


def test_annotation_labels_index_the_classes(tmp_path):
    write_scenes(tmp_path / "imgs", range(2))
    files = sorted(p.relative_to(tmp_path / "imgs") for p in (tmp_path / "imgs").rglob("*.png"))
    (tmp_path / "ann.txt").write_text(f"{files[0]} 3\n{files[1]} 7\n")
    said: list[str] = []
    ds = datasets.build_dataset(dict(type="CustomDataset", data_root=str(tmp_path), data_prefix="imgs",
                                     ann_file="ann.txt", classes=CLASSES), warn=said.append)
    assert ds.labels() == [3, 7] and ds.class_name(3) == "cross" and ds.class_name(7) is None
    assert said and "7" in said[0] and "no name" in said[0]


def test_browse_and_pipeline_name_each_file_by_its_class(invoke, partial_classes, tmp_path):
    root, truth, extra = partial_classes
    cfg = _partial_cfg(tmp_path, root)
    result = invoke("browse", cfg, "--phase", "val", "--number", "-1", "-o", tmp_path / "browse")
    assert result.exit_code == 0, result.output
    assert "unsorted" in result.stderr and "skipped" in result.stderr
    inputs = manifest(tmp_path / "browse")["inputs"]
    assert {Path(i["path"]) for i in inputs} == set(truth)
    for i in inputs:
        name = truth[Path(i["path"])]
        assert i["label"] == CLASSES.index(name) and i["class_name"] == name
        assert i["caption"].endswith(f" {CLASSES.index(name)}: {name}")
    result = invoke("pipeline", cfg, "--phase", "val", "--number", "-1", "--mode", "original",
                    "-o", tmp_path / "pipeline")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "pipeline")
    assert {Path(i["path"]) for i in m["inputs"]} == set(truth)
    assert all(i["class_name"] == truth[Path(i["path"])] for i in m["inputs"])
    for o in m["outputs"]:
        name = truth[Path(o["input"])]
        assert o["caption"] == f"{Path(o['input']).name}: label {CLASSES.index(name)}: {name}"


# --- CIFAR batches are unpickled with only what they hold ------------------------------------------------------

class _RunsCode:
    """Pickles to a call of os.system: what a crafted data_batch_1 would do under pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_crafted_cifar_batch_is_refused_and_runs_nothing(invoke, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]})
    pickle.loads(payload)  # the payload is live: plain pickle runs it...
    assert marker.exists()
    marker.unlink()
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(payload)
    with pytest.raises(InputError, match=r"refusing to read .*data_batch_1: .*posix\.system") as e:
        datasets.build_dataset(dict(type="CIFAR10", data_root=str(tmp_path / "cifar")))
    assert "crafted" in e.value.hint
    cfg = tmp_path / "c.py"
    cfg.write_text(f"train_dataloader = dict(dataset=dict(type='CIFAR10', data_root='{tmp_path / 'cifar'}'))\n")
    for command in ("browse", "pipeline"):
        result = invoke(command, cfg, "-o", tmp_path / command)
        assert result.exit_code == 2 and "refusing to read" in result.stderr, result.output
    assert not marker.exists()  # ...the restricted unpickler never did
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [_RunsCode(marker)]}))
    with pytest.raises(InputError, match=r"refusing to read .*batches\.meta"):
        datasets.build_dataset(dict(type="CIFAR10", data_root=str(tmp_path / "cifar")))
    assert not marker.exists()
    (folder / "batches.meta").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match=r"batches\.meta is not a CIFAR python batch"):
        datasets.build_dataset(dict(type="CIFAR10", data_root=str(tmp_path / "cifar")))


@pytest.mark.parametrize("protocol, numpy1", [(0, False), (2, False), (2, True), (4, False), (5, False)])
def test_real_format_cifar_batches_load(tmp_path, protocol, numpy1):
    """Batches as CIFAR ships them (bytes keys, a uint8 array, lists of ints and bytes), at each pickle protocol;
    ``numpy1`` renames numpy's modules as numpy 1.x (and the real files, pickled by Python 2) name them."""
    rng = np.random.default_rng(protocol)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    fine = [int(v) for v in rng.integers(0, 100, 6)]
    batch = {b"batch_label": b"training batch 1 of 1", b"fine_labels": fine, b"coarse_labels": [0] * 6,
             b"data": data, b"filenames": [b"a.png"] * 6}
    raw = pickle.dumps(batch, protocol=protocol)
    if numpy1:  # protocol 2 names globals as text lines, so the module can be renamed in place
        assert b"numpy._core.multiarray\n_reconstruct" in raw
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    (folder / "train").write_bytes(raw)
    names = [f"class{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}, protocol=protocol))
    ds = datasets.build_dataset(dict(type="CIFAR100", data_root=str(tmp_path)), "train")
    assert ds.labels() == fine and ds.classes[5] == "class5"
    assert np.array_equal(ds.load(4).image, data[4].reshape(3, 32, 32).transpose(1, 2, 0))
