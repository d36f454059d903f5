"""The seeds' command lines on the OpenMMLab packages' own configs.

tests/test_seeds.py runs every seed line on stand-in configs; here each line whose config the installed packages
ship runs on that config (mmpretrain's for the mmcls/mmpretrain lines, mmyolo's for MMYOLO's, mmdet's RetinaNet
for MMRazor's placeholders), translated by the tool name only, with a random-weight checkpoint saved as the Runner
saves one in place of each downloaded one and generated images in place of the demo pictures. The numbers these
commands draw are compared with the packages' own tools in the other tests of this folder.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from mmstack import need_mmcv_ops, package_configs, runner_checkpoint
from test_seeds import PLACEHOLDERS, seed_lines, translate, workspace  # noqa: F401 - workspace is a fixture

from visctl.config import looks_like_checkpoint

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::ImportWarning")]

# the package whose configs a seed document's lines name
PACKAGE = {"000": "mmpretrain", "001": "mmpretrain", "002": "mmpretrain", "003": "mmyolo", "004": "mmdet"}
# MMRazor's placeholders: RetinaNet as its guide downloads it
REAL_PLACEHOLDERS = {"configs/retinanet/retinanet_r101_fpn_2x_coco.py": "retinanet/retinanet_r101_fpn_2x_coco.py",
                     "configs/retinanet/retinanet_r50_fpn_2x_coco.py": "retinanet/retinanet_r50_fpn_2x_coco.py"}
# lines left out, and why
LEFT_OUT = {
    # one forward per channel of a 256-channel layer at 640 px: 10 minutes on a CPU (the same line is run on a
    # stand-in in tests/test_seeds.py, and its maps are compared with mmyolo's by hand, README "boxam")
    "003_aad6076cf67108a3.txt:269": "ablationcam at 640 px is too slow on a CPU",
    "003_aad6076cf67108a3.txt:283": "ablationcam at 640 px is too slow on a CPU",
}


def _real_config(doc: str, rel: str) -> Path | None:
    rel = REAL_PLACEHOLDERS.get(rel, rel)
    path = package_configs(PACKAGE[doc]) / rel.removeprefix("./").removeprefix("configs/")
    return path if path.is_file() else None


def _lines() -> list[tuple[str, str]]:
    return [(where, command) for where, command in seed_lines() if where[:3] in PACKAGE]


@pytest.mark.parametrize("where,command", _lines(), ids=[w for w, _ in _lines()])
def test_seed_line_runs_on_the_packages_own_config(where, command, workspace, invoke, monkeypatch, mm_tmp):  # noqa: F811
    if where in LEFT_OUT:
        pytest.skip(LEFT_OUT[where])
    if PACKAGE[where[:3]] in ("mmyolo", "mmdet"):
        need_mmcv_ops()  # their detectors need nms
    argv = translate(command)
    configs = [w for w in argv if w.endswith(".py") and (w.startswith(("configs/", "./configs/"))
                                                          or w in PLACEHOLDERS.values())]
    real = [_real_config(where[:3], c) for c in configs]
    if not configs or None in real:
        pytest.skip(f"{', '.join(c for c, r in zip(configs, real) if r is None) or 'no config'}: not a config "
                    f"the installed {PACKAGE[where[:3]]} ships (a 0.x name, or a stand-in's)")
    if len(configs) > 1:
        pytest.skip("two models in one line (feature_diff_visualization): the stand-in test covers it")
    config = real[0]
    out = []
    for w in argv:
        if w in configs:
            w = str(config)
        elif looks_like_checkpoint(w):
            w = str(runner_checkpoint(config, mm_tmp))
        out.append(w)
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("DISPLAY", raising=False)
    result = invoke(*out, "--quiet")
    assert result.exit_code == 0, f"{where}: visctl {shlex.join(out)}\n{result.stdout}\n{result.stderr}"
    written = [Path(line) for line in result.stdout.splitlines() if line.strip()]
    assert written, f"{where}: nothing written"
    for path in written:
        assert (workspace / path).is_file() or path.is_file(), path
