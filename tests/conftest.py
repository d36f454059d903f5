"""Shared fixtures: a plain terminal, the CLI runner, the demo model and generated images with known boxes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from visctl.datasets import Dataset, Sample

os.environ.setdefault("NO_COLOR", "1")
os.environ.setdefault("COLUMNS", "120")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
DEMO_CFG = ROOT / "examples" / "demo_classifier" / "config.py"
HELD_OUT = range(100_000, 100_100)  # the training script uses seeds below 100000


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    import torch

    torch.set_num_threads(2)


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run the real CLI in-process, through the console script's own path (``visctl.cli.run``: seed lists, error
    formatting, exit status); returns typer's Result (exit_code, stdout, stderr, output)."""
    from typer.testing import Result

    from visctl.cli import run as run_cli

    def run(*args: str):
        with runner.isolation() as (stdout, stderr, output):
            try:
                code = run_cli([str(a) for a in args])
            except SystemExit as exc:  # shell completion exits by itself
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            return Result(runner=runner, stdout_bytes=stdout.getvalue(), stderr_bytes=stderr.getvalue(),
                          output_bytes=output.getvalue(), return_value=None, exit_code=code, exception=None)
    return run


@pytest.fixture(scope="session")
def held_out(tmp_path_factory) -> dict[Path, object]:
    """100 held-out demo images on disk, path -> Scene (label and box)."""
    from visctl.shapes import write_scenes

    folder = tmp_path_factory.mktemp("held_out")
    return dict(write_scenes(folder, HELD_OUT))


@pytest.fixture
def image_file(tmp_path) -> Path:
    """One held-out demo image."""
    from visctl.shapes import write_scenes

    return write_scenes(tmp_path / "img", range(100_000, 100_001))[0][0]


class LoadRecorder(Dataset):
    """A dataset that logs, for every sample it loads, the process and the DataLoader worker that loaded it."""

    def __init__(self, inner: Dataset, log) -> None:
        self.inner, self.log, self.classes = inner, log, inner.classes

    def __len__(self) -> int:
        return len(self.inner)

    def name(self, index: int) -> str:
        return self.inner.name(index)

    def labels(self) -> list[int]:
        return self.inner.labels()

    def load(self, index: int) -> Sample:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        with open(self.log, "a") as fh:
            fh.write(f"{index} {os.getpid()} {-1 if info is None else info.id}\n")
        return self.inner.load(index)


def record_loads(monkeypatch, log):
    """Make every command's dataset a LoadRecorder writing to ``log``; returns a reader of the log."""
    from visctl import datasets

    real = datasets.build_dataset
    monkeypatch.setattr(datasets, "build_dataset", lambda *a, **k: LoadRecorder(real(*a, **k), log))
    return lambda: [tuple(int(v) for v in line.split()) for line in log.read_text().splitlines()]


def assert_one_error(result, *needles: str, in_hint: bool = False) -> tuple[str, str]:
    """Exit 2, exactly one `error:` and one `hint:` line on stderr, no traceback, no "internal error", no terminal
    colour codes; each needle in the error line (or, with ``in_hint``, in the error or the hint)."""
    lines = result.stderr.splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    hints = [ln for ln in lines if ln.startswith("hint:")]
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(errors) == 1 and len(hints) == 1, result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    assert "\x1b[" not in result.output, result.output
    for needle in needles:
        assert needle in (errors[0] + "\n" + hints[0] if in_hint else errors[0]), (needle, errors[0], hints[0])
    return errors[0], hints[0]


def manifest(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / "manifest.json").read_text())


@pytest.fixture
def partial_classes(tmp_path) -> tuple[Path, dict[Path, str], list[Path]]:
    """Class folders that are a subset of the config's classes plus one folder that is not a class.

    The config lists ['circle', 'square', 'triangle', 'cross'] (visctl.shapes.CLASSES, not sorted); the
    folders are cross/, square/, triangle/ (no circle/: a split without that class) and unsorted/ (not a
    class, holding circle images). Returns the root, each class image -> its true class name (the shape drawn
    in it), and the images of unsorted/.
    """
    import shutil

    from visctl.shapes import CLASSES, write_scenes

    root = tmp_path / "partial"
    scenes = write_scenes(root, range(100_000, 100_024))
    truth = {path: CLASSES[scene.labels[0]] for path, scene in scenes}
    (root / "unsorted").mkdir()
    extra = []
    for path in sorted(p for p, name in truth.items() if name == "circle")[:2]:
        extra.append(root / "unsorted" / path.name)
        shutil.copy(path, extra[-1])
    shutil.rmtree(root / "circle")
    truth = {p: name for p, name in truth.items() if name != "circle"}
    assert {p.parent.name for p in truth} == {"cross", "square", "triangle"} and extra
    return root, truth, extra


@pytest.fixture(scope="session")
def mm_tmp(tmp_path_factory) -> Path:
    """A session folder for the OpenMMLab tests (tests/openmmlab): checkpoints, photos."""
    return tmp_path_factory.mktemp("openmmlab")


@pytest.fixture(scope="session")
def photo(mm_tmp) -> Path:
    """A 360x480 photo-like picture: a bright disc on a smooth background (JPEG, as users' photos are)."""
    import cv2
    import numpy as np

    yy, xx = np.mgrid[0:360, 0:480]
    img = np.stack([80 + 60 * np.sin(xx / 50.0), 90 + 40 * np.cos(yy / 40.0), 120 + 0 * xx], -1)
    cv2.circle(img, (300, 150), 70, (20, 200, 240), -1)
    cv2.rectangle(img, (60, 220), (180, 330), (200, 40, 40), -1)
    path = mm_tmp / "photo.jpg"
    cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))
    return path


@pytest.fixture(scope="module")
def demo_logits():
    """The demo classifier as a logits model, 8 generated scenes run through its test pipeline as one batch, and
    the classes it predicts: what the faithfulness tests score. Returns (model, batch, classes, scenes, states)."""
    import torch

    from visctl import cams, checkpoints, config, shapes, transforms

    cfg = config.load_config(str(DEMO_CFG))
    model, _ = checkpoints.load_model(cfg, None)
    steps = config.test_pipeline(cfg)
    mean, std, rgb = config.normalization(cfg)
    scenes = [shapes.make_scene(s) for s in range(100_000, 100_008)]
    states = [transforms.run_pipeline(s.image, steps) for s in scenes]
    batch = transforms.to_tensor(states, mean, std, rgb)
    logits_model = cams.build_cam_model(model, "none")
    with torch.no_grad():
        cats = logits_model(batch).argmax(-1).tolist()
    return logits_model, batch, cats, scenes, states


def chromium_driver(logs: bool = False):
    """A started headless Chromium (selenium's webdriver; the caller quits it), or a skip when chromium and
    chromium-driver are not installed (.ci/run installs the Debian packages; a test never does, and
    VISCTL_REQUIRE_CHROMIUM=1, which .ci/run sets, turns their absence into a failure)."""
    import shutil

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver_path):
        if os.environ.get("VISCTL_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium and chromium-driver are not installed (.ci/run installs them)")
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"):
        options.add_argument(arg)
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.fixture(scope="module")
def audit_shapes(tmp_path_factory):
    """12 held-out demo scenes in class folders, and their COCO file (as a dict): what the audit tests audit."""
    import json

    from visctl import shapes

    root = tmp_path_factory.mktemp("audit-shapes")
    scenes = shapes.write_scenes(root / "data", range(200_000, 200_012), size=96)
    shapes.write_coco(root / "coco.json", scenes, root / "data")
    return root / "data", json.loads((root / "coco.json").read_text())


def coco_variant(tmp_path: Path, doc, change) -> str:
    """A COCO file: a copy of ``doc`` changed by ``change(copy)`` (which may return nothing), or a text."""
    import json

    doc = json.loads(json.dumps(doc))
    change(doc)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)
