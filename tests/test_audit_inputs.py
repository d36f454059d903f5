"""`visctl audit` on what a new user's data holds: class folders that are none of the config's classes, annotation
files that do not describe the images (other names, other ids, unusable or off-image boxes), masks of another
size, and a compared checkpoint of another model. Each ends in one error with a hint (exit 2), or skips the
image, lists it in the manifest and exits 1; never a traceback, never a number of a partly random model."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from conftest import DEMO_CFG, coco_variant, manifest


def _rows(out):
    with open(out / "audit.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _one_error(result, *words):
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "hint:" in result.output, result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.output, result.output


def test_a_class_folder_not_in_the_classes_is_skipped_and_listed(invoke, audit_shapes, tmp_path):
    data, _ = audit_shapes
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    (folder / "dog").mkdir()
    shutil.copy(next((folder / "circle").glob("*.png")), folder / "dog" / "a.png")
    shutil.copy(next((folder / "circle").glob("*.png")), folder / "dog" / "b.png")
    out = tmp_path / "out"
    result = invoke("audit", DEMO_CFG, "--data", folder, "-o", out)
    assert result.exit_code == 1, result.output
    failed = {f["path"]: f["error"] for f in manifest(out)["failures"]}
    assert set(failed) == {str(folder / "dog" / "a.png"), str(folder / "dog" / "b.png")}
    assert all("'dog'" in why for why in failed.values())
    assert len(_rows(out)) == 12  # the class folders' images, all of them


@pytest.mark.parametrize("change, words", [
    (lambda d: [im.update(file_name="other/" + im["file_name"].rsplit("/", 1)[-1][:-4] + "_x.png")
                for im in d["images"]], ["lists none of the 12 images", "other/"]),
    (lambda d: [a.update(image_id=a["image_id"] + 1000) for a in d["annotations"]], ["image ids", "1001"]),
    (lambda d: [a.update(bbox=[10, 10, -5, 20]) for a in d["annotations"]], ["usable bbox", "[10, 10, -5, 20]"]),
    (lambda d: [a.update(bbox="10 10 5 5") for a in d["annotations"]], ["usable bbox"]),
    (lambda d: [a.update(image_id=[1]) for a in d["annotations"]], ["image ids"]),
], ids=["other-file-names", "other-image-ids", "negative-width", "bbox-not-a-list", "unhashable-id"])
def test_a_coco_file_that_does_not_describe_the_images_is_one_error(invoke, audit_shapes, tmp_path, change, words):
    data, doc = audit_shapes
    result = invoke("audit", DEMO_CFG, "--data", data, "--annotations", coco_variant(tmp_path, doc, change),
                    "-o", tmp_path / "out")
    _one_error(result, *words)


def test_boxes_off_the_image_skip_it_and_some_bad_annotations_are_said(invoke, audit_shapes, tmp_path):
    """Boxes wholly outside their image: that image is skipped and listed (exit 1); a box partly outside is
    clipped; an unusable or orphan annotation among good ones is said in a warning."""
    data, doc = audit_shapes
    first, second = doc["images"][0], doc["images"][1]

    def change(d):
        for a in d["annotations"]:
            if a["image_id"] == first["id"]:
                a["bbox"] = [500, 500, 40, 40]
            if a["image_id"] == second["id"]:
                a["bbox"] = [-50, -50, 400, 400]  # the whole image, and more
        d["annotations"].append(dict(id=999, image_id=second["id"], category_id=1, bbox=[1, 2, 0, 3]))
        d["annotations"].append(dict(id=998, image_id=12345, category_id=1, bbox=[1, 2, 3, 3]))

    out = tmp_path / "out"
    result = invoke("audit", DEMO_CFG, "--data", data, "--annotations", coco_variant(tmp_path, doc, change), "-o", out)
    assert result.exit_code == 1, result.output
    failed = {f["path"]: f["error"] for f in manifest(out)["failures"]}
    assert list(failed) == [str(data / first["file_name"])]
    assert "outside its 96x96 pixels" in failed[str(data / first["file_name"])]
    assert "1 annotation(s) have no usable bbox" in result.output
    assert "1 annotation(s) are of image ids no image has (e.g. 12345)" in result.output
    rows = {r["path"]: r for r in _rows(out)}
    assert len(rows) == 11 and float(rows[str(data / second["file_name"])]["energy"]) == 1.0


def test_an_image_with_no_object_of_its_class_is_counted_in_the_note(invoke, audit_shapes, tmp_path):
    data, doc = audit_shapes
    first = doc["images"][0]
    # its object renamed to another class: the file lists the image, with no object of the image's class
    other = {c["name"]: c["id"] for c in doc["categories"]}

    def change(d):
        for a in d["annotations"]:
            if a["image_id"] == first["id"]:
                a["category_id"] = other["cross"] if a["category_id"] != other["cross"] else other["circle"]

    out = tmp_path / "out"
    result = invoke("audit", DEMO_CFG, "--data", data, "--annotations", coco_variant(tmp_path, doc, change), "-o", out)
    assert result.exit_code == 0, result.output
    assert manifest(out)["audit"]["unannotated"] == 1
    assert "1 image(s) have no object" in result.output
    rows = {r["path"]: r for r in _rows(out)}
    assert rows[str(data / first["file_name"])]["pointing"] == ""
    assert all(r["pointing"] != "" for p, r in rows.items() if p != str(data / first["file_name"]))


def test_a_mask_of_another_size_skips_its_image(invoke, audit_shapes, tmp_path):
    from PIL import Image

    data, _ = audit_shapes
    masks = tmp_path / "masks"
    images = sorted(data.rglob("*.png"))
    for i, p in enumerate(images[:3]):
        (masks / p.parent.name).mkdir(parents=True, exist_ok=True)
        side = 10 if i == 0 else 96
        Image.fromarray(np.full((side, side), 255, np.uint8)).save(masks / p.parent.name / p.name)
    out = tmp_path / "out"
    result = invoke("audit", DEMO_CFG, "--data", data, "--region", masks, "-o", out)
    assert result.exit_code == 1, result.output
    assert [f["path"] for f in manifest(out)["failures"]] == [str(images[0])]
    assert len(_rows(out)) == 11


def test_masks_named_for_no_image_are_one_error(invoke, audit_shapes, tmp_path):
    from PIL import Image

    data, _ = audit_shapes
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(tmp_path / "masks" / "unrelated.png")
    _one_error(invoke("audit", DEMO_CFG, "--data", data, "--region", tmp_path / "masks", "-o", tmp_path / "out"),
               "a mask for none of the 12 images")


@pytest.mark.parametrize("kind", ["other-classes", "other-architecture"])
def test_compare_with_a_checkpoint_of_another_model_is_one_error(invoke, audit_shapes, tmp_path, kind):
    import torch
    import torchvision

    from visctl.demo_models import shapes_classifier

    data, _ = audit_shapes
    model = shapes_classifier(num_classes=7) if kind == "other-classes" else torchvision.models.resnet18(num_classes=4)
    torch.save(model.state_dict(), tmp_path / "other.pth")
    result = invoke("audit", DEMO_CFG, "--data", data, "--compare", tmp_path / "other.pth", "-o", tmp_path / "out")
    _one_error(result, "--compare" if kind == "other-classes" else "other.pth")
    assert not (tmp_path / "out" / "audit.csv").exists()


def test_a_checkpoint_whose_head_has_another_shape_is_one_error(invoke, audit_shapes, tmp_path):
    import torch

    from visctl.demo_models import shapes_classifier

    data, _ = audit_shapes
    torch.save(shapes_classifier(num_classes=7).state_dict(), tmp_path / "seven.pth")
    _one_error(invoke("audit", DEMO_CFG, tmp_path / "seven.pth", "--data", data, "-o", tmp_path / "out"),
               "other shapes", "head.fc")


def test_fail_under_an_unknown_name_is_one_error_before_the_model_loads(invoke, audit_shapes, tmp_path):
    data, _ = audit_shapes
    result = invoke("audit", DEMO_CFG, "--data", data, "--fail-under", "pointng=0.5", "-o", tmp_path / "out")
    _one_error(result, "unknown measure 'pointng'", "pointing")
    assert "checkpoint" not in result.output  # refused before anything loaded
