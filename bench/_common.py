"""Helpers every bench shares: pinned threads, best-of timing, whole runs in fresh processes.

A whole-run bench runs each arm as a user runs it: a fresh interpreter on images on disk. Each arm runs on
two input sizes; ``(t(large) - t(small)) / (large - small)`` is the marginal cost of one image with the
start-up cancelled. Every arm's thread count is pinned the same way (:func:`thread_env` for OpenMP/MKL and
the arm's own ``--threads``, which the arm passes to ``torch.set_num_threads``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `python bench/bench_x.py` puts bench/ on the path; visctl is beside it
    sys.path.insert(0, str(ROOT))


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` runs, in seconds (the least disturbed by a noisy machine)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved(arms: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds per arm, the arms taking turns so drift in machine load hits all alike."""
    best = {name: float("inf") for name in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_counts(spec: str) -> list[int]:
    """``"1,all"`` -> ``[1, <cores>]`` (duplicates dropped, order kept)."""
    return list(dict.fromkeys(cores() if v.strip() == "all" else int(v) for v in spec.split(",")))


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a child arm: OpenMP/MKL/OpenBLAS pinned to ``threads``, this checkout first on the
    path (so ``python -m visctl`` runs the code beside the bench)."""
    pinned = str(threads)
    return dict(os.environ, OMP_NUM_THREADS=pinned, MKL_NUM_THREADS=pinned, OPENBLAS_NUM_THREADS=pinned,
                OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=os.pathsep.join(
                    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))


def run_measured(cmd: Sequence[str], env: dict[str, str]) -> tuple[float, int]:
    """Run ``cmd`` to the end; its wall seconds and its peak RSS (KiB): the largest of its process and the
    descendants it waited for (not their sum).

    The command runs under bench/_peak.py, a small launcher that waits for it with ``os.wait4`` (the resource
    use of that one child and the descendants it waited for): ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` would be
    the largest child this process ever had, and a child forked from this (large) process would carry this
    process's RSS into its own ``ru_maxrss``.
    """
    with tempfile.TemporaryDirectory(prefix="bench-peak-") as tmp, open(Path(tmp) / "stderr", "w+") as err:
        result = Path(tmp) / "peak"
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-I", str(HERE / "_peak.py"), str(result), *cmd], env=env,
                              stdout=subprocess.DEVNULL, stderr=err)
        elapsed = time.perf_counter() - t
        if done.returncode != 0:
            err.seek(0)
            raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{err.read()[-3000:]}")
        return elapsed, int(result.read_text())


def fresh_runs(commands: dict[str, list[str]], env: dict[str, str], repeats: int,
               before: Callable[[], None] | None = None) -> dict[str, tuple[float, int]]:
    """Best-of-``repeats`` (seconds, peak RSS KiB) of each command, the commands taking turns.

    ``before`` runs ahead of every command (e.g. to empty the output folder).
    """
    best: dict[str, tuple[float, int]] = {name: (float("inf"), 0) for name in commands}
    for _ in range(repeats):
        for name, cmd in commands.items():
            if before is not None:
                before()
            seconds, peak = run_measured(cmd, env)
            best[name] = (min(best[name][0], seconds), max(best[name][1], peak))
    return best


def marginal(t: dict[str, tuple[float, int]], arm: str, small: int, large: int) -> float:
    """Seconds per image of ``arm`` with the start-up cancelled: the difference of its runs on two sizes."""
    return (t[f"{arm}/{large}"][0] - t[f"{arm}/{small}"][0]) / (large - small)


def ratio_line(label: str, value: float, target: str, met: bool) -> str:
    return f"  {label}: {value:.2f}x   (target {target}: {'met' if met else 'NOT met'})"


def make_images(folder: Path, count: int, side: int, start: int = 0) -> Path:
    """Photo-like JPEGs: smooth multi-scale texture and a few shapes (noise alone would make PNGs too big).

    Deterministic per index; the width varies by up to 40 px around ``side``. Existing files are kept.
    """
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        path = folder / f"img{i:05d}.jpg"
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        h, w = side, max(8, side + int(rng.integers(-40, 41)))
        img = np.zeros((h, w, 3), np.float32)
        for scale in (4, 16, 64):
            coarse = rng.random((max(2, h // scale), max(2, w // scale), 3)).astype(np.float32)
            img += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * (scale / 84)
        img = np.clip(img * 255, 0, 255).astype(np.uint8)
        for _ in range(3):
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                       int(rng.integers(2, max(3, side // 4))), c, -1)
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def image_sets(work: Path, sizes: Sequence[int], side: int, kind: str = "photo") -> dict[int, Path]:
    """One folder per size (``work/<kind><side>_<n>``), each the first ``n`` images of one sequence."""
    sets = {}
    for n in sizes:
        folder = work / f"{kind}{side}_{n}"
        if kind == "photo":
            make_images(folder, n, side)
        else:
            make_scenes(folder, n, side)
        sets[n] = folder
    return sets


def make_scenes(folder: Path, count: int, side: int) -> Path:
    """PNG scenes of the demo detector's shapes (``visctl.shapes``, held-out seeds), several objects each."""
    import cv2

    from visctl.shapes import make_scene

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"scene{i:05d}.png"
        if not path.exists():
            scene = make_scene(200_000 + i, side, n_objects=4)
            cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return folder


def header(what: str, threads: int, small: int, large: int, repeats: int) -> str:
    return (f"{what}; {threads} thread(s), CPU; marginal per image from {small} vs {large} images, "
            f"fresh processes, best of {repeats}")


def arm_line(label: str, t: dict[str, tuple[float, int]], arm: str, small: int, large: int) -> str:
    per = marginal(t, arm, small, large)
    rate = f"{1 / per:7.1f} images/s" if per > 0 else "    n/a images/s"
    return (f"  {label:<22}: {per * 1000:7.1f} ms/image {rate}   ({small}: {t[f'{arm}/{small}'][0]:.2f} s, "
            f"{large}: {t[f'{arm}/{large}'][0]:.2f} s, peak RSS {t[f'{arm}/{large}'][1] / 1024:.0f} MiB)")


def share_of_baseline(t: dict[str, tuple[float, int]], label: str, baseline: str, arm: str, small: int, large: int,
                      target: float) -> None:
    """Print the visctl arm's and the baseline ``arm``'s lines and visctl's share of the baseline's speed."""
    print(arm_line(label, t, "visctl", small, large))
    print(arm_line(baseline, t, arm, small, large))
    r = marginal(t, arm, small, large) / marginal(t, "visctl", small, large)
    print(ratio_line(f"visctl vs {baseline}, share of its speed", r, f">= {target}x", r >= target))


def whole_run_arguments(parser: argparse.ArgumentParser, small: int, large: int, side: int, *,
                        batch_size: int | None = None, batch_help: str | None = None, repeats: int = 2,
                        threads: str = "1,all") -> None:
    """The options of a whole-run bench: thread counts, the two input sizes, image side, batch, repeats."""
    parser.add_argument("--threads", default=threads, help="comma-separated thread counts; all = every core")
    parser.add_argument("--small", type=int, default=small)
    parser.add_argument("--large", type=int, default=large)
    parser.add_argument("--side", type=int, default=side)
    if batch_size is not None:
        parser.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    parser.add_argument("--repeats", type=int, default=repeats)
