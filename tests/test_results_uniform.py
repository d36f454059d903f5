"""Every library result has one shape: a sequence of items (``len``, ``[i]``, iteration, ``.items``), each item with
``.path``; deep-frozen (read-only arrays, mapping proxies, tuples); shown in Jupyter; named like the commands, with the
old names as deprecated aliases."""

from __future__ import annotations

import dataclasses
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DEMO_CFG, ROOT

import visctl

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
CPU = visctl.RunOptions(device="cpu")
SCHEDULE = ("optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),\n"
            "  paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=0.1)}))\n"
            "param_scheduler = [dict(type='CosineAnnealingLR', T_max=2, by_epoch=True, begin=0, end=2)]\n"
            "model = dict(type='visctl.demo_models:shapes_classifier')\n"
            "train_cfg = dict(by_epoch=True, max_epochs=2)\ntrain_dataloader = dict(batch_size=2)\n")


@pytest.fixture(scope="module")
def results(tmp_path_factory, held_out) -> dict[str, Any]:
    """One result of every command, on small inputs."""
    from visctl.shapes import make_scene, write_scenes

    folder = tmp_path_factory.mktemp("uniform")
    scenes = folder / "scenes"
    write_scenes(scenes, range(100_000, 100_002), size=72)
    big = folder / "big.png"
    import cv2

    cv2.imwrite(str(big), make_scene(7, size=256).image[..., ::-1])
    write_scenes(folder / "data" / "train", range(0, 5))
    data_cfg = folder / "cfg.py"
    data_cfg.write_text(
        "classes = ['circle', 'square', 'triangle', 'cross']\n"
        "train_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=48),\n"
        "    dict(type='PackInputs')]\n"
        f"train_dataloader = dict(batch_size=4, dataset=dict(type='CustomDataset', data_root='{folder / 'data'}',\n"
        "    data_prefix='train', pipeline=train_pipeline))\n")
    sched_cfg = folder / "sched.py"
    sched_cfg.write_text(SCHEDULE)
    held_root = next(iter(held_out)).parents[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "cam": visctl.cam(scenes, DEMO_CFG, method="gradcam,layercam", options=CPU),
            "featmap": visctl.featmap(scenes, DEMO_CFG, options=CPU),
            "boxam": visctl.boxam(scenes, DET_CFG, options=CPU),
            "slice": visctl.slice(big, DET_CFG, patch_size=128, options=CPU),
            "tsne": visctl.tsne(DEMO_CFG, method="pca", max_num_samples_per_class=3, options=CPU.replace(
                cfg_options=[f"test_dataloader.dataset.data_root={held_root}"])),
            "recon": visctl.recon(scenes, MAE_CFG, seed=0, options=CPU),
            "lr": visctl.lr(sched_cfg, dataset_size=4),
            "pipeline": visctl.pipeline(data_cfg, number=2, seed=1),
            "browse": visctl.browse(data_cfg, number=3, rows=2, cols=2, seed=1),
            "audit": visctl.audit(DEMO_CFG, options=CPU.replace(
                cfg_options=[f"test_dataloader.dataset.data_root={held_root}"])),
        }


COMMANDS = ["cam", "featmap", "boxam", "slice", "tsne", "recon", "lr", "pipeline", "browse", "audit"]


@pytest.mark.parametrize("command", COMMANDS)
def test_len_index_iteration_and_items_agree(results, command):
    res = results[command]
    assert isinstance(res, visctl.Result) and res.command == command
    items = res.items
    assert isinstance(items, tuple) and len(items) > 0
    assert len(res) == len(items)
    assert list(res) == list(items)
    assert [res[i] for i in range(len(res))] == list(items)
    assert res[-1] is items[-1] and res[:1] == items[:1]
    with pytest.raises(IndexError):
        res[len(res)]
    assert bool(res)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_item_has_a_path(results, command):
    res = results[command]
    for item in res:
        assert type(item.path) is str and item.path  # one type everywhere, as the manifest names the input
    if command == "tsne":  # a layer's path in the model
        assert [item.path for item in res] == [lay.label for lay in res.layers]
    elif command == "lr":  # a param group's label, its lr column
        assert [item.path for item in res] == list(res.groups)
        np.testing.assert_array_equal(res[0].lr, res.lr[:, 0])
    else:  # the input it came from
        inputs = {str(p) for p in res.params.get("inputs", ())} or None
        for item in res:
            assert Path(item.path).name
            if inputs and command in ("cam", "featmap", "boxam", "slice", "recon"):
                assert item.path in inputs


def _walk(value: Any, seen: set[int] | None = None):
    """Every array, mapping and sequence inside a result (through its items' fields)."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    yield value
    if isinstance(value, (types.MappingProxyType, dict)):
        for v in value.values():
            yield from _walk(v, seen)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _walk(v, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name), seen)


@pytest.mark.parametrize("command", COMMANDS)
def test_results_are_deep_frozen(results, command):
    res = results[command]
    found = list(_walk(res))
    arrays = [v for v in found if isinstance(v, np.ndarray)]
    assert arrays, "every result holds arrays"
    assert not [a for a in arrays if a.flags.writeable]
    with pytest.raises(ValueError, match="read-only"):
        arrays[0].flat[0] = 0
    assert not [v for v in found if isinstance(v, (dict, list))], "dicts and lists left mutable"
    mappings = [v for v in found if isinstance(v, types.MappingProxyType)]
    assert mappings  # params at least
    with pytest.raises(TypeError):
        res.params["device"] = "elsewhere"
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.params = {}  # type: ignore[misc]
    if command != "lr":
        item = res[0]
        if dataclasses.is_dataclass(item):
            with pytest.raises(dataclasses.FrozenInstanceError):
                item.path = "elsewhere"


def test_freezing_leaves_the_callers_arrays_writeable():
    from visctl.results import Figure, freeze

    mine = np.zeros((4, 4, 3), np.uint8)
    fig = Figure("a.png", mine, "", {"sizes": [1, 2], "more": {"k": [3]}})
    freeze(fig)
    assert mine.flags.writeable and not fig.image.flags.writeable
    assert fig.info == {"sizes": (1, 2), "more": {"k": (3,)}}
    assert isinstance(fig.info, types.MappingProxyType) and isinstance(fig.info["more"], types.MappingProxyType)


def test_an_empty_result_is_true_and_empty():
    from visctl.library.cam import CamResult
    from visctl.library.schedule import LrResult

    for res in (CamResult(), LrResult(), visctl.Result()):
        assert res and len(res) == 0 and list(res) == [] and res.items == ()


@pytest.mark.parametrize("command", COMMANDS)
def test_shows_itself_in_jupyter(results, command):
    page = results[command]._repr_html_()
    assert f"visctl {command}" in page and "<img" in page


ALIASES = {"slice_detect": "slice", "embed": "tsne", "reconstruct": "recon", "schedule": "lr",
           "pipeline_views": "pipeline"}


@pytest.mark.parametrize("old", sorted(ALIASES))
def test_the_old_names_warn_and_are_the_same_function(old):
    new = ALIASES[old]
    with pytest.warns(DeprecationWarning, match=rf"visctl\.{old} is deprecated.*visctl\.{new}\b"):
        func = getattr(visctl, old)
    assert func is getattr(visctl, new)
    with pytest.warns(DeprecationWarning):  # every use is pointed at the new name, not only the first
        assert getattr(visctl, old) is func


def test_the_new_names_are_exported_and_the_old_ones_are_not():
    from visctl.library import DEPRECATED, EXPORTS

    assert set(COMMANDS) <= set(EXPORTS) and "open" in EXPORTS
    assert not set(DEPRECATED) & set(EXPORTS)
    assert set(DEPRECATED.values()) <= set(EXPORTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in COMMANDS:
            assert callable(getattr(visctl, name))


def test_each_function_and_result_class_is_named_like_its_command():
    """help() and Python's own errors name the command (``tsne() got multiple values ...``), and a result's class
    is the command's; release 0.1's class names are the same classes."""
    from visctl.library import embed, reconstruct, schedule

    for command in ("cam", "featmap", "boxam", "slice", "tsne", "recon", "lr", "pipeline", "browse", "audit"):
        assert getattr(visctl, command).__name__ == command
    assert (embed.Embedding, reconstruct.Reconstructions, schedule.ScheduleResult, schedule.ScheduleGroup) == \
        (embed.TsneResult, reconstruct.ReconResult, schedule.LrResult, schedule.LrGroup)
    with pytest.raises(TypeError, match=r"^lr\(\) got multiple values for argument 'settings'"):
        visctl.lr("x.py", visctl.LrOptions(), settings=visctl.LrOptions())


def test_a_skipped_input_is_a_warning_in_python(tmp_path):
    """A notebook sees why an input is missing from the result, not only in ``result.failures``."""
    from visctl.errors import InputWarning

    bad = tmp_path / "fake.png"
    bad.write_text("not an image")
    with pytest.warns(InputWarning, match=r"skipping .*fake\.png: "):
        result = visctl.cam([bad], str(DEMO_CFG), options=visctl.RunOptions(device="cpu"))
    assert len(result) == 0 and [path for path, _ in result.failures] == [str(bad)]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_saved_manifest_has_the_calls_time_not_the_saves(results, command, tmp_path):
    """``timings.total_s`` of a saved result is the library call's (as the CLI's is its run's), and the saved
    record is plain JSON data (lists, not the result's frozen tuples)."""
    import json

    res = results[command]
    assert res.timings["total_s"] > 0
    manifest = json.loads(res.save(tmp_path / command).read_text())
    assert manifest["timings"]["total_s"] == res.timings["total_s"]


def test_save_refuses_what_is_no_folder_name(results):
    from visctl.errors import ArgumentError

    for bad in (5, "", None):
        with pytest.raises(ArgumentError, match="is not a folder name"):
            results["cam"].save(bad)
