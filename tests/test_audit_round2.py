"""`visctl audit`, second round of hostile inputs: malformed COCO polygons, ids and huge numbers; file names with
CR or escape sequences; empty masks; an interrupt; a NaN --compare checkpoint; the API's fail_under dict; the
ranges --help shows; -o inside --data. Each is an annotation left out (a warning), one error line (exit 2) or
a true message; never a traceback."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import numpy as np
import pytest
from conftest import DEMO_CFG, coco_variant, manifest

import visctl
from visctl import audits as A
from visctl.errors import ArgumentError, InputError

DEMO_CKPT = DEMO_CFG.parent / "classifier.pth"





def _rows(out, name="audit.csv"):
    with open(out / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _first(d, **kw):
    d["annotations"][0].update(kw)


@pytest.mark.parametrize("change", [
    lambda d: _first(d, segmentation=[[1, 2, 3, 4, 5, 6, 7]]),
    lambda d: _first(d, segmentation=[[1, 2, "x", 4, 5, 6]]),
    lambda d: _first(d, segmentation=[[1, 2, None, 4, 5, 6]]),
    lambda d: _first(d, segmentation=[[1, 2, 1e308 * 10, 4, 5, 6]]),  # inf in Python, written as Infinity
    lambda d: _first(d, segmentation=[[1, 2, 1e300, 4, 5, 6]]),
    lambda d: _first(d, segmentation=[[1, 2, float("nan"), 4, 5, 6]]),
], ids=["odd", "string", "none", "inf", "huge", "nan"])
def test_an_unusable_polygon_leaves_its_annotation_out(tmp_path, audit_shapes, change):
    _, doc = audit_shapes
    ann = A.read_coco(coco_variant(tmp_path, doc, change))
    assert any("unusable segmentation polygon" in p for p in ann.problems), ann.problems
    assert sum(len(objs) for entries in ann.by_name.values() for _, objs in entries) == len(doc["annotations"]) - 1


def test_huge_integers_and_unhashable_category_ids_are_no_traceback(tmp_path, audit_shapes):
    _, doc = audit_shapes
    text = json.dumps(doc).replace('"bbox": [', '"bbox": [1' + "0" * 400 + ", ", 1)
    path = tmp_path / "huge.json"
    path.write_text(text.replace(", ", ", ", 1))
    ann = A.read_coco(path)  # the first bbox has 5 numbers now, the first a huge integer: left out
    assert any("no usable bbox" in p for p in ann.problems)
    first = json.loads(json.dumps(doc))
    first["annotations"][0]["bbox"] = [10**400, 1, 2, 3]
    path.write_text(json.dumps(first))
    assert any("no usable bbox" in p for p in A.read_coco(path).problems)
    every = json.loads(json.dumps(doc))
    for a in every["annotations"]:
        a["segmentation"] = [[1, 2, 3]]  # 3 numbers: odd
    path.write_text(json.dumps(every))
    with pytest.raises(InputError, match="usable segmentation"):
        A.read_coco(path)
    cats = json.loads(json.dumps(doc))
    cats["categories"][0]["id"] = [1]
    cats["annotations"][0]["category_id"] = [1]
    path.write_text(json.dumps(cats))
    ann = A.read_coco(path)
    assert ann.by_name


def test_a_voc_folder_with_no_usable_box_is_one_error(tmp_path):
    folder = tmp_path / "voc"
    folder.mkdir()
    (folder / "a.xml").write_text("<annotation><filename>a.png</filename><object><name>circle</name><bndbox>"
                                  "<xmin>5</xmin><ymin>x</ymin><xmax>1</xmax><ymax>9</ymax></bndbox></object>"
                                  "</annotation>")
    with pytest.raises(InputError, match="usable bndbox"):
        A.read_voc(folder)


def test_a_cr_in_a_file_name_is_quoted_and_the_csv_reads_back():
    names = ["a\rb.png", "c\nd.png", 'e"f,g.png', "=cmd.png", "plain.png"]
    text = A.csv_header() + "".join(A.csv_line(dict(index=i, path=n, correct=True)) for i, n in enumerate(names))
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["path"] for r in rows] == names
    from visctl.library.audit import compare_header, compare_line

    text = compare_header() + "".join(compare_line(dict(index=i, path=n)) for i, n in enumerate(names))
    assert [r["path"] for r in csv.DictReader(io.StringIO(text, newline=""))] == names


def test_fail_under_twice_and_the_dict_form_are_checked():
    with pytest.raises(ArgumentError, match="twice"):
        A.parse_thresholds(["pointing=0.8,pointing=0.1"])
    with pytest.raises(ArgumentError, match="twice"):
        A.parse_thresholds(["pointing=0.8", "pointing=0.1"])
    for bad in ({"pointng": 0.8}, {"pointing": math.nan}, {"pointing": "x"}, {"pointing": True}):
        with pytest.raises(ArgumentError):
            A.check_thresholds(bad)
    assert A.check_thresholds({"pointing": 0.8, "accuracy": 1}) == {"pointing": 0.8, "accuracy": 1.0}


def test_fail_under_dict_is_refused_by_the_api(audit_shapes):
    data, _ = audit_shapes
    with pytest.raises(ArgumentError, match="unknown measure"):
        visctl.audit(DEMO_CFG, data=data, fail_under={"nope": 0.5})
    with pytest.raises(ArgumentError, match="phase"):
        visctl.audit(DEMO_CFG, data=data, phase="val")


def test_control_characters_are_printed_escaped():
    from visctl.context import printable

    assert printable("a\x1b[2Jb\rc\nd") == "a\\x1b[2Jb\\rc\\nd"
    assert printable("plain é name") == "plain é name"


def test_help_ranges_agree_with_the_check(invoke):
    result = invoke("audit", "--help")
    text = " ".join(result.output.split())
    assert "0.0<=x<=0.5" not in text and "0.0<=x<=100.0" not in text
    assert "x<=0.5" in text and "x<=100.0" in text and "above 0" in text


def test_empty_masks_escapes_one_warning_and_output_folder_inside_data(invoke, audit_shapes, tmp_path):
    """An all-zero --region mask means no object; a file name with an escape sequence is printed escaped and
    once; the run's own -o inside --data is not warned about as a class folder; --border under a pixel is said."""
    from PIL import Image

    data, _ = audit_shapes
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    (folder / "circle" / "bad\x1b[2Jx.png").write_bytes(b"junk")
    masks = tmp_path / "masks"
    masks.mkdir()
    images = sorted(p for p in folder.rglob("*.png") if "bad" not in p.name)
    for i, p in enumerate(images):
        m = np.zeros((96, 96), np.uint8)
        if i:
            m[20:60, 20:60] = 255
        Image.fromarray(m).save(masks / p.name)
    out = folder / "out"
    result = invoke("audit", DEMO_CFG, DEMO_CKPT, "--data", folder, "--region", masks, "-o", out, "--border", "0.001")
    assert result.exit_code == 1, result.output
    assert "\x1b" not in result.output and "\\x1b[2Jx.png" in result.output
    assert result.output.count("x1b[2Jx.png: cannot decode") == 1, result.output
    assert "not among the config's" not in result.output and "'out'" not in result.output
    rows = {r["path"]: r for r in _rows(out)}
    assert rows[str(images[0])]["pointing"] == "" and rows[str(images[0])]["object"] == "0"
    assert manifest(out)["audit"]["unannotated"] == 1
    assert "1 image(s) have no object" in result.output
    assert manifest(out)["audit"]["border_px"] == [1, 1] and "border band is 1 px" in result.output


def test_a_box_between_pixel_centres_is_said_so(invoke, audit_shapes, tmp_path):
    data, doc = audit_shapes
    first = doc["images"][0]

    def change(d):
        for a in d["annotations"]:
            if a["image_id"] == first["id"]:
                a["bbox"] = [10.6, 10.6, 0.3, 0.3]
                a.pop("segmentation", None)

    out = tmp_path / "out"
    result = invoke("audit", DEMO_CFG, DEMO_CKPT, "--data", data, "--annotations", coco_variant(tmp_path, doc, change),
                    "-o", out)
    assert result.exit_code == 1, result.output
    (failure,) = manifest(out)["failures"]
    assert "cover none of its 96x96 pixels' centres" in failure["error"] and "outside" not in failure["error"]


def test_a_nan_compare_checkpoint_keeps_the_audit(invoke, audit_shapes, tmp_path):
    import torch

    data, _ = audit_shapes
    ckpt = torch.load(DEMO_CKPT, weights_only=False)
    ckpt["state_dict"]["head.fc.weight"] = torch.full_like(ckpt["state_dict"]["head.fc.weight"], 3e38)  # finite: inf logits
    bad = tmp_path / "nan.pth"
    torch.save(ckpt, bad)
    out = tmp_path / "out"
    result = invoke("audit", DEMO_CFG, DEMO_CKPT, "--data", data, "--compare", bad, "-o", out)
    assert result.exit_code == 0, result.output
    assert "--compare checkpoint" in result.output and "12 image(s)" in result.output
    assert len(_rows(out)) == 12
    pairs = _rows(out, "audit_compare.csv")
    assert len(pairs) == 12 and all(r["correct_b"] == "" and r["correct_a"] != "" for r in pairs)


def test_an_interrupt_lists_no_input_without_its_row(invoke, audit_shapes, tmp_path, monkeypatch):
    data, _ = audit_shapes
    real, calls = A.csv_line, []

    def line(row):
        calls.append(row)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(row)

    monkeypatch.setattr(A, "csv_line", line)
    out = tmp_path / "out"
    result = invoke("audit", DEMO_CFG, DEMO_CKPT, "--data", data, "-o", out)
    assert result.exit_code != 0
    m = manifest(out)
    listed = {o["path"] for o in m["outputs"]}
    assert m["inputs"] == [] or "audit.csv" in listed


def test_the_options_object_reads_fail_under_and_keeps_the_compared_checkpoint_as_given():
    from visctl.options import AuditOptions

    o = AuditOptions(fail_under=["pointing=0.8,accuracy=0.9"], compare="https://host/ckpt.pth")
    assert o.fail_under == {"pointing": 0.8, "accuracy": 0.9} and o.compare == "https://host/ckpt.pth"
    assert AuditOptions(fail_under="iou=0.5").replace(worst=2).fail_under == {"iou": 0.5}
    assert AuditOptions(fail_under={"pointing": 1}).fail_under == {"pointing": 1.0}
    with pytest.raises(ArgumentError, match="fail_under='pointy=1'"):
        AuditOptions(fail_under="pointy=1")


def test_settings_and_keywords_give_the_same_audit(audit_shapes):
    from visctl.options import AuditOptions

    data, _ = audit_shapes
    by_keywords = visctl.audit(DEMO_CFG, data=data, worst=2, batch_size=4, fail_under="accuracy=1.01")
    by_settings = visctl.audit(DEMO_CFG, settings=AuditOptions(data=data, worst=2, fail_under="accuracy=1.01"),
                               batch_size=4)
    assert by_settings.rows == by_keywords.rows and by_settings.params == by_keywords.params
    assert by_settings.failed == by_keywords.failed == ("accuracy 1 < 1.01",)
