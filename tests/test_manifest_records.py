"""A visctl-marked manifest.json is merged only with the records that name files of its folder on disk.

A record of an earlier run whose output path leaves the folder (``../../../etc/passwd``, an absolute path, a
sub-folder that is a link elsewhere), is not a string, names no file here, or a run that is not an object, is
dropped from the merged manifest with one warning (and a note): the manifest lists exactly the files that are
in the folder. Such records never make a file replaceable nor hide an input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import DEMO_CFG, manifest

from visctl.errors import InputWarning
from visctl.output.manifest import drop_visctl_outputs, known_outputs, listed_outputs
from visctl.output.writer import OutputWriter


def _forge(folder: Path, outputs: list, extra_runs: list | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"generator": "visctl", "runs": [{"id": "r1", "started": "2000", "outputs": outputs, "status": "ok"},
                                           *(extra_runs or [])]}
    (folder / "manifest.json").write_text(json.dumps(doc))


def _listed(folder: Path) -> set[str]:
    return {o["path"] for r in manifest(folder)["runs"] for o in r.get("outputs") or []}


BAD_RECORDS = [
    {"path": "../../../etc/passwd"},
    {"path": "/etc/passwd"},
    {"path": "sub/../../outside.png"},
    {"path": 5},
    {"path": None},
    {"path": ""},
    {"path": ["a.png"]},
    {"path": "ghost.png"},
    {"path": "adir"},
    "just-a-string",
    7,
]


@pytest.mark.parametrize("bad", BAD_RECORDS, ids=[json.dumps(b) for b in BAD_RECORDS])
def test_writer_merges_only_files_on_disk(tmp_path, bad):
    folder = tmp_path / "out"
    _forge(folder, [bad, {"path": "kept.png", "kind": "image"}])
    (folder / "kept.png").write_bytes(b"x")
    (folder / "adir").mkdir()
    (tmp_path / "outside.png").write_bytes(b"x")
    writer = OutputWriter(folder, "cam", {})
    with pytest.warns(InputWarning, match="dropped 1 record"):
        writer.start()
    writer.write_output("mine.png", b"y", "image")
    writer.finish("ok")
    assert _listed(folder) == {"kept.png", "mine.png"}
    assert any("dropped 1 record" in n for n in manifest(folder)["notes"])


def test_runs_that_are_not_objects_are_dropped_with_a_warning(tmp_path):
    folder = tmp_path / "out"
    _forge(folder, [], extra_runs=[1, None, "x"])
    with pytest.warns(InputWarning, match="dropped 3 records") as got:
        OutputWriter(folder, "cam", {}).finish("ok")
    assert "not an object" in str(got[0].message)
    assert all(isinstance(r, dict) for r in manifest(folder)["runs"])


def test_outputs_not_a_list_are_dropped(tmp_path):
    folder = tmp_path / "out"
    _forge(folder, "passwd")
    with pytest.warns(InputWarning, match="not a list"):
        OutputWriter(folder, "cam", {}).finish("ok")
    assert all(isinstance(r["outputs"], list) for r in manifest(folder)["runs"])


def test_a_linked_subfolder_leaves_the_folder(tmp_path):
    folder = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.png").write_bytes(b"x")
    _forge(folder, [{"path": "link/secret.png"}])
    os.symlink(elsewhere, folder / "link")
    with pytest.warns(InputWarning, match="outside the folder"):
        OutputWriter(folder, "cam", {}).finish("ok")
    assert _listed(folder) == set()
    assert str((elsewhere / "secret.png").resolve()) not in known_outputs(folder)


def test_forged_records_never_mark_files_outside_as_visctl_s(tmp_path):
    folder = tmp_path / "out"
    victim = tmp_path / "data" / "img.png"
    victim.parent.mkdir()
    victim.write_bytes(b"x")
    _forge(folder, [{"path": "../data/img.png"}, {"path": str(victim)}])
    assert str(victim) not in known_outputs(folder) and str(victim.resolve()) not in known_outputs(folder)
    assert victim.resolve() not in listed_outputs(folder / "manifest.json")
    kept, dropped = drop_visctl_outputs([folder / "manifest.json", victim])
    assert victim in kept


def test_cli_merge_lists_exactly_the_files_of_the_folder(tmp_path, invoke, image_file):
    folder = tmp_path / "mo"
    _forge(folder, [{"path": "../../../etc/passwd"}, {"path": "ghost.png"}, {"path": 5}], extra_runs=[1, None])
    result = invoke("cam", image_file, DEMO_CFG, "-o", folder)
    assert result.exit_code == 0, result.output
    warned = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:") and "dropped 5 records" in ln]
    assert len(warned) == 1, result.stderr
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
               and p.name not in ("manifest.json", "index.html") and not p.name.startswith(".")}
    assert _listed(folder) == on_disk and on_disk
