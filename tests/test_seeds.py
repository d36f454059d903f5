"""Seed conformance: every command line of the seed documents runs as ``visctl <command>``.

tests/seeds/seed_lines.txt holds the lines verbatim (file and line of each). Each is translated by the tool
name only (``python tools/visualization/vis_cam.py`` -> ``visctl cam``); the paths it names are made to exist
in a scratch folder: configs/ are stand-ins with the real models' module names (tests/seeds/configs), images
and datasets are generated, checkpoint URLs become local files (the demo checkpoints, or a stand-in's initial
weights). The arguments are otherwise exactly the seeds'. The OpenMMLab tools themselves cannot run here
(mmpretrain/mmyolo/mmrazor are not installed and their weights cannot be downloaded); the flags' meaning
follows ../shared/reference/peers-openmmlab.md.
"""

from __future__ import annotations

import json
import pickle
import shlex
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT

SEEDS = Path(__file__).parent / "seeds"
TOOLS = {
    "vis_pipeline.py": "pipeline", "vis_lr.py": "lr", "vis_cam.py": "cam", "browse_dataset.py": "browse",
    "visualize_tsne.py": "tsne", "visualize_reconstruction.py": "recon", "featmap_vis_demo.py": "featmap",
    "boxam_vis_demo.py": "boxam", "large_image_demo.py": "slice", "feature_visualization.py": "featmap",
    "feature_diff_visualization.py": "featmap",
}
# placeholders of seed 004 -> stand-in configs
PLACEHOLDERS = {
    "PATH/TO/THE/CONFIG": "configs/retinanet/retinanet_r101_fpn_2x_coco.py",
    "PATH/TO/THE/CONFIG1": "configs/retinanet/retinanet_r101_fpn_2x_coco.py",
    "PATH/TO/THE/CONFIG2": "configs/retinanet/retinanet_r50_fpn_2x_coco.py",
}
DEMO = {"classifier": ROOT / "examples/demo_classifier/classifier.pth", "mae": ROOT / "examples/demo_mae/mae.pth",
        "detector": ROOT / "examples/demo_detector/detector.pth"}
# the checkpoint behind each stand-in config: a demo checkpoint, else the stand-in's own initial weights
CHECKPOINT_OF = {"resnet50_imagenet": "classifier", "mae_vit-huge-p16_8xb512-amp-coslr-1600e_in1k": "mae",
                 "yolov5_s-v61_syncbn_fast_8xb16-300e_coco": "detector",
                 "yolov5_m-v61_syncbn_fast_8xb16-300e_coco": "detector", "retinanet_r101_fpn_2x_coco": "detector",
                 "retinanet_r50_fpn_2x_coco": "detector"}
CLASSES = ["circle", "square", "triangle", "cross"]


def seed_lines() -> list[tuple[str, str]]:
    out = []
    for line in (SEEDS / "seed_lines.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            where, command = line.split("\t")
            out.append((where, command))
    return out


def translate(command: str) -> list[str]:
    """``python <path>/<tool>.py ARGS`` -> ``[visctl-command, ARGS...]`` with the placeholders replaced."""
    words = shlex.split(command)
    assert words[0] == "python", command
    tool = Path(words[1]).name
    return [TOOLS[tool]] + [PLACEHOLDERS.get(w, w) for w in words[2:]]


def _write_scene(path: Path, seed: int, size: int | tuple[int, int] = 200, n: int = 1) -> None:
    from visctl.shapes import make_scene

    path.parent.mkdir(parents=True, exist_ok=True)
    scene = make_scene(seed, size=size, n_objects=n)
    assert cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The files the seed lines name, relative to the folder they are run from."""
    from visctl.shapes import make_scene

    ws = tmp_path_factory.mktemp("seed_ws")
    shutil.copytree(SEEDS / "configs", ws / "configs")
    vis = ws / "tools/visualizations/vis_configs"
    shutil.copytree(SEEDS / "vis_configs", vis)
    # seed 004 names this file with a doubled suffix; the user's file has that name
    shutil.copy(vis / "fpn_feature_diff_visualization.py", vis / "fpn_feature_diff_visualization.py.py")
    shutil.copy(SEEDS / "seed_models.py", ws / "seed_models.py")
    for i, name in enumerate(["demo/bird.JPEG", "demo/cat-dog.png", "demo/dog.jpg", "tools/visualizations/demo.jpg",
                              "data/imagenet/val/ILSVRC2012_val_00000003.JPEG"]):
        _write_scene(ws / name, 100_500 + i, size=(160, 224), n=2)
    _write_scene(ws / "demo/large_image.jpg", 100_600, size=(700, 1100), n=12)
    # ImageNet-style folders and mmselfsup's annotation file
    lines = []
    for split, seeds in (("train", range(100_700, 100_724)), ("val", range(100_800, 100_816))):
        for seed in seeds:
            scene = make_scene(seed, size=96)
            rel = f"{CLASSES[scene.labels[0]]}/{seed}.png"
            _write_scene(ws / "data/imagenet" / split / rel, seed, size=96)
            if split == "val":
                lines.append(f"{rel} {scene.labels[0]}")
    (ws / "data/imagenet/meta").mkdir(parents=True)
    (ws / "data/imagenet/meta/val.txt").write_text("\n".join(lines) + "\n")
    # CIFAR-100 in its python format (data uint8 rows of 3072, fine labels, label names)
    cifar = ws / "data/cifar100/cifar-100-python"
    cifar.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 20)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
                 b"filenames": [f"{split}_{i}.png".encode() for i in range(n)]}
        (cifar / split).write_bytes(pickle.dumps(batch))
    (cifar / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"class{i}".encode() for i in range(100)]}))
    return ws


def _checkpoint_for(ws: Path, name: str, config: str) -> Path:
    """A local file for a checkpoint the line names (a URL or a path in the working folder)."""
    import torch

    from visctl import building
    from visctl import config as cfgs

    path = ws / ("checkpoints/" + Path(name).name if "://" in name else name)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    demo = CHECKPOINT_OF.get(Path(config).stem)
    if demo:
        shutil.copy(DEMO[demo], path)
    else:
        torch.manual_seed(0)
        cfg = cfgs.load_config(str(ws / config))
        model = building.build_model(dict(cfg.model), None, [ws])
        torch.save({"state_dict": model.state_dict(), "meta": {"note": "stand-in initial weights"}}, path)
    return path


def _prepare(ws: Path, argv: list[str]) -> list[str]:
    """Make every checkpoint of the line exist; URLs become the local file they were saved as."""
    from visctl.config import looks_like_checkpoint

    configs = [w for w in argv if w.endswith(".py") and w.startswith("configs/")]
    out = []
    for w in argv:
        if looks_like_checkpoint(w):
            # a checkpoint follows its config (the second of two configs for the second checkpoint)
            k = sum(1 for o in out if looks_like_checkpoint(o))
            local = _checkpoint_for(ws, w, configs[min(k, len(configs) - 1)])
            w = str(local.relative_to(ws)) if "://" in w else w
        out.append(w)
    return out


def _option(argv: list[str], *names: str) -> list[str]:
    return [argv[i + 1] for i, w in enumerate(argv[:-1]) if w in names]


@pytest.mark.parametrize("where,command", seed_lines(), ids=[w for w, _ in seed_lines()])
def test_seed_line_runs(where, command, workspace, invoke, monkeypatch):
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("DISPLAY", raising=False)
    argv = _prepare(workspace, translate(command))
    result = invoke(*argv, "--quiet")
    assert result.exit_code == 0, f"{where}: visctl {shlex.join(argv)}\n{result.stdout}\n{result.stderr}"
    written = [Path(line) for line in result.stdout.splitlines() if line.strip()]
    assert written, f"{where}: nothing written"
    for path in written:
        assert (workspace / path).is_file() or path.is_file(), path
    for f in _option(argv, "--out-file", "--save-path"):
        assert (workspace / f).is_file() and cv2.imread(str(workspace / f)) is not None, f
    for d in _option(argv, "--output-dir", "--out-dir", "--work-dir"):
        man = json.loads((workspace / d / "manifest.json").read_text())
        assert man["command"] == argv[0]
        layers = _option(argv, "--target-layers")
        if layers:
            assert man["parameters"]["target_layers"]


def test_seed_lines_are_current():
    """The data file equals a fresh extraction from the seed documents (when they are beside the repo)."""
    seeds = ROOT.parent / "shared" / "seeds"
    if not seeds.is_dir():
        pytest.skip("../shared/seeds is not beside this checkout")
    import subprocess
    import sys

    fresh = subprocess.run([sys.executable, str(SEEDS / "extract_lines.py"), str(seeds)], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    assert [line for line in (SEEDS / "seed_lines.txt").read_text().splitlines() if not line.startswith("#")] == fresh


def _flag_tables() -> dict[str, list[tuple[list[str], list[str]]]]:
    """The "flag by flag" tables of docs/migrating.md: command -> rows of (seed flags, visctl flags)."""
    import re

    part = (ROOT / "docs" / "migrating.md").read_text()
    tables: dict[str, list[tuple[list[str], list[str]]]] = {}
    for section in part.split("\n### ")[1:]:
        header, *lines = section.splitlines()
        tools = re.findall(r"`(\w+\.py)`", header)
        command = re.search(r"-> `visctl (\w+)`", header).group(1)
        rows = []
        for line in lines:
            if line.startswith("| `"):
                cells = line.split(" | ")
                rows.append((re.findall(r"--[\w-]+|-\w\b", cells[0]), re.findall(r"--[\w-]+|-\w\b", cells[1])))
        for tool in tools:
            tables[tool] = rows
        tables[command] = tables.get(command, []) + rows
    return tables


def test_flag_tables_name_real_flags_and_every_seed_flag():
    import typer.main

    from visctl.cli import app

    tables = _flag_tables()
    commands = typer.main.get_command(app).commands
    for tool, command in TOOLS.items():
        assert tool in tables, f"docs/migrating.md has no flag table for {tool}"
        opts = {o for p in commands[command].params for o in p.opts}
        for _seed, ours in tables[tool]:
            for flag in ours:
                assert flag in opts, f"{tool}: docs/migrating.md maps to {flag}, which visctl {command} does not have"
        documented = {f for seed, _ in tables[tool] for f in seed}
        for _where, cmd in seed_lines():
            words = shlex.split(cmd)
            if Path(words[1]).name == tool:
                for w in words[2:]:
                    if w.startswith("--"):
                        assert w in documented, f"{tool}: the seeds use {w}; the table lacks it"
