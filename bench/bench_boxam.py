"""Box-level CAMs: the whole `visctl boxam` run vs a forward-only loop of the same detector.

    python bench/bench_boxam.py [--small 16] [--large 160] [--side 256] [--threads 1,all] [--repeats 2]
    python bench/bench_boxam.py --visctl-args="--format jpg"
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

from _common import HERE, ROOT, fresh_runs, header, image_sets, share_of_baseline, thread_counts, thread_env, whole_run_arguments

CFG = ROOT / "examples" / "demo_detector" / "config.py"


def whole_run(threads: int, small: int, large: int, side: int, batch_size: int, repeats: int, visctl_args: list[str],
              work: Path) -> None:
    sets = image_sets(work, sorted({small, large}), side, kind="scene")
    out = work / "out-boxam"
    commands = {}
    for n in (small, large):
        commands[f"visctl/{n}"] = [sys.executable, "-m", "visctl", "boxam", str(sets[n]), str(CFG), "--device", "cpu",
                                   "--threads", str(threads), "--batch-size", str(batch_size), "-o", str(out), "--quiet",
                                   *visctl_args]
        commands[f"forward/{n}"] = [sys.executable, str(HERE / "forward_loop.py"), str(sets[n]), "--model",
                                    "detector", "--threads", str(threads), "--batch-size", str(batch_size)]
    t = fresh_runs(commands, thread_env(threads), repeats, before=lambda: shutil.rmtree(out, ignore_errors=True))
    print(header(f"whole run: demo detector boxam ({' '.join(visctl_args) or 'defaults'}), scenes of {side} px, "
                 f"batch {batch_size}",
                 threads, small, large, repeats))
    share_of_baseline(t, "visctl boxam", "forward-only loop", "forward", small, large, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 160, not 64: the start-up varies by ~0.5 s from run to run, which 48 images' difference did not outweigh
    whole_run_arguments(parser, 16, 160, 256, batch_size=4, batch_help="visctl boxam's default")
    parser.add_argument("--visctl-args", default="", help="extra visctl boxam options, e.g. '--format jpg'")
    parser.add_argument("--work", type=Path, default=None, help="keep the generated images here")
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 1 min); the figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.small, args.large, args.side, args.repeats = "1", 1, 3, 128, 1
    with tempfile.TemporaryDirectory(prefix="bench-boxam-") as tmp:
        for threads in thread_counts(args.threads):
            whole_run(threads, args.small, args.large, args.side, args.batch_size, args.repeats,
                      args.visctl_args.split(), args.work or Path(tmp))


if __name__ == "__main__":
    main()
