"""``visctl audit`` on mmpretrain's own configs, against mmpretrain itself.

The dataset is the config's test dataloader's as mmpretrain builds it (its ``DATASETS`` registry: ``ImageNet``
with ``data_root``/``ann_file``/``data_prefix``, a ``CustomDataset`` of class folders), on a few generated
images laid out as the config expects; the reference for each image's predicted class is mmpretrain's own
inference: ``mmpretrain.apis.get_model`` on a Runner-style checkpoint, the config's test pipeline through
mmpretrain's ``TRANSFORMS``, and the model's ``test_step`` (its data_preprocessor, its head's ``predict``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from mmstack import load_mmpretrain, mm_config, need, package_configs, runner_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::ImportWarning", "ignore::UserWarning:mm")

RESNET = "resnet/resnet18_8xb32_in1k.py"
#: ImageNet classes by index, for the class-folder dataset (the model's names come from the checkpoint's meta)
FOLDERS = {0: "tench, Tinca tinca", 1: "goldfish, Carassius auratus", 21: "kite"}


@pytest.fixture(scope="module")
def resnet(mm_tmp):
    need("mmpretrain")
    config = package_configs("mmpretrain") / RESNET
    return config, runner_checkpoint(config, mm_tmp)


def _image(rng, path: Path) -> None:
    from PIL import Image

    h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([120 + 100 * np.sin(xx / rng.uniform(4, 20)), 120 + 100 * np.cos(yy / rng.uniform(4, 20)),
                    rng.integers(0, 255, (h, w))], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=95)


def mmpretrain_predictions(config: Path, checkpoint: Path, options: tuple[str, ...], paths: list[str]):
    """mmpretrain's own inference on ``paths``: path -> (predicted class, its score)."""
    import torch
    from mmcv.transforms import Compose
    from mmengine.dataset import default_collate
    from mmpretrain.registry import TRANSFORMS

    cfg = mm_config(config, options)
    model = load_mmpretrain(cfg, checkpoint)
    pipeline = Compose([TRANSFORMS.build(t) for t in cfg.test_pipeline])
    with torch.no_grad():
        out = model.test_step(default_collate([pipeline({"img_path": p}) for p in paths]))
    return {p: (int(s.pred_label.item()), float(s.pred_score.max())) for p, s in zip(paths, out)}


def mmpretrain_dataset(config: Path, options: tuple[str, ...]):
    """The config's test dataset as mmpretrain's Runner builds it: [(img_path, gt_label)], its classes."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    cfg = mm_config(config, options)
    init_default_scope("mmpretrain")
    ds = DATASETS.build(cfg.test_dataloader.dataset)
    return ([(ds.get_data_info(i)["img_path"], int(ds.get_data_info(i)["gt_label"])) for i in range(len(ds))],
            list(ds.metainfo["classes"]))


def run_audit(invoke, config, checkpoint, options, out: Path):
    result = invoke("audit", config, checkpoint, "--cfg-options", *options, "-o", out, "--worst", "2")
    assert result.exit_code == 0, result.output
    with open(out / "audit.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return rows, json.loads((out / "manifest.json").read_text())["audit"]


def check_against_mmpretrain(rows, summary, config, checkpoint, options, truth: dict[str, int]):
    """Per image the predicted class and its score as mmpretrain's test_step gives them; the accuracy is the one
    those predictions make; the rows are exactly the dataset's images."""
    assert sorted(r["path"] for r in rows) == sorted(truth)
    ref = mmpretrain_predictions(config, checkpoint, options, [r["path"] for r in rows])
    for r in rows:
        assert int(r["predicted"]) == ref[r["path"]][0], r["path"]
        assert float(r["p_predicted"]) == pytest.approx(ref[r["path"]][1], rel=2e-3)
        assert int(r["label"]) == truth[r["path"]]
        assert r["correct"] == str(int(ref[r["path"]][0] == truth[r["path"]]))
    accuracy = np.mean([ref[p][0] == truth[p] for p in truth])
    assert summary["overall"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert summary["images"] == len(truth)


def test_imagenet_ann_file(invoke, resnet, tmp_path):
    """ImageNet as the config has it (split='val': data_prefix 'val', ann_file meta/val.txt found by mmpretrain),
    data_root moved by --cfg-options; one image of the folder is not in the ann_file and is not audited."""
    config, checkpoint = resnet
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet"
    labels = [3, 0, 21, 1, 999, 76, 0, 500]
    lines = []
    for i, lab in enumerate(labels):
        _image(rng, root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
        lines.append(f"ILSVRC2012_val_{i:08d}.JPEG {lab}")
    _image(rng, root / "val" / "stray.JPEG")  # not listed: not in the dataset
    (root / "meta").mkdir()
    (root / "meta" / "val.txt").write_text("\n".join(lines) + "\n")
    options = (f"test_dataloader.dataset.data_root={root}",)
    files, classes = mmpretrain_dataset(config, options)
    assert len(files) == len(labels) and len(classes) == 1000
    rows, summary = run_audit(invoke, config, checkpoint, options, tmp_path / "out")
    check_against_mmpretrain(rows, summary, config, checkpoint, options, dict(files))
    assert {r["class"] for r in rows} == {classes[lab] for lab in labels}


def test_custom_dataset_of_class_folders(invoke, resnet, tmp_path):
    """A CustomDataset of class folders named after some of the model's classes: the labels are the folders'
    classes, by name, as the model numbers them (mmpretrain numbers the sorted folders 0..k-1)."""
    config, checkpoint = resnet
    rng = np.random.default_rng(1)
    root = tmp_path / "folders"
    for k in range(7):
        _image(rng, root / list(FOLDERS.values())[k % 3] / f"{k}.png")
    options = ("test_dataloader.dataset._delete_=True", "test_dataloader.dataset.type=CustomDataset",
               f"test_dataloader.dataset.data_root={root}")
    files, classes = mmpretrain_dataset(config, options)
    assert classes == sorted(FOLDERS.values())
    by_name = {n: i for i, n in FOLDERS.items()}
    truth = {p: by_name[classes[lab]] for p, lab in files}
    rows, summary = run_audit(invoke, config, checkpoint, options, tmp_path / "out")
    check_against_mmpretrain(rows, summary, config, checkpoint, options, truth)
    assert {r["path"]: r["class"] for r in rows} == {p: Path(p).parent.name for p in truth}


def test_a_dataset_the_package_refuses_is_one_error(invoke, resnet, tmp_path):
    """The type swapped by --cfg-options keeps ImageNet's `split`, which CustomDataset does not take: mmpretrain's
    refusal in one line, with the way out."""
    config, checkpoint = resnet
    root = tmp_path / "folders"
    _image(np.random.default_rng(2), root / "kite" / "0.png")
    result = invoke("audit", config, checkpoint, "--cfg-options", "test_dataloader.dataset.type=CustomDataset",
                    f"test_dataloader.dataset.data_root={root}", "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "split" in result.output and "_delete_=True" in result.output
    assert "Traceback" not in result.output
    missing = invoke("audit", config, checkpoint, "--cfg-options",
                     f"test_dataloader.dataset.data_root={tmp_path / 'nowhere'}", "-o", tmp_path / "out2")
    assert missing.exit_code == 2, missing.output
    assert "error:" in missing.output and "hint:" in missing.output and "Traceback" not in missing.output


def test_class_folders_named_after_none_of_the_models_classes_are_one_error(invoke, resnet, tmp_path):
    """mmpretrain numbers class folders 0..k-1; read as the model's outputs 0..k-1 they would audit 'cat' as
    'tench': refused, naming both sides."""
    config, checkpoint = resnet
    rng = np.random.default_rng(3)
    for name in ("cat", "dog"):
        _image(rng, tmp_path / "folders" / name / "0.png")
    result = invoke("audit", config, checkpoint, "--cfg-options", "test_dataloader.dataset._delete_=True",
                    "test_dataloader.dataset.type=CustomDataset",
                    f"test_dataloader.dataset.data_root={tmp_path / 'folders'}", "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "'cat', 'dog'" in result.output and "'tench, Tinca tinca'" in result.output and "hint:" in result.output
    assert not (tmp_path / "out" / "audit.csv").exists()
