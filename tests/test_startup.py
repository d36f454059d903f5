"""Start-up of `visctl cam`: a run imports what it uses and nothing for another command or another source.

The modules are read from ``sys.modules`` at the exit of a fresh ``python -m visctl cam`` process (a tiny
wrapper registers the dump before visctl runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import DEMO_CFG, ROOT

from visctl import checkpoints

WRAPPER = """import atexit, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules))))
sys.argv[0] = 'visctl'
runpy.run_module('visctl', run_name='__main__', alter_sys=True)
"""

# imported by no part of a cam run on a local config and checkpoint: mmengine.runner's package (its runners,
# FSDP, the optimizers: ~1 s) was loaded only for mmengine's local-file checkpoint loader; the others belong to
# other commands (tsne's embeddings, lr's schedulers, featmap's comparison, boxam/slice's detection pages)
UNUSED = ["mmengine.runner", "mmengine.visualization", "mmengine.optim", "openTSNE",
          "umap", "sklearn.manifold", "sklearn.neighbors", "visctl.library.embed", "visctl.library.schedule",
          "visctl.schedules", "visctl.library.featmap", "visctl.library.slice", "visctl.library.reconstruct"]


def _modules_of_run(args: list[str], tmp_path: Path) -> set[str]:
    dump = tmp_path / "modules.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(dump), *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(dump.read_text().split())


# a default (GradCAM) run computes its maps natively (visctl.cams.NATIVE): grad-cam, and what grad-cam's import
# drags in (pyplot, scipy.ndimage, sklearn.decomposition: seconds), are never loaded
GRAD_CAM_AND_ITS_IMPORTS = ["pytorch_grad_cam", "sklearn", "scipy", "matplotlib", "ttach"]


def test_cam_on_the_demo_config_imports_nothing_it_does_not_use(image_file, tmp_path, invoke, monkeypatch):
    from visctl import _gradcam, cams

    out = tmp_path / "out"
    args = ["cam", str(image_file), str(DEMO_CFG), "-o", str(out), "-q", "--threads", "1"]
    loaded = _modules_of_run(args, tmp_path)
    drawn = list(out.glob("*_cam_*.png"))
    assert drawn, "the run drew no CAM"
    assert "visctl.library.cam" in loaded and "mmengine.config" in loaded  # the wrapper saw the real run
    assert sorted(m for m in UNUSED + GRAD_CAM_AND_ITS_IMPORTS if m in loaded) == []
    # the same run through grad-cam's own GradCAM class draws the same bytes
    built: list[str] = []
    real = _gradcam.build
    monkeypatch.setattr(_gradcam, "build", lambda cls, *a, **k: built.append(cls.__name__) or real(cls, *a, **k))
    monkeypatch.setattr(cams, "NATIVE", frozenset())
    ref = tmp_path / "ref"
    done = invoke(*args[:3], "-o", str(ref), *args[5:])
    assert done.exit_code == 0, done.output
    assert built == ["GradCAM"]
    assert (ref / drawn[0].name).read_bytes() == drawn[0].read_bytes()


def test_boxam_on_the_demo_detector_imports_no_grad_cam(tmp_path):
    """boxam's default LayerCAM on box targets is native, and its target (detection.BoxScoreTarget) is
    visctl's: the run never loads grad-cam or what grad-cam drags in."""
    import cv2

    from visctl.shapes import make_scene

    scene = tmp_path / "scene.png"
    cv2.imwrite(str(scene), make_scene(7, 128, n_objects=3, min_side=14, max_side=36).image[..., ::-1])
    out = tmp_path / "out"
    loaded = _modules_of_run(["boxam", str(scene), str(ROOT / "examples" / "demo_detector" / "config.py"), "-o",
                              str(out), "-q", "--threads", "1", "--score-thr", "0.1"], tmp_path)
    assert list(out.glob("*_boxam_*.png")), "the run drew no box map"
    assert "visctl.library.boxam" in loaded and "visctl.cams" in loaded  # the wrapper saw the real run
    assert sorted(m for m in GRAD_CAM_AND_ITS_IMPORTS if m in loaded) == []


def test_local_checkpoint_reads_as_mmengines_loader_does():
    from mmengine.runner.checkpoint import _load_checkpoint

    path = str(ROOT / "examples" / "demo_classifier" / "classifier.pth")
    ours, unsafe = checkpoints.read_checkpoint(path)
    theirs = _load_checkpoint(path, map_location="cpu", logger="silent")
    assert not unsafe and ours.keys() == theirs.keys()
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
