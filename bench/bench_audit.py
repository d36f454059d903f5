"""`visctl audit` against `visctl cam` on the same images, and the audit's measures against its CAMs alone.

    python bench/bench_audit.py [--small 32] [--large 160] [--side 240] [--threads 1,all] [--repeats 2]
    python bench/bench_audit.py --quick        # a smoke test in under a minute (figures meaningless)
    python bench/bench_audit.py --only measures

The images: the demo shapes (``visctl.shapes``, held-out seeds) at ``--side`` px in class folders, with their
boxes in a COCO file; the model: the demo classifier (examples/demo_classifier), GradCAM at its default layer.

Whole run (fresh processes, the thread count pinned for both arms: OMP/MKL and ``--threads``; best of
``--repeats``, interleaved; the marginal cost of one image from ``--small`` vs ``--large`` images):

* ``audit``: ``visctl audit CFG --data DIR --annotations coco.json`` (true-class maps, the predicted class's
  where wrong, every measure, the CSV, the report);
* ``cam``  : ``visctl cam DIR CFG --target-category 0 --format jpg`` (one map per image and its figure).

Measures (in-process, the same run object): the audit's loop as it runs, against the same loop with the
measures switched off (the maps still made and carried back to the original pixels, as cam does): their cost
over the CAMs (target: < 10 %).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    ROOT,
    arm_line,
    fresh_runs,
    header,
    marginal,
    ratio_line,
    thread_counts,
    thread_env,
    whole_run_arguments,
)

CFG = ROOT / "examples" / "demo_classifier" / "config.py"


def make_data(folder: Path, count: int, side: int) -> tuple[Path, Path]:
    """``count`` held-out demo scenes at ``side`` px in class folders, and their COCO file."""
    from visctl.shapes import write_coco, write_scenes

    if not (folder / "coco.json").is_file():
        scenes = write_scenes(folder, range(100_000, 100_000 + count), size=side)
        write_coco(folder / "coco.json", scenes, folder)
    return folder, folder / "coco.json"


def whole_run(threads: int, small: int, large: int, side: int, batch_size: int, repeats: int, work: Path) -> None:
    sets = {n: make_data(work / f"shapes{side}_{n}", n, side) for n in sorted({small, large})}
    out = work / "out"

    def command(arm: str, n: int) -> list[str]:
        data, coco = sets[n]
        common = ["--device", "cpu", "--threads", str(threads), "--batch-size", str(batch_size), "-o", str(out), "-q"]
        if arm == "audit":
            return [sys.executable, "-m", "visctl", "audit", str(CFG), "--data", str(data), "--annotations",
                    str(coco), *common]
        return [sys.executable, "-m", "visctl", "cam", str(data), str(CFG), "--target-category", "0",
                "--format", "jpg", *common]

    arms = ("audit", "cam")
    t = fresh_runs({f"{a}/{n}": command(a, n) for n in sorted({small, large}) for a in arms}, thread_env(threads),
                   repeats, before=lambda: shutil.rmtree(out, ignore_errors=True))
    print(header(f"whole run: demo classifier GradCAM, shapes at {side} px, batch {batch_size}", threads, small,
                 large, repeats))
    print(arm_line("visctl audit", t, "audit", small, large))
    print(arm_line("visctl cam", t, "cam", small, large))
    r = marginal(t, "audit", small, large) / marginal(t, "cam", small, large)
    print(f"  audit / cam, time per image: {r:.2f}x   (audit makes a second map where the prediction is wrong; "
          "cam draws and encodes a figure per image)")


def measures(threads: int, images: int, side: int, batch_size: int, repeats: int, work: Path) -> None:
    import torch

    from visctl import audits
    from visctl.library import audit as library
    from visctl.options import AuditOptions
    from visctl.session import RunOptions, Session

    torch.set_num_threads(threads)
    data, coco = make_data(work / f"shapes{side}_{images}", images, side)
    session = Session(RunOptions(threads=threads, device="cpu"))
    run = library.plan(session, str(CFG), None, AuditOptions(data=data, annotations=coco, batch_size=batch_size,
                                                             worst=16))

    def full() -> None:
        for _ in run.items():
            pass

    real = (audits.measure_clean, audits.agreement, run._region, run.worst.offer, run.worst.may_take)

    def bare() -> None:  # the same loop: maps made and carried back to the original pixels, nothing measured
        audits.measure_clean = lambda arr, region, **kw: dict(pointing=None, energy=None, iou=None, border=0.0,
                                                              entropy=0.0)
        run._region = lambda path, label, hw: (None, [])
        run.worst.offer = lambda *a, **k: None
        run.worst.may_take = lambda key: False  # no thumbnail drawn
        try:
            for _ in run.items():
                pass
        finally:
            audits.measure_clean, audits.agreement, run._region, run.worst.offer, run.worst.may_take = real

    full(), bare()  # warm-up
    best = {"full": float("inf"), "bare": float("inf")}
    cpu = {"full": float("inf"), "bare": float("inf")}  # the process's CPU time: the work, whatever overlaps it
    for _ in range(repeats):
        for name, fn in (("full", full), ("bare", bare)):
            t, c = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
            cpu[name] = min(cpu[name], time.process_time() - c)
    share = best["full"] / best["bare"] - 1
    print(f"measures: {images} shapes at {side} px, batch {batch_size}, {threads} thread(s), CPU, in-process, "
          f"best of {repeats}, interleaved")
    print(f"  audit loop, every measure : {images / best['full']:7.1f} images/s")
    print(f"  the same loop, CAMs only  : {images / best['bare']:7.1f} images/s")
    print(ratio_line("measures' cost over the CAMs", share, "< 0.10x", share < 0.10))
    work = cpu["full"] / cpu["bare"] - 1
    print(f"  CPU time (both threads): {cpu['full']:.3f} s vs {cpu['bare']:.3f} s, the measures' work +{work:.0%} "
          "(wall time hides it where the measuring thread has a core of its own)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    whole_run_arguments(parser, 32, 160, 240, batch_size=16)
    parser.add_argument("--only", choices=("whole", "measures"), default=None)
    parser.add_argument("--images", type=int, default=96, help="measures: images in the in-process loop")
    parser.add_argument("--work", type=Path, default=None, help="keep the generated images here (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="a smoke test (< 1 min): 1 thread, 2 vs 6 images, "
                        "one repeat; the figures mean nothing")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.small, args.large, args.side, args.repeats, args.images = "1", 2, 6, 96, 1, 8
        args.batch_size = 4
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        work = args.work or Path(tmp)
        for threads in thread_counts(args.threads):
            if args.only != "measures":
                whole_run(threads, args.small, args.large, args.side, args.batch_size, args.repeats, work)
            if args.only != "whole":
                measures(threads, args.images, args.side, args.batch_size, args.repeats, work)


if __name__ == "__main__":
    main()
