"""Outputs under hostile conditions: bad folders, full disks, interrupts, colliding names, inputs as targets,
shared folders (issue 14, items 6-11)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO_CFG, ROOT, assert_one_error, manifest

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
# files of a run folder that are not outputs: the folder's record, its gallery and its lock
RECORD = {"manifest.json", "index.html", ".manifest.lock"}


def _images(folder: Path, n: int, size: int = 80) -> list[Path]:
    from visctl.shapes import write_scenes

    return [p for p, _ in write_scenes(folder, range(100_000, 100_000 + n), size=size)]


def _data_cfg(tmp_path: Path, root: Path) -> Path:
    """The demo classifier's config with its train and test datasets in ``root``."""
    cfg = tmp_path / "data_cfg.py"
    cfg.write_text(f"_base_ = ['{DEMO_CFG}']\n"
                   f"train_dataloader = dict(dataset=dict(data_root='{root}'))\n"
                   f"test_dataloader = dict(dataset=dict(data_root='{root}'))\n")
    return cfg


def _files(folder: Path) -> set[str]:
    """Every file under ``folder`` except the run's record, relative."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name not in RECORD}


def _no_work(monkeypatch):
    """Make loading a config or a model fail the test: the checks must come first."""
    from visctl import checkpoints, config

    def boom(*a, **k):
        raise AssertionError("work was done before the output was checked")
    monkeypatch.setattr(config, "load_config", boom)
    monkeypatch.setattr(checkpoints, "load_model", boom)


def _one_error(result) -> str:
    assert_one_error(result)
    return result.stderr


# -- 6: a bad --out-dir is one clear error, before anything is loaded ------------------------------------------

COMMANDS = {
    "cam": lambda img, cfg: ["cam", img, cfg],
    "featmap": lambda img, cfg: ["featmap", img, cfg],
    "boxam": lambda img, cfg: ["boxam", img, DET_CFG],
    "lr": lambda img, cfg: ["lr", cfg],
    "browse": lambda img, cfg: ["browse", cfg],
    "pipeline": lambda img, cfg: ["pipeline", cfg],
    "tsne": lambda img, cfg: ["tsne", cfg],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("where", ["a file", "under a file", "/proc", "/sys"])
def test_bad_out_dir_is_one_error_before_any_work(invoke, image_file, tmp_path, monkeypatch, command, where):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = {"a file": afile, "under a file": afile / "sub" / "dir", "/proc": Path("/proc/visctl-out"),
           "/sys": Path("/sys/visctl-out")}[where]
    _no_work(monkeypatch)
    err = _one_error(invoke(*COMMANDS[command](image_file, DEMO_CFG), "-o", out))
    assert str(out) in err
    assert afile.read_text() == "not a folder"
    assert out == afile or not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_read_only_out_dir_is_one_error(invoke, image_file, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    _no_work(monkeypatch)
    err = _one_error(invoke("cam", image_file, DEMO_CFG, "-o", ro / "out"))
    assert "Permission denied" in err


def test_an_error_before_any_output_leaves_no_new_folder(invoke, image_file, tmp_path):
    out = tmp_path / "new" / "deeper"
    result = invoke("cam", image_file, DEMO_CFG, "--target-layers", "no.such.layer", "-o", out)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "new").exists()
    result = invoke("cam", image_file, DEMO_CFG, "--preview-model", "-o", out)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "new").exists()


# -- 10: never write over an input of the run -----------------------------------------------------------------

def test_save_path_naming_the_input_image_is_refused_before_work(invoke, image_file, monkeypatch):
    before = image_file.read_bytes()
    _no_work(monkeypatch)
    err = _one_error(invoke("cam", image_file, DEMO_CFG, "--save-path", image_file))
    assert "is an input of this run" in err
    assert image_file.read_bytes() == before


@pytest.mark.parametrize("option", ["--csv", "--save-path"])
def test_lr_output_naming_the_config_is_refused(invoke, tmp_path, option):
    cfg = tmp_path / "cfg.py"
    shutil.copy(DEMO_CFG, cfg)
    cfg.write_text(cfg.read_text().replace("{{ fileDirname }}", str(DEMO_CFG.parent)))
    before = cfg.read_bytes()
    err = _one_error(invoke("lr", cfg, "--dataset-size", "600", option, cfg))
    # --save-path takes image names only, so a .py file is refused for its suffix before it is seen as an input
    expected = f"{option} {cfg} is an input" if option == "--csv" else f"{option} {cfg}: visctl cannot write a .py"
    assert expected in err
    assert cfg.read_bytes() == before


def test_out_file_naming_the_input_through_a_link_is_refused(invoke, image_file, tmp_path, monkeypatch):
    link = tmp_path / "link.png"
    link.symlink_to(image_file)
    before = image_file.read_bytes()
    _no_work(monkeypatch)
    _one_error(invoke("featmap", image_file, DEMO_CFG, "--out-file", link))
    assert image_file.read_bytes() == before and link.is_symlink()


def test_writer_refuses_an_output_that_lands_on_an_input(tmp_path):
    import numpy as np

    from visctl.errors import OutputError
    from visctl.output.writer import OutputWriter

    victim = tmp_path / "a_cam.png"
    victim.write_bytes(b"precious")
    w = OutputWriter(tmp_path, "cam", {})
    w.protect([victim])
    with pytest.raises(OutputError, match="is an input of this run"):
        w.save_image("a_cam.png", np.zeros((4, 4, 3), np.uint8))
    assert victim.read_bytes() == b"precious"
    assert w.manifest["outputs"] == []


def test_outputs_in_the_input_folder_never_replace_an_input(invoke, tmp_path):
    """-o is the input folder, and an input is named like another input's output."""
    imgs = _images(tmp_path / "data", 1)
    folder = imgs[0].parent
    twin = folder / f"{imgs[0].stem}_cam_gradcam_backbone_layer4.png"
    shutil.copy(imgs[0], twin)
    before = twin.read_bytes()
    err = _one_error(invoke("cam", folder, DEMO_CFG, "-o", folder))
    assert "is an input of this run" in err
    assert twin.read_bytes() == before
    m = manifest(folder)
    assert m["status"] == "error" and "is an input" in m["error"]


# -- 9: output names are unique within a run -------------------------------------------------------------------

def test_input_stems_are_unique_whatever_the_names():
    from visctl.output.writer import input_stems

    paths = [Path(n) for n in ("d/p q.png", "d/p-q.png", "d/p-q_1.png", "d/A.png", "d/a.png", "d/.hidden.png",
                               "d/x.tif", "d/x_tif.png")]
    stems = input_stems(paths)
    assert len({s.casefold() for s in stems.values()}) == len(paths), stems
    assert stems[Path("d/p-q_1.png")] == "p-q_1"  # a name an input has by itself is kept
    assert not any(s.startswith(".") for s in stems.values())


def test_writer_never_gives_two_outputs_one_name(tmp_path):
    import numpy as np

    from visctl.output.writer import OutputWriter

    w = OutputWriter(tmp_path, "cam", {})
    a = w.save_image("x.png", np.zeros((4, 4, 3), np.uint8))
    b = w.save_image("X.png", np.ones((4, 4, 3), np.uint8))
    c = w.save_array("x.png", np.zeros(3))
    paths = [o["path"] for o in w.manifest["outputs"]]
    assert len({p.casefold() for p in paths}) == 3 and len({a, b, c}) == 3
    assert all((tmp_path / p).is_file() for p in paths)


COLLIDE = {
    "cam": (DEMO_CFG, []),
    "featmap": (DEMO_CFG, ["--save-raw"]),
    "boxam": (DET_CFG, ["--save-raw"]),
    "recon": (MAE_CFG, []),
    "slice": (DET_CFG, ["--patch-size", "64"]),
}


@pytest.mark.parametrize("command", sorted(COLLIDE))
def test_colliding_input_names_give_distinct_outputs(invoke, tmp_path, command):
    src = _images(tmp_path / "src", 3, size=64)
    folder = tmp_path / "in"
    folder.mkdir()
    for p, name in zip(src, ("p q.png", "p-q.png", "p-q_1.png")):
        shutil.copy(p, folder / name)
    cfg, extra = COLLIDE[command]
    out = tmp_path / "out"
    result = invoke(command, folder, cfg, *extra, "-o", out)
    assert result.exit_code == 0, result.output
    m = manifest(out)
    paths = [o["path"] for o in m["outputs"]]
    assert len(paths) == len(set(paths))
    assert set(paths) == _files(out)  # every file listed once, every listed file there
    per_input = {i["path"]: [o["path"] for o in m["outputs"] if o.get("input") == i["path"]] for i in m["inputs"]}
    assert len(per_input) == 3 and all(per_input.values())
    assert len({len(v) for v in per_input.values()}) == 1  # the same outputs for each input: none lost


# -- 7: a full disk is one clear error; partial files removed; the manifest says what was finished ---------------

def test_full_disk_is_one_error_and_the_manifest_lists_what_was_finished(invoke, tmp_path, monkeypatch):
    from visctl.output import files

    imgs = _images(tmp_path / "data", 5)
    out = tmp_path / "out"
    real = files._write_file
    written = []

    def fill(fh, data, target):
        if "_cam_" in target.name:
            if len(written) >= 2:
                real(fh, data[: len(data) // 2], target)  # half a file, then the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(target)
        real(fh, data, target)
    monkeypatch.setattr(files, "_write_file", fill)
    result = invoke("cam", imgs[0].parents[1], DEMO_CFG, "--batch-size", "1", "-o", out)
    err = _one_error(result)
    assert "No space left on device" in err and "_cam_" in err
    assert not list(out.rglob("*.part")), "a partial file was left"
    m = manifest(out)
    assert m["status"] == "error" and "No space left" in m["error"]
    assert len(m["outputs"]) == 2 and {o["path"] for o in m["outputs"]} == _files(out)
    assert {i["path"] for i in m["inputs"]} == {o["input"] for o in m["outputs"]}


def test_tsne_checks_the_space_for_its_features_first(invoke, held_out, tmp_path, monkeypatch):
    """A memory-mapped file on a full disk is a SIGBUS (exit 135, nothing said); visctl refuses up front."""
    import collections

    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    root = next(iter(held_out)).parents[1]
    out = tmp_path / "out"
    result = invoke("tsne", DEMO_CFG, "--cfg-options", f"test_dataloader.dataset.data_root={root}",
                    "--max-num-samples-per-class", "5", "--method", "pca", "-o", out)
    err = _one_error(result)
    assert "the features need" in err and "free" in err
    assert not list(out.glob("*.npy")) and not list(out.rglob("*.part"))
    m = manifest(out)
    assert m["status"] == "error" and m["outputs"] == []


def test_feature_file_reserves_its_blocks(tmp_path, monkeypatch):
    """posix_fallocate failing with ENOSPC is an OSError and no half file, not a SIGBUS later."""
    from visctl import embedding

    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate here")
    seen = []

    def full(fd, offset, length):
        seen.append(length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", full)
    target = tmp_path / "features_x.npy"
    with pytest.raises(OSError) as info:
        embedding.feature_file(target, 1000, 512)
    assert info.value.errno == errno.ENOSPC
    assert seen and seen[0] >= 1000 * 512 * 4
    assert not target.exists()


# -- 8: interrupts leave a true manifest ------------------------------------------------------------------------

def test_tsne_interrupted_during_extraction_removes_the_half_filled_features(invoke, held_out, tmp_path,
                                                                             monkeypatch):
    from visctl import datasets

    real = datasets.iterate

    def stop_midway(*a, **k):
        for n, item in enumerate(real(*a, **k)):
            if n == 12:
                raise KeyboardInterrupt
            yield item
    monkeypatch.setattr(datasets, "iterate", stop_midway)
    root = next(iter(held_out)).parents[1]
    out = tmp_path / "out"
    result = invoke("tsne", DEMO_CFG, "--cfg-options", f"test_dataloader.dataset.data_root={root}",
                    "--max-num-samples-per-class", "10", "--batch-size", "4", "--method", "pca", "-o", out)
    assert result.exit_code == 130, result.output
    assert not list(out.glob("*.npy")), "a half-filled features file was left"
    m = manifest(out)
    assert m["status"] == "interrupted" and m["outputs"] == [] and m["inputs"] == []
    assert "0 finished output(s)" in result.stderr


def _check_true(out: Path, command: str) -> dict:
    """The manifest after an interrupt: valid JSON, listing exactly the files there, inputs = inputs drawn."""
    m = json.loads((out / "manifest.json").read_text())
    listed = {o["path"] for o in m["outputs"]}
    assert listed == _files(out) - {"labels.json"}, (sorted(listed), sorted(_files(out)))
    assert not any(p.endswith(".part") for p in _files(out))
    inputs = {i["path"] for i in m["inputs"]}
    if command in ("cam", "featmap"):
        assert inputs == {o["input"] for o in m["outputs"]}
    if command == "browse":
        pages = {f"browse_train_{i['page']:03d}.png" for i in m["inputs"]}
        assert pages == listed and len(inputs) == 3 * len(listed)
    if command == "tsne":
        for o in m["outputs"]:
            if o["kind"] == "array":
                import numpy as np

                assert np.load(out / o["path"]).shape[0] == len(inputs)
    return m


SLOW = {  # each long enough (several seconds after its first output) to be stopped midway
    "cam": lambda d, cfg: ["cam", d, cfg, "--method", "scorecam", "--batch-size", "1"],
    "featmap": lambda d, cfg: ["featmap", d, cfg, "--channel-reduction", "none", "--topk", "16", "--batch-size", "1",
                               "--target-layers", "backbone.layer1,backbone.layer2,backbone.layer3,backbone.layer4"],
    "browse": lambda d, cfg: ["browse", cfg, "--rows", "1", "--cols", "3", "--number", "-1"],
    "tsne": lambda d, cfg: ["tsne", cfg, "--batch-size", "1", "--n-iter", "5000", "--all-stages"],
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", sorted(SLOW))
def test_interrupt_leaves_a_true_manifest(tmp_path, command, sig):
    data = tmp_path / "data"
    _images(data, 120, size=96)
    cfg = _data_cfg(tmp_path, data)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = [str(a) for a in SLOW[command](data, cfg)]
    if command != "browse":  # browse runs no model
        args += ["--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "visctl", *args, "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # the first output (tsne: the run's record, opened before extraction), then the signal
    first = "manifest.json" if command == "tsne" else "*.png"
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not list(out.glob(first)):
        time.sleep(0.05)
    if command == "tsne":
        time.sleep(1.0)  # into the extraction
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err[-2000:]
    assert "Traceback" not in err
    m = _check_true(out, command)
    assert m["status"] == ("interrupted" if sig == signal.SIGINT else "terminated")
    assert f"{out / 'manifest.json'} lists them" in err or "before any output" in err


def test_sigterm_handler_is_restored_after_the_run(invoke, image_file, tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert invoke("cam", image_file, DEMO_CFG, "-o", tmp_path / "o").exit_code == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# -- 11: shared output folders ---------------------------------------------------------------------------------

def test_rerun_keeps_every_run_listed_and_replaced_names_move(invoke, tmp_path):
    imgs = _images(tmp_path / "data", 2)
    out = tmp_path / "out"
    assert invoke("cam", imgs[0], DEMO_CFG, "-o", out).exit_code == 0
    first = manifest(out)
    assert invoke("cam", imgs[0], imgs[1], DEMO_CFG, "--method", "layercam", "-o", out).exit_code == 0
    assert invoke("cam", imgs[0], DEMO_CFG, "-o", out).exit_code == 0  # the first run's name again
    m = manifest(out)
    assert [r["id"] for r in m["runs"]][0] == first["id"] and len(m["runs"]) == 3
    assert len({r["id"] for r in m["runs"]}) == 3
    assert m["runs"][0]["outputs"] == [] and m["runs"][0]["replaced"][0]["by"] == m["runs"][2]["id"]
    assert m["runs"][1]["params"]["methods"] == ["layercam"]
    every = [o["path"] for r in m["runs"] for o in r["outputs"]]
    assert len(every) == len(set(every)) and set(every) == _files(out)
    # the top level is the last run, as --json prints it
    assert m["id"] == m["runs"][2]["id"] and len(m["outputs"]) == 1
    page = (out / "index.html").read_text()
    assert all(Path(p).name in page for p in every)  # the folder's gallery shows every run's outputs


def test_concurrent_runs_into_one_folder_are_all_listed(tmp_path):
    imgs = _images(tmp_path / "data", 2)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    runs = [subprocess.Popen([sys.executable, "-m", "visctl", "cam", str(img), str(DEMO_CFG), "--method", method,
                              "--threads", "1", "-q", "-o", str(out)], env=env, stderr=subprocess.PIPE)
            for img, method in ((imgs[0], "gradcam"), (imgs[1], "eigencam"), (imgs[0], "layercam"))]
    for proc in runs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    m = manifest(out)
    assert len(m["runs"]) == 3 and {r["status"] for r in m["runs"]} == {"ok"}
    assert {r["pid"] for r in m["runs"]} == {p.pid for p in runs}
    every = [o["path"] for r in m["runs"] for o in r["outputs"]]
    assert len(every) == 3 and set(every) == _files(out)


def test_out_dir_inside_the_input_folder_is_not_read_back(invoke, tmp_path):
    imgs = _images(tmp_path / "data", 3)
    data = tmp_path / "data"
    out = data / "visctl-out"
    for _ in range(2):
        result = invoke("cam", data, DEMO_CFG, "-o", out)
        assert result.exit_code == 0, result.output
        m = manifest(out)
        assert sorted(i["path"] for i in m["inputs"]) == sorted(str(p) for p in imgs)
    assert "written by visctl" in result.stderr
    # a dataset folder too: the run folder is neither a class nor a sample
    cfg = _data_cfg(tmp_path, data)
    result = invoke("browse", cfg, "--number", "-1", "-o", data / "browsed")
    assert result.exit_code == 0, result.output
    assert len(manifest(data / "browsed")["inputs"]) == 3
    result = invoke("browse", cfg, "--number", "-1", "-o", data / "browsed")
    assert len(manifest(data / "browsed")["inputs"]) == 3


def test_a_foreign_manifest_is_never_replaced(tmp_path):
    """Issue 24: another tool's manifest.json is refused (it was replaced before); tests/test_hostile_output.py."""
    from visctl.errors import OutputError
    from visctl.output.writer import OutputWriter

    (tmp_path / "manifest.json").write_text('{"name": "someone else\'s"}')
    w = OutputWriter(tmp_path, "cam", {})
    with pytest.raises(OutputError, match="did not write"):
        w.start()
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"name": "someone else's"}
