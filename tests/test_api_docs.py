"""The Python API guide (docs/api.md) and README's API example: one example per public function, and every example
runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ["cam", "featmap", "boxam", "slice", "tsne", "recon", "lr", "pipeline", "browse", "open", "audit"]


def _api_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "docs" / "api.md").read_text()
    return re.findall(r"```python\n(.*?)```", readme + guide, re.S)


def test_every_public_function_is_exported_and_has_a_readme_example():
    from visctl.library import EXPORTS

    assert set(FUNCTIONS) <= set(EXPORTS)
    blocks = "\n".join(_api_blocks())
    missing = [f for f in FUNCTIONS if f"visctl.{f}(" not in blocks]
    assert not missing, f"no example in README or docs/api.md calls {missing}"


@pytest.mark.parametrize("index", range(len(_api_blocks())))
def test_readme_api_example_runs(index, tmp_path):
    """Each block runs in a fresh interpreter from a scratch folder holding the repo's examples/."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    code = _api_blocks()[index]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, f"API example {index}:\n{code}\n{run.stderr[-3000:]}"
