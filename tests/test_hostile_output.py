"""Hostile output folders (issue 24, item 6 and the FIFO of item 8): a full disk leaves a true manifest, and a
run never replaces (nor follows, nor opens) a file visctl did not write: another tool's or a damaged
manifest.json, a foreign index.html, a FIFO, a folder or a link where visctl would write.

Parametrized over every command that writes (those with ``--out-dir``): a new command inherits each test and
fails until it has a command line below.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import threading
from pathlib import Path

import pytest
from conftest import DEMO_CFG, ROOT, assert_one_error, manifest

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
RECORD = {"manifest.json", "index.html", ".manifest.lock"}  # a run folder's files that are not outputs


def _commands_with(option: str) -> list[str]:
    import typer.main

    from visctl.cli import app

    group = typer.main.get_command(app)
    return sorted(name for name, cmd in group.commands.items()  # type: ignore[attr-defined]
                  if any(option in p.opts for p in cmd.params))


WRITERS = _commands_with("--out-dir")
#: the options that name one output file; the run's manifest and gallery go beside it (cam, featmap, lr)
FILE_OPTIONS = {"cam": "--save-path", "featmap": "--out-file", "lr": "--save-path", "recon": "--out-file"}


def _line(command: str, data: Path, cfg: Path, out: Path) -> list:
    """A small run of ``command`` into ``out`` that writes at least two outputs."""
    lines = {
        "cam": ["cam", data, DEMO_CFG, "--batch-size", "1"],
        "featmap": ["featmap", data, DEMO_CFG, "--batch-size", "1"],
        "boxam": ["boxam", data, DET_CFG],
        "slice": ["slice", data / "circle", DET_CFG, "--patch-size", "64"],
        "recon": ["recon", data, MAE_CFG],
        "pipeline": ["pipeline", cfg, "--number", "2", "--mode", "original"],
        "browse": ["browse", cfg, "--number", "-1", "--rows", "1", "--cols", "1"],
        "tsne": ["tsne", cfg, "--method", "pca"],
        "lr": ["lr", DEMO_CFG, "--dataset-size", "100", "--csv", out / "lr.csv"],
        "audit": ["audit", DEMO_CFG, "--data", data, "--batch-size", "2", "--worst", "2"],
        "demo": ["demo", "--images", "4"],
    }
    assert command in lines, f"add a command line for {command} to test_hostile_output._line"
    return [*lines[command], "-o", out]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """Four demo images in class folders (two circles), and a config whose datasets read them."""
    from visctl.shapes import write_scenes

    root = tmp_path_factory.mktemp("data")
    folder = root / "imgs"
    write_scenes(folder, range(100_000, 100_004))
    cfg = root / "data_cfg.py"
    cfg.write_text(f"_base_ = [{str(DEMO_CFG)!r}]\n"
                   f"train_dataloader = dict(dataset=dict(data_root={str(folder)!r}))\n"
                   f"test_dataloader = dict(dataset=dict(data_root={str(folder)!r}))\n")
    assert len(list((folder / "circle").glob("*.png"))) >= 1
    return folder, cfg


@pytest.fixture
def no_hang():
    """A run that blocks (opening a FIFO) is interrupted every few seconds instead of hanging the suite."""
    def stop(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, 2)  # again, should the error path block too
        raise AssertionError("the run blocked (a FIFO opened?)")
    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 60)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def _one_error(result) -> str:
    assert_one_error(result)
    return result.stderr


def _files(folder: Path) -> set[str]:
    """Every entry under ``folder`` except the run's record (hidden leftovers included), relative."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in RECORD and not p.is_dir()}


def test_every_writing_command_has_a_line():
    assert set(WRITERS) >= {"cam", "featmap", "lr", "tsne", "browse"} and "doctor" not in WRITERS
    for command in WRITERS:
        _line(command, Path("x"), Path("y"), Path("z"))
    for command in _commands_with("--save-path") + _commands_with("--out-file"):
        assert command in FILE_OPTIONS, f"add {command}'s output file option to FILE_OPTIONS"


# -- a full disk: the run stops with one error and a manifest that lists exactly what was finished ---------------

class FullDisk:
    """A disk under ``folder`` that has no byte left from the ``at``-th output file on: every write through
    visctl's one low-level write counts what the folder holds (files made otherwise, memory-mapped features,
    count too), and a write that does not fit writes what fits and fails with ENOSPC. Space freed (a file
    removed) can be written again, as on a real disk."""

    def __init__(self, monkeypatch, folder: Path, at: int) -> None:
        from visctl.output import files

        self.folder, self.at, self.outputs, self.capacity = folder, at, 0, None
        self.lock = threading.Lock()
        real = files._write_file

        def write(fh, data, target):
            with self.lock:
                name = Path(target).name
                if self.capacity is None and not name.startswith(".") and name not in RECORD:
                    self.outputs += 1
                    if self.outputs == self.at:
                        fh.flush()
                        self.capacity = self.used()  # full from this output on
                free = len(data) if self.capacity is None else self.capacity - self.used()
                real(fh, data[:max(free, 0)], target)
                fh.flush()
                if free < len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(files, "_write_file", write)

    def used(self) -> int:
        total = 0
        for p in self.folder.rglob("*"):
            try:
                st = p.lstat()
            except OSError:  # removed meanwhile
                continue
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
        return total


@pytest.mark.parametrize("command", WRITERS)
def test_full_disk_leaves_a_true_manifest(invoke, data, tmp_path, monkeypatch, command):
    if command == "demo":
        pytest.skip("demo runs every command (~1 min); its steps save through Result.save: "
                    "test_result_save_on_a_full_disk")
    folder, cfg = data
    out = tmp_path / "out"
    disk = FullDisk(monkeypatch, out, at=2)  # the first output is finished, the disk is full at the second
    result = invoke(*_line(command, folder, cfg, out))
    assert disk.capacity is not None, f"{command} wrote fewer than two outputs: give it a longer line"
    err = _one_error(result)
    assert "No space left on device" in err
    m = manifest(out)
    assert m["status"] == "error" and "No space left" in m["error"], m["status"]
    listed = {o["path"] for o in m["outputs"]}
    assert listed and listed == _files(out), (sorted(listed), sorted(_files(out)))  # no .part, nothing unlisted
    page = (out / "index.html").read_text()
    assert "status: <b>error</b>" in page
    assert all(Path(o["path"]).name in page for o in m["outputs"] if o["kind"] == "image")


def test_result_save_on_a_full_disk(tmp_path, monkeypatch, data):
    """The library's ``result.save(dir)`` (what ``visctl demo`` saves each step with) keeps a true record too."""
    import visctl
    from visctl.errors import OutputError

    folder, _ = data
    result = visctl.featmap(str(folder), DEMO_CFG)
    out = tmp_path / "out"
    FullDisk(monkeypatch, out, at=2)
    with pytest.raises(OutputError, match="No space left"):
        result.save(out)
    m = manifest(out)
    assert m["status"] == "error" and {o["path"] for o in m["outputs"]} == _files(out) != set()


def test_the_held_space_is_given_back(invoke, image_file, tmp_path):
    """The space held for the last manifest is a hidden file that no run leaves behind, nor one that was killed."""
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".visctl-reserve.20240101T000000-{int(dead.stdout)}-abcdef"  # a run killed with SIGKILL
    stale.write_bytes(b"x" * 1000)
    alive = out / f".visctl-reserve.20240101T000000-{os.getppid()}-abcdef"  # a run still going
    alive.write_bytes(b"x" * 1000)
    assert invoke("cam", image_file, DEMO_CFG, "-o", out).exit_code == 0
    assert {p.name for p in out.iterdir()} == RECORD | {o["path"] for o in manifest(out)["outputs"]} | {alive.name}


# -- what is in the folder already: refused before any work, left as it was --------------------------------------

def _fifo(path: Path) -> None:
    os.mkfifo(path)


HOSTILE = {  # (file, how to make it) of a folder visctl would write its record in
    "foreign manifest": ("manifest.json", lambda p: p.write_text(json.dumps({"name": "my-app", "files": []}))),
    "foreign manifest with outputs": ("manifest.json", lambda p: p.write_text(json.dumps(
        {"command": "build", "outputs": [], "params": {}}))),
    "damaged manifest": ("manifest.json", lambda p: p.write_text('{"generator": "visctl", "runs": [{"id": "x"')),
    "empty manifest": ("manifest.json", lambda p: p.write_bytes(b"")),
    "manifest FIFO": ("manifest.json", _fifo),
    "manifest folder": ("manifest.json", lambda p: p.mkdir()),
    "manifest link": ("manifest.json", lambda p: p.symlink_to(p.parent.parent / "elsewhere.json")),
    "foreign index": ("index.html", lambda p: p.write_text("<!doctype html><title>my notes</title>\n")),
    "index FIFO": ("index.html", _fifo),
    "index link": ("index.html", lambda p: p.symlink_to(p.parent.parent / "elsewhere.html")),
    "lock FIFO": (".manifest.lock", _fifo),
}


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Each entry of ``folder``: its kind, and its bytes or its link."""
    snap = {}
    for p in folder.rglob("*"):
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            snap[p.name] = ("link", os.readlink(p))
        elif stat.S_ISREG(st.st_mode):
            snap[p.name] = ("file", p.read_bytes())
        else:
            snap[p.name] = (stat.S_IFMT(st.st_mode),)
    return snap


def _no_work(monkeypatch):
    from visctl import checkpoints, config

    def boom(*a, **k):
        raise AssertionError("work was done before the output folder was checked")
    monkeypatch.setattr(config, "load_config", boom)
    monkeypatch.setattr(checkpoints, "load_model", boom)


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("command", WRITERS)
def test_a_record_file_visctl_did_not_write_is_refused_before_any_work(invoke, data, tmp_path, monkeypatch,
                                                                      no_hang, command, case):
    name, make = HOSTILE[case]
    if command == "demo" and name != "index.html":
        pytest.skip("demo writes only the page over its runs' folders")
    folder, cfg = data
    out = tmp_path / "out"
    out.mkdir()
    make(out / name)
    before = _snapshot(out)
    _no_work(monkeypatch)
    err = _one_error(invoke(*_line(command, folder, cfg, out)))
    assert str(out / name) in err and "never replaces" in err, err
    assert _snapshot(out) == before  # not replaced, nothing written beside it
    assert not (tmp_path / "elsewhere.json").exists() and not (tmp_path / "elsewhere.html").exists()


@pytest.mark.parametrize("command", sorted(FILE_OPTIONS))
def test_a_named_output_file_never_replaces_anothers_record(invoke, data, tmp_path, monkeypatch, command):
    """``--save-path dir/x.png`` puts the run's record beside x.png: another tool's manifest.json and
    index.html there are refused (or, for a command whose record goes to -o, left alone)."""
    folder, cfg = data
    line = _line(command, folder, cfg, tmp_path / "out")
    if command in ("cam", "featmap", "recon"):
        line[1] = next(folder.rglob("*.png"))  # one image for one file
    there = tmp_path / "docs"
    there.mkdir()
    (there / "index.html").write_text("<html><body>my project's page</body></html>\n")
    (there / "manifest.json").write_text(json.dumps({"name": "my-project", "version": "1.0"}))
    before = _snapshot(there)
    result = invoke(*line, FILE_OPTIONS[command], there / "x.png")
    assert _snapshot(there) == before or set(_snapshot(there)) - set(before) == {"x.png"}, sorted(_snapshot(there))
    for name in ("index.html", "manifest.json"):
        assert _snapshot(there)[name] == before[name]
    if result.exit_code:
        err = _one_error(result)
        assert "did not write" in err or "never replaces" in err
        assert not (there / "x.png").exists()


def test_visctls_own_record_is_still_merged(invoke, image_file, tmp_path):
    """What visctl wrote (this version's, or one without the mark) is read and merged as before."""
    out = tmp_path / "out"
    assert invoke("cam", image_file, DEMO_CFG, "-o", out).exit_code == 0
    doc = manifest(out)
    assert doc["generator"] == "visctl" and '<meta name="generator" content="visctl">' in (out / "index.html").read_text()
    old = {k: v for k, v in doc.items() if k != "generator"}  # an earlier visctl's
    old["runs"] = [{k: v for k, v in r.items() if k != "generator"} for r in doc["runs"]]
    (out / "manifest.json").write_text(json.dumps(old))
    page = (out / "index.html").read_text().replace('<meta name="generator" content="visctl">\n', "")
    (out / "index.html").write_text(page)
    assert invoke("cam", image_file, DEMO_CFG, "--method", "layercam", "-o", out).exit_code == 0
    assert len(manifest(out)["runs"]) == 2


def test_the_output_root_page_of_another_tool_is_refused(invoke, image_file, tmp_path, monkeypatch):
    """Runs under visctl-out/ rewrite visctl-out/index.html: not when another tool wrote it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "visctl-out").mkdir()
    (tmp_path / "visctl-out" / "index.html").write_text("<html>mine</html>")
    err = _one_error(invoke("cam", image_file, DEMO_CFG))
    assert "index.html" in err
    assert (tmp_path / "visctl-out" / "index.html").read_text() == "<html>mine</html>"
    assert not (tmp_path / "visctl-out" / "cam").exists()


# -- output names that are links, FIFOs or folders: never followed, never opened, never replaced -----------------

@pytest.mark.parametrize("command", WRITERS)
def test_output_names_that_are_not_visctls_files_are_kept(invoke, data, tmp_path, no_hang, command):
    if command == "demo":
        pytest.skip("demo runs every command (~1 min); its steps write through the same writer")
    folder, cfg = data
    out = tmp_path / "out"
    line = _line(command, folder, cfg, out)
    first = invoke(*line)
    assert first.exit_code == 0, first.output
    named = {str(a) for a in line}  # a file the line names (lr --csv) is replaced as asked: not this test's
    names = [o["path"] for o in manifest(out)["outputs"] if str(out / o["path"]) not in named]
    assert names
    elsewhere = tmp_path / "elsewhere"
    link, fifo = out / names[0], out / names[-1]
    link.unlink()
    link.symlink_to(elsewhere / "target")  # dangling
    if len(names) > 1:
        fifo.unlink()
        os.mkfifo(fifo)
    again = invoke(*line)
    assert again.exit_code == 0, again.output
    assert again.stderr.count("did not write") == 1  # said, once
    assert link.is_symlink() and not elsewhere.exists()  # the link kept, never followed
    assert len(names) == 1 or stat.S_ISFIFO(fifo.lstat().st_mode)  # the FIFO kept, never opened
    m = manifest(out)
    listed = [o["path"] for o in m["outputs"] if str(out / o["path"]) not in named]
    assert len(listed) == len(names)
    for rel in listed:  # each entry is the regular file written in the folder, never a link's target
        assert not Path(rel).is_absolute() and ".." not in Path(rel).parts, rel
        assert stat.S_ISREG((out / rel).lstat().st_mode), rel
    assert names[0] not in listed and names[-1] not in listed
    assert set(names[1:-1]) <= set(listed)  # visctl's own files are replaced under their names, as before


def test_a_named_output_that_is_a_link_is_replaced_not_followed(invoke, image_file, tmp_path):
    target = tmp_path / "elsewhere" / "cam.png"
    link = tmp_path / "out" / "cam.png"
    link.parent.mkdir()
    link.symlink_to(target)
    result = invoke("cam", image_file, DEMO_CFG, "--save-path", link)
    assert result.exit_code == 0, result.output
    assert not target.exists() and not link.is_symlink() and link.is_file()
    assert [o["path"] for o in manifest(link.parent)["outputs"]] == ["cam.png"]


@pytest.mark.parametrize("command", sorted(FILE_OPTIONS))
def test_a_named_output_that_is_a_fifo_is_refused(invoke, data, tmp_path, monkeypatch, no_hang, command):
    folder, cfg = data
    line = _line(command, folder, cfg, tmp_path / "out")
    if command in ("cam", "featmap", "recon"):
        line[1] = next(folder.rglob("*.png"))
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    _no_work(monkeypatch)
    err = _one_error(invoke(*line, FILE_OPTIONS[command], fifo))
    assert "FIFO" in err
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
