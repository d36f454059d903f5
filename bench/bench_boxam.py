"""Box-level CAMs: the whole `visctl boxam` run vs a forward-only loop of the same detector.

    python bench/bench_boxam.py [--small 16] [--large 64] [--side 256] [--threads 1,all] [--repeats 2]
    python bench/bench_boxam.py --quick     # a smoke test in under a minute (figures meaningless)

Fresh processes on PNG scenes of the demo detector's shapes (``--side`` px, 4 objects each, written by
``visctl.shapes``), the thread count pinned for both arms, the marginal per-image cost from two input sizes
(see bench/_common.py):

* ``visctl``  : ``python -m visctl boxam DIR examples/demo_detector/config.py -o OUT`` (its defaults:
  LayerCAM on the config's ``neck``, the kept boxes scored, overlays and manifest written);
* ``forward`` : bench/forward_loop.py --model detector, read + pad to a multiple of 4 + the detector's bare
  no-grad forward, nothing written. Target: visctl >= 0.9x its speed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _common import HERE, ROOT, arm_line, fresh_runs, header, image_sets, marginal, ratio_line, thread_counts, thread_env

CFG = ROOT / "examples" / "demo_detector" / "config.py"


def whole_run(threads: int, small: int, large: int, side: int, batch_size: int, repeats: int, work: Path) -> None:
    sets = image_sets(work, sorted({small, large}), side, kind="scene")
    out = work / "out-boxam"
    commands = {}
    for n in (small, large):
        commands[f"visctl/{n}"] = [sys.executable, "-m", "visctl", "boxam", str(sets[n]), str(CFG), "--device", "cpu",
                                   "--threads", str(threads), "--batch-size", str(batch_size), "-o", str(out), "--quiet"]
        commands[f"forward/{n}"] = [sys.executable, str(HERE / "forward_loop.py"), str(sets[n]), "--model",
                                    "detector", "--threads", str(threads), "--batch-size", str(batch_size)]
    t = fresh_runs(commands, thread_env(threads), repeats, before=lambda: shutil.rmtree(out, ignore_errors=True))
    print(header(f"whole run: demo detector boxam (defaults), scenes of {side} px, batch {batch_size}",
                 threads, small, large, repeats))
    print(arm_line("visctl boxam", t, "visctl", small, large))
    print(arm_line("forward-only loop", t, "forward", small, large))
    r = marginal(t, "forward", small, large) / marginal(t, "visctl", small, large)
    print(ratio_line("visctl vs forward-only, share of its speed", r, ">= 0.9x", r >= 0.9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,all", help="comma-separated thread counts; all = every core")
    parser.add_argument("--small", type=int, default=16)
    parser.add_argument("--large", type=int, default=64)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4, help="visctl boxam's default")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="keep the generated images here")
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 1 min); the figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.small, args.large, args.side, args.repeats = "1", 1, 3, 128, 1
    with tempfile.TemporaryDirectory(prefix="bench-boxam-") as tmp:
        for threads in thread_counts(args.threads):
            whole_run(threads, args.small, args.large, args.side, args.batch_size, args.repeats,
                      args.work or Path(tmp))


if __name__ == "__main__":
    main()
