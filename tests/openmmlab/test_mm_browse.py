"""`visctl browse` / `visctl pipeline` on mmpretrain's own configs, against mmpretrain's browse_dataset.py itself.

The tool runs in a subprocess of this environment's Python, on the same configs and the same generated ImageNet
folder (``train/``, ``val/`` and mmpretrain's ``meta/<split>.txt``), with the seed's flags (``-m``, ``-r``, ``-c``,
``-p``, ``-n``, ``-o``). One interpreter runs every case (mmpretrain's import costs ~3 s): the tool's own
``main()`` with its ``sys.argv``, its ``make_grid`` wrapped only to keep the arrays it draws (the pipeline's
images as the tool records them), its files written with ``-o`` as usual.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmstack import need, package_configs

DRIVER = r'''
import importlib.util, json, pickle, sys
import numpy as np
tool, out, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
spec = importlib.util.spec_from_file_location("browse_dataset", tool)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
drawn, real = [], mod.make_grid
def recording(imgs, names):
    drawn.append(([np.asarray(i).copy() for i in imgs], list(names)))
    return real(imgs, names)
mod.make_grid = recording
for name, argv in cases.items():
    drawn.clear()
    sys.argv = ["browse_dataset.py", *argv]
    mod.main()
    with open(f"{out}/{name}.pkl", "wb") as fh:
        pickle.dump(list(drawn), fh)
'''

CONFIGS = {"resnet": "resnet/resnet18_8xb32_in1k.py", "effnet": "efficientnet/efficientnet-b0_8xb32_in1k.py",
           "swin": "swin_transformer/swin-tiny_16xb64_in1k.py",
           "mff": "mff/mff_vit-base-p16_8xb512-amp-coslr-300e_in1k.py"}
# the seed's own flags, given to both tools: (config, flags)
CASES = {
    "original_bgr": ("resnet", ["-m", "original", "-r", "2", "-n", "3"]),
    "original_rgb": ("resnet", ["-m", "original", "-r", "1.5", "-c", "RGB", "-n", "3"]),
    "val_transformed": ("resnet", ["-p", "val", "-m", "transformed"]),
    "val_concat": ("resnet", ["-p", "val", "-m", "concat"]),
    "val_pipeline": ("resnet", ["-p", "val", "-m", "pipeline"]),
    "effnet_val_pipeline": ("effnet", ["-p", "val", "-m", "pipeline"]),
    "effnet_train": ("effnet", ["-m", "transformed", "-n", "2"]),
    "swin_train": ("swin", ["-m", "pipeline", "-n", "2"]),
    "mff_train": ("mff", ["-m", "transformed", "-n", "2"]),  # ToPIL, torchvision/RandomCrop, ..., ToNumpy
}


def _picture(h: int, w: int, k: int) -> np.ndarray:
    """A smooth BGR picture with edges and colours (any misplaced pixel or swapped channel shows)."""
    import cv2

    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), 60 + 40 * k + 0 * xx], -1).astype(np.uint8)
    cv2.circle(img, (w // 3, h // 2), min(h, w) // 5, (30, 200, 250), -1)
    cv2.rectangle(img, (w // 2, h // 5), (w - 10, h // 2), (220, 60, 20), -1)
    return img


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    """mmpretrain's ImageNet layout: train/ and val/ images and meta/<split>.txt (``name label`` lines)."""
    import cv2

    root = tmp_path_factory.mktemp("imagenet")
    (root / "meta").mkdir()
    sizes = {"train": [(150, 200), (240, 180), (200, 200)], "val": [(180, 240), (300, 260), (256, 300)]}
    for split, shapes in sizes.items():
        (root / split).mkdir()
        lines = []
        for k, (h, w) in enumerate(shapes):
            cv2.imwrite(str(root / split / f"{split}{k}.png"), _picture(h, w, k))
            lines.append(f"{split}{k}.png {k * 7}")
        (root / "meta" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _cfg_options(root: Path) -> list[str]:
    return ["--cfg-options", f"train_dataloader.dataset.data_root={root}", f"val_dataloader.dataset.data_root={root}"]


@pytest.fixture(scope="module")
def reference(imagenet, tmp_path_factory) -> Path:
    """Every case run by mmpretrain's browse_dataset.py: ``<case>/`` its files, ``<case>.pkl`` what it drew."""
    need("mmpretrain")
    configs = package_configs("mmpretrain")
    tool = configs.parent / "tools" / "visualization" / "browse_dataset.py"
    out = tmp_path_factory.mktemp("reference")
    cases = {name: [str(configs / CONFIGS[cfg]), *flags, "--not-show", "-o", str(out / name), *_cfg_options(imagenet)]
             for name, (cfg, flags) in CASES.items()}
    driver = out / "driver.py"
    driver.write_text(DRIVER)
    run = subprocess.run([sys.executable, str(driver), str(tool), str(out), json.dumps(cases)], capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def _visctl(invoke, imagenet, tmp_path, name, *extra):
    cfg, flags = CASES[name]
    out = tmp_path / name
    result = invoke("browse", package_configs("mmpretrain") / CONFIGS[cfg], *flags, *extra, "-o", out,
                    *_cfg_options(imagenet))
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "manifest.json").read_text())


def _drawn(reference, name) -> list:
    with open(reference / f"{name}.pkl", "rb") as fh:
        return pickle.load(fh)


def _read(path: Path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path))


@pytest.mark.parametrize("name", ["original_bgr", "original_rgb"])
def test_original_mode_rescale_factor_and_channel_order_give_mmpretrains_pictures(invoke, imagenet, reference,
                                                                                    tmp_path, name):
    out, m = _visctl(invoke, imagenet, tmp_path, name)
    theirs = sorted((reference / name).glob("*.png"))
    ours = {Path(o["input"]).name: out / o["path"] for o in m["outputs"]}
    assert len(theirs) == len(ours) == 3
    factor = 2.0 if name == "original_bgr" else 1.5
    for ref_file in theirs:
        ref, mine = _read(ref_file), _read(ours[ref_file.name])
        src = _read(imagenet / "train" / ref_file.name)
        h, w = src.shape[:2]
        assert ref.shape == mine.shape == (int(h * factor + 0.5), int(w * factor + 0.5), 3)  # mmcv.imrescale
        below = slice(ref.shape[0] // 3, None)  # under both tools' label boxes (top left)
        # mmengine's Visualizer puts the image through a matplotlib canvas, which resamples a few edge pixels
        diff = np.abs(ref[below].astype(int) - mine[below])
        assert diff.mean() < 1.5 and (diff > 2).mean() < 0.03, (diff.mean(), (diff > 2).mean())
        if name == "original_rgb":  # -c RGB on BGR images: both show the colours swapped
            import cv2

            swapped = cv2.resize(src, mine.shape[1::-1], interpolation=cv2.INTER_LINEAR)[..., ::-1]
            assert np.abs(mine[below].astype(int) - swapped[below]).max() <= 1
    assert m["params"]["rescale_factor"] == factor
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES

    # meta/train.txt's labels name mmpretrain's ImageNet categories, as the script's "Ground truth: 7 (...)"
    assert [(i["label"], i["class_name"]) for i in m["inputs"]] == [(k * 7, IMAGENET_CATEGORIES[k * 7]) for k in range(3)]


@pytest.mark.parametrize("name", ["val_transformed", "val_concat", "val_pipeline", "effnet_val_pipeline"])
def test_deterministic_pipelines_give_mmpretrains_images_step_by_step(invoke, imagenet, reference, tmp_path, name):
    import visctl
    from visctl.session import RunOptions

    out, m = _visctl(invoke, imagenet, tmp_path, name)
    drawn = _drawn(reference, name)
    assert len(list((reference / name).glob("*.png"))) == len(m["outputs"]) == len(drawn) == 3
    cfg, flags = CASES[name]
    views = visctl.pipeline(package_configs("mmpretrain") / CONFIGS[cfg], phase="val", mode="pipeline",
                                  number=3, options=RunOptions(cfg_options=tuple(_cfg_options(imagenet)[1:])))
    for sample, (imgs, names) in zip(views.samples, drawn):
        ours = list(sample.images[0])  # RGB: the original, then each step that changed the image
        if name.endswith("transformed"):
            ours = ours[-1:]
        elif name.endswith("concat"):
            ours = [ours[0], ours[-1]]
        else:  # every step: mmpretrain names them LoadImageFromFile, ResizeEdge, CenterCrop, ...
            assert [n.split("(")[0] for n in sample.steps[0][1:]] == names[1:]
        assert len(ours) == len(imgs)
        for a, b in zip(ours, imgs):
            assert a.shape == b.shape and np.array_equal(a, b[..., ::-1])


@pytest.mark.parametrize("name", ["effnet_train", "swin_train", "mff_train"])
def test_random_pipelines_run_mmpretrains_transforms_reproducibly(invoke, imagenet, reference, tmp_path, name):
    """EfficientNetRandomCrop, RandAugment, RandomErasing, the torchvision wrappers between ToPIL and ToNumpy:
    mmpretrain's own, through its registry; --seed repeats them."""
    out, m = _visctl(invoke, imagenet, tmp_path, name, "--seed", "3")
    again, _ = _visctl(invoke, imagenet, tmp_path / "again", name, "--seed", "3")
    other, _ = _visctl(invoke, imagenet, tmp_path / "other", name, "--seed", "4")
    drawn = _drawn(reference, name)
    assert len(list((reference / name).glob("*.png"))) == len(m["outputs"]) == len(drawn) == 2
    if name == "swin_train":  # the steps mmpretrain records, in order
        assert [s["type"] for s in m["params"]["steps"]][-3:] == ["RandomFlip", "mmpretrain.RandAugment",
                                                                 "mmpretrain.RandomErasing"]
        assert drawn[0][1][-2:] == ["RandAugment", "RandomErasing"]
    for o in m["outputs"]:
        first = _read(out / o["path"])
        assert np.array_equal(first, _read(again / o["path"]))
    assert any(not np.array_equal(_read(out / o["path"]), _read(other / o["path"])) for o in m["outputs"])
    import visctl
    from visctl.session import RunOptions

    cfg, _ = CASES[name]
    views = visctl.pipeline(package_configs("mmpretrain") / CONFIGS[cfg], mode="transformed", number=2,
                                  options=RunOptions(cfg_options=tuple(_cfg_options(imagenet)[1:])))
    assert [v.views[0].shape for v in views.samples] == [imgs[-1].shape for imgs, _ in drawn]


def test_seed_flags_that_cannot_apply_are_refused(invoke, imagenet, tmp_path):
    need("mmpretrain")
    cfg = package_configs("mmpretrain") / CONFIGS["resnet"]
    grid = invoke("browse", cfg, "-r", "2", "-o", tmp_path / "a", *_cfg_options(imagenet))
    assert grid.exit_code == 2 and "--mode original" in grid.stderr and "--rows" in grid.stderr
    both = invoke("pipeline", cfg, "-m", "original", "-c", "RGB", "--bgr2rgb", "-o", tmp_path / "b",
                  *_cfg_options(imagenet))
    assert both.exit_code == 2 and "give one" in both.stderr
