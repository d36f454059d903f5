"""``visctl.tsne``: the library call behind ``visctl tsne`` gives what the CLI writes, and writes nothing."""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import runpy
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import DEMO_CFG, ROOT, manifest

import visctl
import visctl.errors
from visctl.session import RunOptions


def _root(held_out) -> Path:
    return next(iter(held_out)).parents[1]


def _opts(held_out) -> RunOptions:
    return RunOptions(cfg_options=(f"test_dataloader.dataset.data_root={_root(held_out)}",))


def _leftovers() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("visctl-embed-*"))


def test_same_arrays_and_files_as_the_cli(invoke, held_out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stray write would land here
    before, temps = sorted(tmp_path.rglob("*")), _leftovers()
    with pytest.warns(visctl.errors.InputWarning, match="perplexity=30 lowered to 7.67 for 24 samples"):
        res = visctl.tsne(str(DEMO_CFG), max_num_samples_per_class=6, n_iter=300, seed=3, options=_opts(held_out))
    assert capsys.readouterr().out == ""
    assert sorted(tmp_path.rglob("*")) == before and _leftovers() == temps  # nothing written, no temp left
    cli = invoke("tsne", DEMO_CFG, "--cfg-options", f"test_dataloader.dataset.data_root={_root(held_out)}",
                 "--max-num-samples-per-class", "6", "--n-iter", "300", "--seed", "3", "-o", tmp_path / "cli")
    assert cli.exit_code == 0, cli.output
    out = tmp_path / "cli"
    (lay,) = res.layers
    assert lay.label == "backbone.layer4" and lay.features.shape == (24, 64) and lay.coords.shape == (24, 2)
    # the CLI's features .npy == the result's features; its CSV == the result's coordinates, rows and labels
    np.testing.assert_array_equal(np.load(out / "features_backbone_layer4.npy"), lay.features)
    rows = list(csv.DictReader((out / "tsne_backbone_layer4.csv").read_text().splitlines()))
    np.testing.assert_allclose([[float(r["x"]), float(r["y"])] for r in rows], lay.coords, atol=1e-6)
    assert [int(r["index"]) for r in rows] == list(res.rows) and [r["path"] for r in rows] == list(res.names)
    assert [int(r["label"]) for r in rows] == res.labels.tolist()
    assert [r["class"] for r in rows] == [res.class_names[i] for i in res.labels]
    m = manifest(out)
    assert {k: {q: v for q, v in d.items() if q != "embed_s"} for k, d in m["quality"].items()} == \
        {k: {q: v for q, v in d.items() if q != "embed_s"} for k, d in res.quality.items()}
    labels = json.loads((out / "labels.json").read_text())
    assert labels == dict(rows=list(res.rows), labels=res.labels.tolist(), names=list(res.names),
                          classes=list(res.class_names))
    # save(): the same files under the same names, the same bytes but for the timing fields
    res.save(tmp_path / "lib")
    s = manifest(tmp_path / "lib")
    assert [o["path"] for o in s["outputs"]] == [o["path"] for o in m["outputs"]]
    assert [o["caption"] for o in s["outputs"]] == [o["caption"] for o in m["outputs"]]
    from visctl._options import cli_text

    assert s["inputs"] == m["inputs"]
    assert [cli_text("tsne", n) for n in s["notes"]] == m["notes"]  # the same notes: fields here, flags there
    drop = ("checkpoint", "config", "max_pixels")
    assert {k: v for k, v in s["params"].items() if k not in drop} == \
        {k: v for k, v in m["params"].items() if k not in drop}
    assert {k: {q: v for q, v in d.items() if q != "embed_s"} for k, d in s["quality"].items()} == \
        {k: {q: v for q, v in d.items() if q != "embed_s"} for k, d in m["quality"].items()}
    for name in ("tsne_backbone_layer4.csv", "tsne_backbone_layer4.html", "labels.json", "tsne_backbone_layer4.png"):
        assert (tmp_path / "lib" / name).read_bytes() == (out / name).read_bytes(), name
    np.testing.assert_array_equal(np.load(tmp_path / "lib" / "features_backbone_layer4.npy"), lay.features)
    png = cv2.imread(str(out / "tsne_backbone_layer4.png"))[..., ::-1]
    np.testing.assert_array_equal(png, lay.figure.image)


def test_an_nn_module_with_a_dataset_config(held_out):
    from mmengine.config import Config

    from visctl import checkpoints

    cfg = Config.fromfile(str(DEMO_CFG))
    module, _ = checkpoints.load_model(cfg, None)
    by_cfg = visctl.tsne(str(DEMO_CFG), method="pca", max_num_samples_per_class=5, options=_opts(held_out))
    test_cfg = dict(test_dataloader=dict(dataset=dict(type="CustomDataset", data_root=str(_root(held_out)),
                                                      pipeline=cfg.test_pipeline, classes=cfg.classes)))
    opts = RunOptions(cfg_options=("data_preprocessor.mean=[127.5,127.5,127.5]", "data_preprocessor.std=[64.0,64.0,64.0]",
                                   "data_preprocessor.to_rgb=True"))
    by_module = visctl.tsne(module, test_cfg=test_cfg, target_layers=["backbone.layer4"], method="pca",
                             max_num_samples_per_class=5, options=opts)
    assert by_module.rows == by_cfg.rows and by_module.names == by_cfg.names
    np.testing.assert_allclose(by_module.layers[0].features, by_cfg.layers[0].features, atol=1e-5)
    assert by_module.layers[0].figure.caption.startswith("backbone.layer4: PCA")
    assert by_cfg.layers[0].knn5_features >= 0.9  # the trained demo features separate the classes


def test_all_stages_n_components_and_quality(held_out):
    res = visctl.tsne(str(DEMO_CFG), all_stages=True, method="pca", n_components=3, max_num_samples_per_class=5,
                       options=_opts(held_out))
    assert len(res.layers) > 1 and res.params["layers"] == tuple(lay.label for lay in res.layers)
    for lay in res.layers:
        assert lay.coords.shape == (20, 3)
        header = lay.table.splitlines()[0]
        assert header == "index,path,label,class,x,y,dim2"
        # the 5-NN accuracy is recomputed here from the coordinates, not read back
        d = ((lay.coords[:, None, :2] - lay.coords[None, :, :2]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        nn = np.argsort(d, 1)[:, :5]
        votes = [np.bincount(res.labels[row], minlength=4).argmax() for row in nn]
        assert lay.knn5_2d == pytest.approx(np.mean(np.array(votes) == res.labels), abs=0.06)
    with pytest.raises(KeyError):
        res.layer("nope")
    assert res.layer(res.layers[0].label) is res.layers[0]


def test_repr_frozen_and_jupyter(held_out):
    res = visctl.tsne(str(DEMO_CFG), method="pca", max_num_samples_per_class=4, title="a <b> & c",
                       options=_opts(held_out))
    assert repr(res).startswith("TsneResult(samples=16, classes=4, layers=[backbone.layer4: 5-NN")
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.layers = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.layers[0].coords = None  # type: ignore[misc]
    png = cv2.imdecode(np.frombuffer(res._repr_png_(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(png, res.figures()[0].image)
    page = res._repr_html_()
    for fig in res.figures():
        assert html.escape(fig.caption) in page
    assert "a &lt;b&gt; &amp; c" in res.layers[0].page  # the title, escaped in the interactive page


def test_errors_are_visctl_errors(held_out):
    from visctl.errors import VisctlError

    with pytest.raises(VisctlError, match="both choose the layer"):
        visctl.tsne(str(DEMO_CFG), vis_stage="neck", target_layers=["backbone.layer4"], options=_opts(held_out))
    with pytest.raises(VisctlError, match="learning_rate="):
        visctl.tsne(str(DEMO_CFG), learning_rate="fast", options=_opts(held_out))


def test_example_runs(held_out, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["tsne.py", str(tmp_path / "out")])
    runpy.run_path(str(ROOT / "examples" / "api" / "tsne.py"), run_name="__main__")
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert "5-NN accuracy" in capsys.readouterr().out
