"""torchrun: each rank a deterministic shard, rank 0 one manifest and one gallery, outputs byte-identical.

Every test runs the same command twice, once as one process and once under ``torch.distributed.run`` with two
gloo ranks on CPU (a free port chosen at run time), on generated images with one unreadable image that lands
in rank 1's shard, and compares every file the runs wrote, byte for byte (the manifest and gallery less their
run id, times and pid).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_CFG, ROOT

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
BATCH = 2
#: what differs between two runs whatever they did: when and by which process
VOLATILE = ("id", "started", "pid", "timings", "runs", "world_size")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Five demo scenes and one unreadable image, placed so that it falls in the second batch (rank 1's)."""
    from visctl.shapes import write_scenes

    folder = tmp_path_factory.mktemp("dist") / "data"
    write_scenes(folder, range(200_000, 200_005), size=64)
    (folder / "cross" / "200002_broken.png").write_bytes(b"not an image")
    return folder


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", NO_COLOR="1", MPLBACKEND="Agg")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(args: list[str], out: Path, nproc: int) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "visctl"]
    if nproc > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                  "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "visctl"]
    return subprocess.run([*launch, *args, "--threads", "1", "-o", str(out)], env=_env(), capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def _visctl_traceback(stderr: str) -> bool:
    """Whether a traceback through visctl's code was printed (torchrun's own, of its launcher, is not one)."""
    return bool(re.search(r'File ".*/visctl/', stderr)) or "internal error" in stderr


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".manifest.lock"}


def _same_runs(one: Path, two: Path) -> tuple[dict, dict]:
    """Assert two run folders hold the same files, byte for byte but the run's id and times; return the
    manifests."""
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (one, two))
    assert len(m2["runs"]) == 1 and m2["world_size"] == 2  # one record, not one per rank
    assert m2["outputs"] == m1["outputs"] and m2["inputs"] == m1["inputs"] and m2["failures"] == m1["failures"]
    assert {k: v for k, v in m2.items() if k not in VOLATILE} == {k: v for k, v in m1.items() if k not in VOLATILE}
    f1, f2 = _files(one), _files(two)
    assert sorted(f1) == sorted(f2)
    for name in f1:
        if name == "manifest.json":
            continue
        a, b = f1[name], f2[name]
        if name == "index.html":  # its header says how long the run took
            a, b = (re.sub(rb"&middot; [0-9.]+s</p>", b"", x) for x in (a, b))
        assert a == b, name
    return m1, m2


def _compare(args: list[str], tmp_path: Path, data: Path) -> tuple[dict, subprocess.CompletedProcess]:
    one = _run(args, tmp_path / "one", 1)
    two = _run(args, tmp_path / "two", 2)
    broken = str(data / "cross" / "200002_broken.png")
    assert one.returncode == 1, one.stderr[-3000:]  # the unreadable image: a partial run
    assert two.returncode == 1, two.stderr[-3000:]  # torchrun's status: a rank exited 1
    assert not _visctl_traceback(two.stderr), two.stderr[-3000:]  # (torchrun prints its own on a non-zero exit)
    m1, _ = _same_runs(tmp_path / "one", tmp_path / "two")
    assert [f["path"] for f in m1["failures"] if not f["path"].startswith("--")] == [broken]
    assert two.stderr.count(f"warning: failed: {broken}") == 1  # rank 0 says it once, for the whole run
    # the results on stdout: rank 0's, every output once, as a one-process run prints them
    assert two.stdout == one.stdout.replace(f"{tmp_path}/one/", f"{tmp_path}/two/")
    return m1, two


def test_the_broken_image_is_in_rank_1s_shard(data):
    from visctl import distributed
    from visctl.images import gather_images

    paths = gather_images([str(data)])
    broken = data / "cross" / "200002_broken.png"
    assert broken not in distributed.shard(paths, BATCH, 0, 2) and broken in distributed.shard(paths, BATCH, 1, 2)
    assert sorted(distributed.shard(paths, BATCH, 0, 2) + distributed.shard(paths, BATCH, 1, 2)) == sorted(paths)


def test_in_run_order_restores_one_process_order():
    from visctl import distributed

    paths = [f"p{i}" for i in range(7)]
    one = [(p, f"{p}-{k}") for p in paths for k in range(2)] + [("--method x", "once")]
    parts = [[x for x in one if x[0] in distributed.shard(paths, 2, r, 3) or x[0].startswith("--")]
             for r in range(3)]
    merged = distributed.in_run_order(parts, paths, 2)
    assert merged == ["once"] + [v for p, v in one if p in paths]


def test_cam_under_torchrun_matches_one_process(data, tmp_path):
    m1, _ = _compare(["cam", str(data), str(DEMO_CFG), "--method", "gradcam,layercam", "--score", "--save-raw",
                      "--batch-size", str(BATCH), "--quiet"], tmp_path, data)
    assert m1["outputs"][0]["path"] == "cam_ranking.png"  # the run-wide ranking, drawn once from every rank's scores
    assert {o["input"] for o in m1["outputs"][1:]} == {i["path"] for i in m1["inputs"]} and len(m1["inputs"]) == 5
    assert m1["faithfulness_ranking"][0]["n"] == 5


def test_featmap_global_scale_under_torchrun_matches_one_process(data, tmp_path):
    m1, _ = _compare(["featmap", str(data), str(DEMO_CFG), "--normalize", "global", "--save-raw",
                      "--batch-size", str(BATCH), "--quiet"], tmp_path, data)
    # one scale for the whole run: rank 0's images and rank 1's drawn with the same span
    scales = {s for o in m1["outputs"] if o["kind"] == "image" for s in o["scales"]}
    assert len(scales) == 1 and len(m1["inputs"]) == 5


def test_boxam_under_torchrun_matches_one_process(data, tmp_path):
    _compare(["boxam", str(data), str(DET_CFG), "--batch-size", str(BATCH), "--save-raw", "--quiet"], tmp_path, data)


def test_recon_under_torchrun_matches_one_process(data, tmp_path):
    m1, _ = _compare(["recon", str(data), str(MAE_CFG), "--batch-size", str(BATCH), "--save-raw", "--quiet"],
                     tmp_path, data)
    assert len(m1["inputs"]) == 5


def test_slice_under_torchrun_matches_one_process(data, tmp_path):
    m1, _ = _compare(["slice", str(data), str(DET_CFG), "--patch-size", "32", "--quiet"], tmp_path, data)
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert {r["file_name"] for r in results} <= {i["path"] for i in m1["inputs"]}


def test_a_user_error_under_torchrun_is_said_once(data, tmp_path):
    two = _run(["cam", str(data), str(DEMO_CFG), "--target-layers", "no.such.layer", "--quiet"], tmp_path / "two", 2)
    assert two.returncode != 0
    assert two.stderr.count("error: ") == 1, two.stderr[-3000:]
    assert "no.such.layer" in two.stderr and not _visctl_traceback(two.stderr)


def test_world_size_without_torchrun_is_one_message(invoke, data, tmp_path, monkeypatch):
    """WORLD_SIZE set by hand (no MASTER_ADDR): one message and a hint, exit 2, no traceback, nothing written."""
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = invoke("cam", str(data), str(DEMO_CFG), "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 2, result.output
    assert "cannot join the torchrun process group" in result.output and "hint:" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_command_that_does_not_shard_runs_whole_on_each_rank(invoke, tmp_path, monkeypatch):
    """lr (and pipeline, browse) have no inputs to split: under torchrun's environment they do not join a
    process group (no MASTER_ADDR needed) and every rank's run is a whole one."""
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = tmp_path / "cfg.py"
    cfg.write_text("optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))\n"
                   "train_cfg = dict(by_epoch=False, max_iters=20)\ntrain_dataloader = dict(batch_size=3)\n")
    result = invoke("lr", cfg, "-o", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["runs"][-1]["status"] == "ok"


def test_audit_under_torchrun_matches_one_process(data, tmp_path):
    """The CSV merged from both ranks in the run's order, the tallies summed exactly, the worst images chosen
    over the whole run: the files and the manifest's summary of a one-process run."""
    from visctl.shapes import write_coco, write_scenes

    coco = write_coco(tmp_path / "coco.json", write_scenes(tmp_path / "again", range(200_000, 200_005), size=64),
                      tmp_path / "again")
    args = ["audit", str(DEMO_CFG), "--data", str(data), "--annotations", str(coco), "--batch-size", str(BATCH),
            "--worst", "3", "--fail-under", "pointing=0.1"]
    one, two = _run(args, tmp_path / "one", 1), _run(args, tmp_path / "two", 2)
    assert one.returncode == two.returncode == 1, (one.stderr, two.stderr)  # the broken image: partial
    assert not _visctl_traceback(two.stderr), two.stderr
    m1, m2 = _same_runs(tmp_path / "one", tmp_path / "two")
    assert m1["audit"] == m2["audit"] and m1["audit"]["images"] == 5
    assert (tmp_path / "two" / "audit.csv").read_bytes() == (tmp_path / "one" / "audit.csv").read_bytes()
    assert not list((tmp_path / "two").glob(".*.part"))
