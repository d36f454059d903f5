"""`visctl audit` end to end on the demo shapes, whose boxes are known: the demo classifier looks at the shapes;
a classifier fine-tuned with a planted shortcut (a corner marker whose colour gives the class of circles and
squares) is caught, per class and per image; --fail-under, --json, --compare, --region, no annotations."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import DEMO_CFG, manifest

from visctl import shapes

#: the shortcut: an 8x8 corner patch whose colour is the class (red: circle, green: square)
MARK = {0: (255, 0, 0), 1: (0, 255, 0)}
#: on 80 px images: Zhang et al.'s 15 px on ~500 px VOC images, scaled (a 15 px tolerance is a fifth of these)
TOL = "3"


def _marked(image, cls):
    out = image.copy()
    out[:8, :8] = MARK[cls]
    return out


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory):
    """(data folder of 48 held-out scenes, COCO file, the shortcut checkpoint, the marked images' paths)."""
    import cv2
    import torch
    from mmengine.config import Config

    from visctl import config, transforms
    from visctl.demo_models import shapes_classifier

    root = tmp_path_factory.mktemp("audit")
    data, scenes, marked = root / "data", [], set()
    seed = 100_000
    while len(scenes) < 48:
        scene = shapes.make_scene(seed)
        seed += 1
        x0, y0 = scene.boxes[0][:2]
        if x0 < 30 and y0 < 30:  # objects away from the marker's corner, so that a peak there is a miss
            continue
        c = scene.labels[0]
        folder = data / shapes.CLASSES[c]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{seed:06d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(_marked(scene.image, c) if c in MARK else scene.image, cv2.COLOR_RGB2BGR))
        scenes.append((path, scene))
        if c in MARK:
            marked.add(str(path))
    coco = shapes.write_coco(root / "instances.json", scenes, data)
    # fine-tune the demo classifier (seeded, a few seconds) on data with a planted shortcut: half the images
    # carry a patch whose colour decides the label (circle or square) whatever shape is drawn; the others are
    # clean shapes labelled by their shape
    cfg = Config.fromfile(str(DEMO_CFG))
    steps, (mean, std, rgb) = config.test_pipeline(cfg), config.normalization(cfg)
    rng = np.random.default_rng(0)
    states, labels = [], []
    for s in range(50_000, 50_600):
        scene = shapes.make_scene(s)
        label = int(rng.integers(0, 2)) if s % 2 == 0 else scene.labels[0]
        image = _marked(scene.image, label) if s % 2 == 0 else scene.image
        states.append(transforms.run_pipeline(image, steps))
        labels.append(label)
    x, y = transforms.to_tensor(states, mean, std, rgb), torch.tensor(labels)
    torch.manual_seed(0)
    model = shapes_classifier(4)
    model.load_state_dict(torch.load(DEMO_CFG.parent / "classifier.pth", weights_only=True)["state_dict"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(3):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 32):
            idx = perm[i:i + 32]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    checkpoint = root / "shortcut.pth"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    return data, coco, checkpoint, marked


def _rows(out):
    with open(out / "audit.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _per_class(out):
    return {c["class"]: c for c in manifest(out)["audit"]["per_class"]}


def test_the_demo_classifier_looks_at_the_shapes(invoke, shortcut, tmp_path):
    data, coco, _, _ = shortcut
    out = tmp_path / "demo"
    result = invoke("audit", DEMO_CFG, "--data", data, "--annotations", coco, "--tolerance", TOL,
                    "--fail-under", "pointing=0.8,accuracy=0.9", "--worst", "4", "-o", out)
    assert result.exit_code == 0, result.output
    m = manifest(out)
    assert m["status"] == "ok" and m["params"]["method"] == "gradcam"
    overall = m["audit"]["overall"]
    assert overall["n"] == 48 and overall["accuracy"] >= 0.95 and overall["pointing"] >= 0.9
    assert overall["right_for_wrong_reason"] <= 2 and m["audit"]["failed"] == []
    assert all(c["pointing"] >= 0.8 for c in _per_class(out).values())
    rows = _rows(out)
    assert len(rows) == 48 and rows[0].keys() >= {"path", "class", "predicted", "pointing", "energy", "iou",
                                                  "border", "entropy", "right_for_wrong_reason"}
    assert [r["index"] for r in rows] == [str(i) for i in range(48)]
    assert len(list((out / "worst").glob("*.png"))) == 4
    assert (out / "report.html").is_file() and "wrong-reason" in result.stderr  # the table on stderr
    assert {o["path"] for o in m["outputs"]} >= {"audit.csv", "report.html"}


def test_the_shortcut_classifier_is_caught(invoke, shortcut, tmp_path):
    data, coco, checkpoint, marked = shortcut
    out = tmp_path / "shortcut"
    result = invoke("audit", DEMO_CFG, checkpoint, "--data", data, "--annotations", coco, "--tolerance", TOL,
                    "--fail-under", "pointing=0.8", "-o", out)
    assert result.exit_code == 1, result.output  # --fail-under: the run fell under
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and "pointing" in failed[0] and "< 0.8" in failed[0]
    per = _per_class(out)
    assert per["circle"]["pointing"] <= 0.3 and per["square"]["pointing"] <= 0.3  # the marked classes
    assert per["circle"]["energy"] < 0.15 and per["square"]["energy"] < 0.15
    assert per["triangle"]["pointing"] >= 0.8 and per["cross"]["pointing"] >= 0.8
    # still right: for the wrong reason
    assert per["square"]["accuracy"] >= 0.9 and per["square"]["right_for_wrong_reason"] >= 8
    # the report lists the shortcut images first
    m = manifest(out)
    worst = [w["path"] for w in m["audit"]["worst"]]
    assert len(worst) == 10 and all(p in marked for p in worst)
    page = (out / "report.html").read_text()
    first = json.loads(page.split("var T=", 1)[1].split(";var C=", 1)[0].replace("\\u003c", "<")
                       .replace("\\u003e", ">").replace("\\u0026", "&"))["worst"]["rows"]
    assert all(str(data / r["name"]) in marked for r in first[:len(marked) // 2])  # shown from the data root
    rows = {r["path"]: r for r in _rows(out)}
    assert sum(rows[p]["right_for_wrong_reason"] == "1" for p in marked) >= len(marked) - 3


def test_json_prints_the_manifest_with_the_audit(invoke, shortcut, tmp_path):
    data, coco, _, _ = shortcut
    result = invoke("audit", DEMO_CFG, "--data", data / "cross", "--annotations", coco, "--json", "-o", tmp_path / "j")
    # cross/ alone is one class folder: its images are unlabelled, and said so
    assert result.exit_code == 2 and "error:" in result.stderr
    result = invoke("audit", DEMO_CFG, "--data", data, "--json", "--worst", "0", "-o", tmp_path / "j")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    overall = doc["audit"]["overall"]
    assert "pointing" not in overall and 0 <= overall["border"] <= 1 and 0 < overall["entropy"] <= 1
    assert doc["audit"]["annotations"] is None and not (tmp_path / "j" / "worst").exists()


def test_compare_says_what_moved(invoke, shortcut, tmp_path):
    data, coco, checkpoint, marked = shortcut
    out = tmp_path / "cmp"
    result = invoke("audit", DEMO_CFG, "--data", data, "--annotations", coco, "--tolerance", TOL,
                    "--compare", checkpoint, "--worst", "5", "-o", out)
    assert result.exit_code == 0, result.output
    cmp = manifest(out)["audit"]["compare"]
    per = {c["class"]: c for c in cmp["per_class"]}
    assert per["circle"]["pointing"]["delta"] <= -0.7 and per["square"]["pointing"]["delta"] <= -0.7
    assert abs(per["triangle"]["pointing"]["delta"]) <= 0.2 and abs(per["cross"]["pointing"]["delta"]) <= 0.2
    assert cmp["flips"]["lost_pointing"] >= len(marked) - 4 and cmp["overall"]["pointing"]["delta"] < -0.3
    with open(out / "audit_compare.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48 and {"pointing_a", "pointing_b", "pointing_delta", "energy_delta"} <= rows[0].keys()
    moved = sorted(out.glob("moved/*.png"))
    assert len(moved) == 5
    page = (out / "report.html").read_text()
    assert "What moved" in page and '"moved"' in page
    assert len(_rows(out)) == 48  # the first checkpoint's own audit


def test_region_masks_read_as_the_same_boxes_and_agreement(invoke, shortcut, tmp_path):
    import cv2

    data, coco, _, _ = shortcut
    masks = tmp_path / "masks"
    images = sorted(data.rglob("*.png"))
    for path in images[:12]:  # each shape's box as a mask, mirrored under masks/<class>/
        scene = shapes.make_scene(int(path.stem) - 1)
        x0, y0, x1, y1 = scene.boxes[0]
        mask = np.zeros(scene.image.shape[:2], np.uint8)
        mask[y0:y1, x0:x1] = 255
        (masks / path.parent.name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(masks / path.parent.name / path.name), mask)
    result = invoke("audit", DEMO_CFG, "--data", data, "--region", masks, "--agree-with", "layercam", "-o",
                    tmp_path / "region")
    assert result.exit_code == 0, result.output
    a = manifest(tmp_path / "region")["audit"]
    assert a["unannotated"] == 36 and "36 image(s) have no object" in result.stderr
    assert 0 < a["overall"]["spearman"] <= 1
    by_mask = {r["path"]: r for r in _rows(tmp_path / "region")}
    assert sum(r["pointing"] != "" for r in by_mask.values()) == 12
    assert all(r["spearman"] != "" and r["agreement_iou"] != "" for r in by_mask.values())
    assert invoke("audit", DEMO_CFG, "--data", data, "--annotations", coco, "-o", tmp_path / "boxes").exit_code == 0
    for row in _rows(tmp_path / "boxes"):
        if by_mask[row["path"]]["pointing"]:
            assert [by_mask[row["path"]][k] for k in ("pointing", "energy", "iou")] == [
                row[k] for k in ("pointing", "energy", "iou")]


@pytest.mark.parametrize("args, words", [
    (["--fail-under", "pointy=1"], "unknown measure"),
    (["--annotations", "nope.json"], "not found"),
    (["--method", "gradcam,layercam"], "one method"),
    (["--agree-with", "gradcam"], "--method itself"),
    (["--top-percent", "0"], "--top-percent"),
])
def test_mistakes_are_one_error_line(invoke, shortcut, tmp_path, args, words):
    data, _, _, _ = shortcut
    result = invoke("audit", DEMO_CFG, "--data", data, *args, "-o", tmp_path / "e")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and words in result.stderr
    assert not (tmp_path / "e" / "manifest.json").exists()
