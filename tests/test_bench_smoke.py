"""The benches cannot rot: each parses its options, the peak-RSS measurement is per child, and (with
VISCTL_SLOW=1, ~1 min each on a busy core) each whole-run bench's --quick mode runs to its ratio lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
WHOLE_RUN = ["bench_cam.py", "bench_featmap.py", "bench_boxam.py", "bench_tsne.py", "bench_browse.py",
             "bench_memory.py", "bench_audit.py"]


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")))
def test_every_bench_script_parses_its_options(script):
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_peak_rss_is_measured_per_child():
    # ru_maxrss of RUSAGE_CHILDREN is the largest child ever: a small run after a big one would read big
    sys.path.insert(0, str(BENCH))
    try:
        from _common import run_measured
    finally:
        sys.path.remove(str(BENCH))
    grow = "import sys; b = bytearray(int(sys.argv[1]) << 20); b[::4096] = b'x' * len(b[::4096])"
    _, big = run_measured([sys.executable, "-c", grow, "300"], dict(os.environ))
    _, small = run_measured([sys.executable, "-c", grow, "10"], dict(os.environ))
    assert big - small > 250 * 1024, (big, small)  # KiB
    with pytest.raises(SystemExit, match="failed"):
        run_measured([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))


@pytest.mark.skipif(os.environ.get("VISCTL_SLOW") != "1", reason="each --quick run takes ~1 min: VISCTL_SLOW=1")
@pytest.mark.parametrize("script", WHOLE_RUN)
def test_whole_run_bench_quick_mode_prints_its_ratios(script):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BENCH.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick"], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(target " in done.stdout, done.stdout
