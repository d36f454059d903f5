"""`visctl tsne`: separation, determinism, tokens, sampling, fallbacks and multi-process extraction."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.colors
import numpy as np
import pytest
import torch
from conftest import DEMO_CFG, ROOT, manifest, record_loads

from visctl import embedding
from visctl.choices import EmbedMethod, Pooling


def _root(held_out):
    return next(iter(held_out)).parents[1]


def test_demo_features_separate_the_classes(invoke, held_out, tmp_path):
    result = invoke("tsne", DEMO_CFG, "--cfg-options", f"test_dataloader.dataset.data_root={_root(held_out)}",
                    "--max-num-samples-per-class", "20", "--thumbnails", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path)
    q = m["quality"]["backbone.layer4"]
    assert q["knn5_2d"] >= 0.9 and q["knn5_features"] >= 0.9
    assert m["params"]["samples"] <= 80
    kinds = sorted(o["kind"] for o in m["outputs"])
    assert kinds == ["array", "data", "image", "page", "table"]
    _every_file_is_listed(tmp_path, m)
    page = (tmp_path / "tsne_backbone_layer4.html").read_text()
    assert page.count("<circle") == m["params"]["samples"] and "data:image/png;base64," in page


def test_seeded_runs_are_identical_and_batch_of_one(invoke, held_out, tmp_path):
    args = ("tsne", DEMO_CFG, "--cfg-options", f"test_dataloader.dataset.data_root={_root(held_out)}",
            "--max-num-samples-per-class", "6", "--seed", "3", "--n-iter", "300")
    a = invoke(*args, "-o", tmp_path / "a")
    b = invoke(*args, "--batch-size", "1", "-o", tmp_path / "b")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    fa, fb = (np.load(tmp_path / d / "features_backbone_layer4.npy") for d in "ab")
    assert np.allclose(fa, fb, atol=1e-5)  # batch of one: the same features
    ca = (tmp_path / "a" / "tsne_backbone_layer4.csv").read_text()
    c = invoke(*args, "-o", tmp_path / "c")
    assert c.exit_code == 0 and ca == (tmp_path / "c" / "tsne_backbone_layer4.csv").read_text()


def test_vit_tokens_cls_and_avg(invoke, held_out, tmp_path):
    cfg = tmp_path / "vit.py"
    cfg.write_text("model = dict(type='timm.vit_tiny_patch16_224', img_size=64, num_classes=4, depth=2)\n"
                   "classes = ['circle', 'square', 'triangle', 'cross']\n"
                   f"test_dataloader = dict(dataset=dict(type='ImageFolder', root='{_root(held_out)}', "
                   "pipeline=[dict(type='Resize', scale=(64, 64))]))\n")
    for pooling in ("cls", "avg"):
        out = tmp_path / pooling
        result = invoke("tsne", cfg, "--pooling", pooling, "--max-num-samples-per-class", "5", "--method", "pca",
                        "--target-layers", "blocks.1", "-o", out)
        assert result.exit_code == 0, result.output
        assert np.load(out / "features_blocks_1.npy").shape == (20, 192)


def test_pooling_of_every_layout():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert torch.equal(embedding.pool(maps, Pooling.avg), maps.mean((2, 3)))
    assert embedding.pool(maps, Pooling.flatten).shape == (2, 12)
    tokens = torch.randn(2, 5, 4)  # a class token and 4 patch tokens
    assert torch.equal(embedding.pool(tokens, Pooling.cls), tokens[:, 0])
    assert torch.allclose(embedding.pool(tokens, Pooling.avg, extra_tokens=1), tokens[:, 1:].mean(1))
    with pytest.raises(Exception, match="class token"):
        embedding.pool(tokens, Pooling.cls, extra_tokens=0)


def test_sampling_is_random_capped_and_seeded():
    labels = [0] * 50 + [1] * 50 + [2] * 5
    a = embedding.sample_indices(labels, None, 2, 10, seed=0)
    assert len(a) == 20 and all(labels[i] in (0, 1) for i in a)
    assert a != list(range(10)) + list(range(50, 60))  # not the first ones met
    assert a == embedding.sample_indices(labels, None, 2, 10, seed=0)
    assert embedding.sample_indices(labels, [2], 20, 10, seed=0) == list(range(100, 105))


def test_scikit_learn_fallback(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_opentsne(name, *args, **kwargs):
        if name == "openTSNE":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_opentsne)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 60)), rng.normal(8, 1, (40, 60))])
    coords, how = embedding.embed(x, EmbedMethod.tsne, n_iter=300, seed=0)
    assert "scikit-learn" in how and coords.shape == (80, 2)
    assert embedding.knn_accuracy(coords, np.array([0] * 40 + [1] * 40)) == 1.0


def test_two_processes_give_the_same_features(held_out, tmp_path):
    args = ["tsne", str(DEMO_CFG), "--cfg-options", f"test_dataloader.dataset.data_root={_root(held_out)}",
            "--max-num-samples-per-class", "7", "--method", "pca", "--quiet", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "visctl", *args, "-o", str(tmp_path / "one")], check=True, env=env,
                   capture_output=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                    "--master-port", str(_free_port()),
                    "-m", "visctl", *args, "-o", str(tmp_path / "two")], check=True, env=env, capture_output=True,
                   cwd=ROOT)
    one = np.load(tmp_path / "one" / "features_backbone_layer4.npy")
    two = np.load(tmp_path / "two" / "features_backbone_layer4.npy")
    assert one.shape == two.shape == (28, 64)
    assert np.allclose(one, two, atol=1e-5)
    assert manifest(tmp_path / "two")["params"]["world_size"] == 2
    _every_file_is_listed(tmp_path / "two", manifest(tmp_path / "two"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _every_file_is_listed(out, m):
    """Every file a tsne run leaves, beside manifest.json, index.html and the folder's lock, is one of the manifest's outputs."""
    written = {str(f.relative_to(out)) for f in out.rglob("*") if f.is_file()} - {"manifest.json", "index.html", ".manifest.lock"}
    assert written == {o["path"] for o in m["outputs"]}
    assert "labels.json" in written


def test_partial_class_folders_named_right_in_every_output_with_workers(invoke, partial_classes, tmp_path,
                                                                        monkeypatch):
    """Class folders a subset of the config's classes (no circle/) plus a folder that is not a class: every
    output names each file after its own class, and -j 2 extracts in worker processes. The rule (a folder's
    label is its name's index in `classes`) and how it relates to mmpretrain's custom.py are in
    test_data.py and datasets._class_folders."""
    from visctl import render

    root, truth, extra = partial_classes
    classes = ["circle", "square", "triangle", "cross"]  # the demo config's classes
    figures = []
    real_scatter = render.scatter_figure
    monkeypatch.setattr(render, "scatter_figure", lambda *a, **k: figures.append(real_scatter(*a, **k)) or figures[-1])
    loads = record_loads(monkeypatch, tmp_path / "loads.txt")
    result = invoke("tsne", DEMO_CFG, "--cfg-options", f"test_dataloader.dataset.data_root={root}", "--method", "pca",
                    "-j", "2", "--batch-size", "4", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "unsorted" in result.stderr and "skipped" in result.stderr
    out = tmp_path / "out"
    # the CSV: one row per class image, its label the index in `classes`, its class the file's own
    rows = list(csv.DictReader((out / "tsne_backbone_layer4.csv").read_text().splitlines()))
    assert {Path(r["path"]) for r in rows} == set(truth)
    for r in rows:
        assert r["class"] == truth[Path(r["path"])] and int(r["label"]) == classes.index(r["class"])
    # labels.json
    saved = json.loads((out / "labels.json").read_text())
    assert saved["classes"] == classes
    assert all(saved["classes"][lab] == truth[Path(n)] for n, lab in zip(saved["names"], saved["labels"]))
    # the HTML hover data: each point's class and file, and the legend
    page = (out / "tsne_backbone_layer4.html").read_text()
    points = re.findall(r'data-c="([^"]*)" data-n="([^"]*)"', page)
    assert len(points) == len(truth) and all(c == truth[Path(html.unescape(n))] for c, n in points)
    assert re.findall(r"</i>([^<]*)</span>", page) == ["square", "triangle", "cross"]
    # the scatter: legend entries, and the class of the points each colour draws
    (fig,) = figures
    ax = fig.axes[0]
    entries = {t.get_text(): h.get_color() for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    assert list(entries) == ["square", "triangle", "cross"]
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    for coll in ax.collections:
        name = coll.get_label()
        assert np.allclose(coll.get_facecolor()[0][:3], matplotlib.colors.to_rgb(entries[name]))
        for x, y in coll.get_offsets():
            (hit,) = np.flatnonzero(np.abs(xy - [x, y]).max(1) < 1e-5)
            assert truth[Path(rows[hit]["path"])] == name
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(rows)
    # -j 2: every embedded sample was loaded by a DataLoader worker, not by this process
    by_worker = {i for i, pid, w in loads() if pid != os.getpid() and w >= 0}
    assert set(saved["rows"]) <= by_worker


def test_a_layer_returning_nested_lists_gives_one_embedding_per_tensor(invoke, tmp_path):
    """mmpretrain's Conformer backbone returns a tuple of [conv, transformer] vector lists: each becomes a feature
    (it gave none, and the run said ok with no picture)."""
    from visctl.shapes import write_scenes

    write_scenes(tmp_path / "data", range(200_000, 200_012), size=32)
    cfg = tmp_path / "t.py"
    cfg.write_text("model = dict(type='tiny_models:PairsNet')\n"
                   f"test_dataloader = dict(dataset=dict(type='ImageFolder', root='{tmp_path / 'data'}', pipeline=[]))\n")
    result = invoke("tsne", cfg, "--method", "pca", "--target-layers", "backbone", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    import numpy as np

    conv = np.load(tmp_path / "out" / "features_backbone-0-0.npy")
    tok = np.load(tmp_path / "out" / "features_backbone-0-1.npy")
    assert conv.shape == (12, 4) and tok.shape == (12, 6)
    assert (tmp_path / "out" / "tsne_backbone-0-1.png").stat().st_size > 0


def test_a_layer_with_no_tensor_is_an_error():
    from visctl.errors import LayerError
    from visctl.featmaps import flatten_output

    with pytest.raises(LayerError, match="no tensors"):
        flatten_output("neck", ([None], {"a": "b"}))
