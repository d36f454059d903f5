"""Memory: the peak RSS of `visctl cam` on 1,000 images vs on 100 (outputs must stream to disk).

    python bench/bench_memory.py [--small 100] [--large 1000] [--side 96] [--threads 1]
    python bench/bench_memory.py --quick     # a smoke test in under a minute (figures meaningless)

Each run is a fresh process on photo-like JPEGs of ``--side`` px with the demo classifier
(examples/demo_classifier, 64 px input: small, so 1,000 images take a few minutes on one core), outputs
written. The peak RSS is the child's own (``os.wait4``; see bench/_common.py: run_measured), so each run is
measured alone. Target: the larger run's peak within 10% of the smaller's.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _common import ROOT, fresh_runs, image_sets, ratio_line, thread_counts, thread_env, whole_run_arguments

CFG = ROOT / "examples" / "demo_classifier" / "config.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    whole_run_arguments(parser, 100, 1000, 96, batch_size=16, repeats=1, threads="1")
    parser.add_argument("--visctl-args", default="", help="extra visctl cam options")
    parser.add_argument("--work", type=Path, default=None, help="keep the generated images here")
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 1 min); the figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.small, args.large, args.side = 8, 32, 64
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = args.work or Path(tmp)
        sets = image_sets(work, (args.small, args.large), args.side)
        out = work / "out-memory"
        for threads in thread_counts(args.threads):
            commands = {str(n): [sys.executable, "-m", "visctl", "cam", str(sets[n]), str(CFG), "--device", "cpu", "--threads",
                                 str(threads), "--batch-size", str(args.batch_size), "-o", str(out), "--quiet",
                                 *args.visctl_args.split()]
                        for n in (args.small, args.large)}
            t = fresh_runs(commands, thread_env(threads), args.repeats,
                           before=lambda: shutil.rmtree(out, ignore_errors=True))
            small, large = t[str(args.small)], t[str(args.large)]
            print(f"visctl cam, demo classifier, JPEG ~{args.side} px, batch {args.batch_size}, {threads} thread(s), "
                  "fresh processes, outputs written")
            for n, (sec, kib) in ((args.small, small), (args.large, large)):
                print(f"  {n:5d} images: {sec:7.1f} s, peak RSS {kib / 1024:7.1f} MiB")
            growth = large[1] / small[1]
            print(ratio_line(f"peak RSS {args.large} / {args.small} images", growth, "<= 1.10x", growth <= 1.10))


if __name__ == "__main__":
    main()
