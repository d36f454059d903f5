"""Hostile configs and datasets (issue 24, items 7 and 8): every config field visctl reads is type-checked where
it is read, an unknown ``--cfg-options`` key is an error naming the closest known key, ``custom_imports`` is
honoured wherever it is set, and a dataset that is malformed, says a negative length or is huge ends cleanly.

Each case: one ``error:`` line and one ``hint:`` line, exit 2, no traceback (or, for the huge dataset, a bounded
run with a true warning).
"""

from __future__ import annotations

import functools
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_CFG, assert_one_error, manifest

from visctl import config, datasets
from visctl.errors import ConfigError

#: the needle may be in the error or in the hint
assert_one_error_or_hint = functools.partial(assert_one_error, in_hint=True)



def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "hostile_cfg.py"
    path.write_text(f"_base_ = ['{DEMO_CFG}']\n{body}\n")
    return path


# --- every field visctl reads, with a value of the wrong type (through --cfg-options and in a file) -----------

BAD_FIELDS = {
    "classes-int": ("classes=5", "is not a list of class names"),
    "classes-nested": ("classes=[[1,2],3]", "is not a list of class names"),
    "classes-missing-file": ("classes=no_such_names.txt", "a file of class names"),
    "dataset-meta-classes": ("dataset_meta.classes=7", "dataset_meta.classes=7"),
    "dataset-classes": ("test_dataloader.dataset.classes=3", "test_dataloader.dataset.classes=3"),
    "task-unknown": ("visctl.task=nonsense", "visctl.task='nonsense'"),
    "task-number": ("visctl.task=5", "visctl.task=5"),
    "layers-number": ("visctl.target_layers=5", "not a list of layer names"),
    "input-size-text": ("visctl.input_size=abc", "not a size in pixels"),
    "input-size-negative": ("visctl.input_size=-3", "not a size in pixels"),
    "input-size-three": ("visctl.input_size=[1,2,3]", "not a size in pixels"),
    "patch-size": ("visctl.patch_size=0", "patch_size=0"),
    "visctl-not-dict": ("visctl=5", "visctl is int"),
    "data-preprocessor-not-dict": ("data_preprocessor=5", "data_preprocessor is int"),
    "mean-two-values": ("data_preprocessor.mean=[1,2]", "not 3 numbers"),
    "revise-keys-int": ("checkpoint_revise_keys=5", "(pattern, replacement) pairs"),
    "revise-keys-pairs": ("checkpoint_revise_keys=[5]", "(pattern, replacement) pairs"),
    "default-scope-int": ("default_scope=5", "not a package name"),
    "pipeline-int": ("test_dataloader.dataset.pipeline=5", "not a list of transforms"),
    "pipeline-step-int": ("test_dataloader.dataset.pipeline=[5]", "not a transform dict with a type"),
    "pipeline-step-type": ("test_pipeline.1.type=5", "not a transform dict with a type"),
    "custom-imports-int": ("custom_imports=5", "custom_imports is 5"),
}


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_a_field_of_the_wrong_type_is_one_error(invoke, image_file, tmp_path, case):
    option, needle = BAD_FIELDS[case]
    result = invoke("cam", image_file, DEMO_CFG, "--cfg-options", option, "-o", tmp_path / "out")
    assert_one_error_or_hint(result, needle)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("body, needle", [
    ("classes = 5", "classes=5 is not a list of class names"),
    ("visctl = dict(target_layer=['backbone.layer4'])", "did you mean target_layers"),
])
def test_a_config_file_with_a_bad_field_is_one_error(invoke, image_file, tmp_path, body, needle):
    result = invoke("cam", image_file, _config(tmp_path, body), "-o", tmp_path / "out")
    assert_one_error_or_hint(result, needle)


def test_classes_as_a_file_of_names_is_read(tmp_path):
    """mmpretrain's ``classes='classes.txt'``: one name a line, not the characters of the path."""
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    assert config.class_names({"classes": str(names)}) == ["cat", "dog"]
    assert config.class_names({"classes": ("a", 1)}) == ["a", "1"]
    assert config.class_names({"classes": None}) is None


@pytest.mark.parametrize("command", ["cam", "featmap", "tsne", "browse"])
def test_classes_int_in_every_command(invoke, image_file, tmp_path, command):
    cfg = _config(tmp_path, "classes = 5")
    args = [image_file, cfg] if command in ("cam", "featmap") else [cfg]
    assert_one_error_or_hint(invoke(command, *args, "-o", tmp_path / "out"), "classes=5")


# --- --task segmentation on a classifier --------------------------------------------------------------------

def test_task_segmentation_on_a_classifier(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, DEMO_CFG, "--task", "segmentation", "-o", tmp_path / "out")
    error, hint = assert_one_error_or_hint(result, "per-pixel class logits", "(1, 4)")
    assert "--task classification" in hint


def test_configured_task_segmentation_on_a_classifier(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, _config(tmp_path, "visctl = dict(task='segmentation')"), "-o", tmp_path / "o")
    assert_one_error_or_hint(result, "per-pixel class logits")


# --- unknown --cfg-options keys: an error with the closest known key ------------------------------------------

@pytest.mark.parametrize("option, near", [
    ("nosuch_key=1", None),
    ("modle.num_classes=3", "model"),
    ("test_dataloader.bach_size=1", "batch_size"),
    ("test_dataloader.dataset.pipeline.1.sacle=4", "scale"),
    ("visctl.target_layer=backbone.layer4", "target_layers"),
    ("data_preprocessor.meen=1", "mean"),
    ("test_dataloader.datset.data_root=x", "dataset"),
])
def test_unknown_cfg_options_key_is_an_error(invoke, image_file, tmp_path, option, near):
    result = invoke("cam", image_file, DEMO_CFG, "--cfg-options", option, "-o", tmp_path / "out")
    error, hint = assert_one_error_or_hint(result, "unknown key")
    assert option.split("=")[0].split(".")[-1] in error
    if near:
        assert hint.startswith("hint: did you mean") and near in hint, hint
    else:  # nothing close: the keys visctl reads
        assert "test_dataloader" in hint and "visctl" in hint


@pytest.mark.parametrize("spec, key", [
    (DEMO_CFG, "model.num_classes"),  # exists
    (DEMO_CFG, "test_dataloader.dataset.pipeline.1.keep_ratio"),  # a new keyword argument of a transform
    (DEMO_CFG, "visctl.input_size"),  # a visctl key
    (DEMO_CFG, "test_dataloader.num_workers"),  # a dataloader's
    ("torchvision.resnet18", "model.num_classes"),  # a new keyword argument of a constructor
    ("torchvision.resnet18", "visctl.input_size"),  # a visctl key, without a visctl block
    ("torchvision.resnet18", "load_from"),  # a top-level key visctl reads
    ("torchvision.resnet18", "test_pipeline"),
])
def test_known_keys_are_accepted(spec, key):
    assert config._unknown_key(config.load_config(str(spec)), key) is None


def test_a_new_key_of_a_constructor_runs(invoke, image_file, tmp_path):
    result = invoke("cam", image_file, DEMO_CFG, "--cfg-options", "test_dataloader.dataset.pipeline.1.keep_ratio=True",
                    "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_an_option_on_a_pipeline_visctl_does_not_run_warns(invoke, image_file, tmp_path):
    """``test_pipeline`` is not run when the test dataloader has its own pipeline: the option says so."""
    result = invoke("cam", image_file, DEMO_CFG, "--cfg-options", "test_pipeline.1.scale=32", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "warning: --cfg-options test_pipeline.1.scale=... changes test_pipeline, which visctl does not run" \
        in result.stderr and "test_dataloader.dataset.pipeline.1.scale=..." in result.stderr, result.stderr
    both = invoke("cam", image_file, DEMO_CFG, "--cfg-options", "test_pipeline.1.scale=32",
                  "test_dataloader.dataset.pipeline.1.scale=32", "-o", tmp_path / "both")
    assert both.exit_code == 0 and "visctl does not run" not in both.stderr, both.output


# --- custom_imports: honoured wherever it is set, never ignored -----------------------------------------------

def _marker_module(tmp_path: Path, monkeypatch, name: str) -> Path:
    marker = tmp_path / f"{name}.imported"
    (tmp_path / "mods").mkdir(exist_ok=True)
    (tmp_path / "mods" / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('yes')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return marker


def test_custom_imports_through_cfg_options_is_imported(invoke, image_file, tmp_path, monkeypatch):
    marker = _marker_module(tmp_path, monkeypatch, "visctl_hostile_plugin_a")
    result = invoke("cam", image_file, DEMO_CFG, "--cfg-options", "custom_imports.imports=[visctl_hostile_plugin_a]",
                    "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert marker.is_file()


def test_custom_imports_in_a_config_file_is_imported(invoke, image_file, tmp_path, monkeypatch):
    marker = _marker_module(tmp_path, monkeypatch, "visctl_hostile_plugin_b")
    cfg = _config(tmp_path, "custom_imports = dict(imports=['visctl_hostile_plugin_b'], allow_failed_imports=False)")
    result = invoke("cam", image_file, cfg, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert marker.is_file()


@pytest.mark.parametrize("option, needle", [
    ("custom_imports.imports=[visctl_no_such_module_x]", "cannot import custom_imports visctl_no_such_module_x"),
    ("custom_imports.imports=[os]", "standard library"),
])
def test_custom_imports_through_cfg_options_is_checked(invoke, image_file, tmp_path, option, needle):
    result = invoke("cam", image_file, DEMO_CFG, "--cfg-options", option, "-o", tmp_path / "out")
    assert_one_error_or_hint(result, needle)


def test_custom_imports_on_a_model_name(invoke, tmp_path, monkeypatch):
    """A model name is a config too: its --cfg-options custom_imports is imported (the API's dict as well)."""
    marker = _marker_module(tmp_path, monkeypatch, "visctl_hostile_plugin_c")
    cfg = config.load_config("torchvision.resnet18", ["custom_imports.imports=[visctl_hostile_plugin_c]"])
    assert cfg.custom_imports.imports == ["visctl_hostile_plugin_c"] and marker.is_file()
    marker.unlink()
    monkeypatch.delitem(sys.modules, "visctl_hostile_plugin_c")
    from visctl.session import Session

    Session().load_config(dict(model=dict(type="torchvision.resnet18"),
                               custom_imports=dict(imports=["visctl_hostile_plugin_c"])))
    assert marker.is_file()


# --- datasets: malformed CIFAR, a negative length, FakeData's numbers ----------------------------------------

def _cifar(tmp_path: Path, data, labels) -> Path:
    root = tmp_path / "cifar"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels}, fh)
    return root


def _dataset_config(tmp_path: Path, dataset: str) -> Path:
    return _config(tmp_path, "classes = None\n"
                   f"test_dataloader = dict(batch_size=4, dataset=dict({dataset}, pipeline=[dict(type='Resize', "
                   "scale=(64, 64))]))\ntrain_dataloader = test_dataloader")


@pytest.mark.parametrize("case, needle", [
    ("short-rows", "10 rows of 3000 values"),
    ("flat", "not rows of 3072 values"),
    ("labels-count", "9 labels for 10 images"),
    ("labels-range", "not class indices 0 .. 9"),
    ("values-range", "outside 0-255"),
])
def test_malformed_cifar_batch(invoke, tmp_path, case, needle):
    data = {"short-rows": np.zeros((10, 3000), np.uint8), "flat": np.zeros(30720, np.uint8),
            "values-range": np.full((10, 3072), 300, np.int64)}.get(case, np.zeros((10, 3072), np.uint8))
    labels = {"labels-count": list(range(9)), "labels-range": [0] * 9 + [12]}.get(case, list(range(10)))
    root = _cifar(tmp_path, data, labels)
    cfg = _dataset_config(tmp_path, f"type='CIFAR10', data_root='{root}', test_mode=True")
    for command in ("browse", "tsne"):
        args = ["--phase", "test"] if command == "browse" else []
        assert_one_error_or_hint(invoke(command, cfg, *args, "-o", tmp_path / command), needle, "cifar")


def test_well_formed_cifar_batch_still_reads(tmp_path):
    rows = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072) % 256  # int64 rows, as a re-pack may hold them
    ds = datasets.build_dataset(dict(type="CIFAR10", data_root=str(_cifar(tmp_path, rows, [3, 7]))), "test")
    assert len(ds) == 2 and ds.labels() == [3, 7]
    assert ds.load(1).image.shape == (32, 32, 3) and int(ds.load(0).image[0, 1, 0]) == 1


@pytest.mark.parametrize("dataset, needle", [
    ("type='FakeData', size=-5", "FakeData size=-5"),
    ("type='FakeData', size=10, num_classes=0", "FakeData num_classes=0"),
    ("type='FakeData', size=10, image_size=(3, -2, 8)", "FakeData image_size"),
    ("type='FakeData', size='many'", "FakeData size='many'"),
])
def test_fake_data_numbers(invoke, tmp_path, dataset, needle):
    cfg = _dataset_config(tmp_path, dataset)
    for command in ("browse", "tsne", "pipeline"):
        assert_one_error_or_hint(invoke(command, cfg, "-o", tmp_path / command), needle)


class _NegativeLength(datasets.Dataset):
    classes = ["a", "b"]

    def __len__(self) -> int:
        return -3

    def load(self, index: int) -> datasets.Sample:
        raise AssertionError("a dataset of negative length has no samples to load")


@pytest.mark.parametrize("command", ["browse", "pipeline", "tsne"])
def test_a_dataset_class_of_negative_length(invoke, tmp_path, monkeypatch, command):
    monkeypatch.setattr(datasets, "build_dataset", lambda *a, **k: _NegativeLength())
    cfg = _dataset_config(tmp_path, "type='FakeData', size=4")
    assert_one_error_or_hint(invoke(command, cfg, "-o", tmp_path / command), "no valid length", "__len__")


def test_length_helper():
    with pytest.raises(ConfigError, match="no valid length"):
        datasets.length(_NegativeLength())
    assert datasets.length([1, 2]) == 2


# --- a huge dataset with --max-num-samples-per-class: bounded, shown, said -----------------------------------

class _Huge(datasets.Dataset):
    """10**12 samples whose labels are only known by loading them (as FakeData's); loading far is a hang."""

    classes = ["circle", "square"]

    def __init__(self, labels_of=lambda i: i % 2, limit: int = 400) -> None:
        self.labels_of, self.limit, self.loaded = labels_of, limit, 0

    def __len__(self) -> int:
        return 10**12

    def load(self, index: int) -> datasets.Sample:
        assert index < self.limit, f"loaded sample {index}: the scan did not stop"
        self.loaded += 1
        img = np.full((64, 64, 3), 40 + 150 * self.labels_of(index), np.uint8)
        return datasets.Sample(img, self.labels_of(index), None)


def test_huge_dataset_stops_when_every_class_is_full(invoke, tmp_path, monkeypatch):
    huge = _Huge()
    monkeypatch.setattr(datasets, "build_dataset", lambda *a, **k: huge)
    cfg = _dataset_config(tmp_path, "type='FakeData', size=4")
    result = invoke("tsne", cfg, "--max-num-samples-per-class", "6", "--method", "pca", "-o", tmp_path / "t")
    assert result.exit_code == 0, result.output
    assert "warning: read the labels of the first 12 of the dataset's 1,000,000,000,000 samples" in result.stderr
    m = manifest(tmp_path / "t")
    assert m["params"]["samples"] == 12


def test_huge_dataset_stops_at_the_scan_limit(invoke, tmp_path, monkeypatch):
    huge = _Huge(labels_of=lambda i: 0)  # class 1 never comes
    monkeypatch.setattr(datasets, "build_dataset", lambda *a, **k: huge)
    monkeypatch.setattr(datasets, "LABEL_SCAN_LIMIT", 300)
    cfg = _dataset_config(tmp_path, "type='FakeData', size=4")
    result = invoke("tsne", cfg, "--max-num-samples-per-class", "6", "--method", "pca", "-o", tmp_path / "t")
    assert result.exit_code == 0, result.output
    warning = next(ln for ln in result.stderr.splitlines() if ln.startswith("warning: read the labels"))
    assert "first 300 of the dataset's 1,000,000,000,000 samples (the scan limit" in warning
    assert "class(es) 1 (0) have fewer than 6" in warning
    assert "labels: 300/300" in result.stderr  # the scan is shown


def test_scan_of_a_small_dataset_reads_it_whole():
    """Within the limit nothing changes: every label is read, the samples drawn from all of them."""
    small = _Huge(limit=50)
    small.__class__ = type("_Small", (_Huge,), {"__len__": lambda self: 50})
    labels, stopped = datasets.scan_labels(small, [0, 1], per_class=2)
    assert labels == [i % 2 for i in range(50)] and stopped is None
