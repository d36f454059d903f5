"""`visctl ... --json | head`: the reader of stdout leaves early. The run's outputs and manifest stay written, and
visctl ends as a Unix tool stopped by SIGPIPE ends (status 141), without a traceback or an "internal error"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT

CONFIG = ROOT / "tests" / "configs" / "mmpretrain" / "resnet50_8xb32-coslr-warmup_in1k.py"


def test_a_reader_that_leaves_early_ends_the_run_quietly(tmp_path: Path) -> None:
    """lr's --json holds every iteration's values: far more than a pipe's buffer, so the write meets the
    closed pipe."""
    visctl = shutil.which("visctl")
    assert visctl, "visctl is not on PATH"
    out, err = tmp_path / "out", tmp_path / "stderr.txt"
    with err.open("wb") as stderr:
        run = subprocess.Popen([visctl, "lr", str(CONFIG), "-d", "50000", "--json", "-o", str(out)],
                               stdout=subprocess.PIPE, stderr=stderr, env=dict(os.environ))
        assert run.stdout is not None
        with run.stdout:
            assert run.stdout.read(1) == b"{"  # the first byte, as `head -c 1` reads it; then the reader goes
        status = run.wait(timeout=120)
    said = err.read_text()
    assert status == 141, said
    assert "Traceback" not in said and "internal error" not in said, said
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["outputs"]
