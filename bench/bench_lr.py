"""`visctl lr` on ImageNet-scale training vs stepping the same mmengine schedulers bare, in the same run.

    python bench/bench_lr.py

1,281,167 images, batch 32 on 8 GPUs, 300 epochs (5005 iters/epoch, 1,501,500 iterations), linear warmup
(5 epochs, converted to iterations) then cosine. visctl's arm is the whole command to the saved plot in a
fresh process (imports included), and, like the baseline, the work in this process after the imports. The
baseline builds the same schedulers and calls step() as mmengine's ParamSchedulerHook does, recording
nothing. Targets: ratio >= 0.8x and under 10 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

CONFIG = """
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=295, by_epoch=True, begin=5, end=300)]
train_cfg = dict(by_epoch=True, max_epochs=300)
train_dataloader = dict(batch_size=32)
"""


def bare(ipe: int, epochs: int) -> float:
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS

    t = time.perf_counter()
    wrapper = build_optim_wrapper(torch.nn.Linear(1, 1), dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9,
                                                                             weight_decay=1e-4)))
    cfgs = [dict(type="LinearLR", start_factor=0.25, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
            dict(type="CosineAnnealingLR", T_max=295, by_epoch=True, begin=5, end=300)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheds = [PARAM_SCHEDULERS.build(c, default_args=dict(optimizer=wrapper, epoch_length=ipe)) for c in cfgs]
        for _ in range(epochs):
            for _ in range(ipe):
                for s in scheds:
                    if not s.by_epoch:
                        s.step()
            for s in scheds:
                if s.by_epoch:
                    s.step()
    return time.perf_counter() - t


def in_process(ipe: int, epochs: int, out: Path) -> float:
    import io

    from visctl import schedules

    t = time.perf_counter()
    sched = schedules.simulate(
        dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4)),
        [dict(type="LinearLR", start_factor=0.25, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
         dict(type="CosineAnnealingLR", T_max=295, by_epoch=True, begin=5, end=300)],
        schedules.TrainLoop.build(True, epochs, ipe), rule="bench")
    buf = io.BytesIO()
    schedules.plot(sched, "bench").savefig(buf, format="png", dpi=100)
    out.write_bytes(buf.getvalue())
    return time.perf_counter() - t


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "imagenet_r50.py"
        cfg.write_text(CONFIG)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "visctl", "lr", str(cfg), "--dataset-size", "1281167", "--ngpus", "8",
                        "-o", str(Path(tmp) / "out"), "--quiet"], check=True, capture_output=True, env=env)
        t_visctl = time.perf_counter() - t
        in_process(5005, 300, Path(tmp) / "warm.png")  # imports and matplotlib's font cache
        t_in = min(in_process(5005, 300, Path(tmp) / "lr.png") for _ in range(3))
    t_bare = min(bare(5005, 300) for _ in range(3))
    print("ImageNet, batch 32 x 8 GPUs, 300 epochs = 1,501,500 iterations, 1 thread")
    print(f"  visctl lr, fresh process to saved plot : {t_visctl:6.2f} s   (target < 10 s)")
    print(f"  bare mmengine scheduler stepping       : {t_bare:6.2f} s")
    print(f"  visctl in-process (simulate+plot+save) : {t_in:6.2f} s")
    print(f"  bare / visctl in-process               : {t_bare / t_in:6.2f}x  (target >= 0.8x)")


if __name__ == "__main__":
    main()
