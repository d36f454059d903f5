"""visctl.audits: the localisation measures against their published definitions on hand-made maps and boxes,
and the COCO / VOC / mask annotations as their formats define them (pycocotools where installed)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from visctl import audits as A
from visctl.errors import ArgumentError, InputError


def _box_mask(shape, x0, y0, x1, y1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# ---- pointing game (Zhang et al. 2018): a hit when the peak is within 15 px of the object -----------------

def test_pointing_is_a_hit_on_the_object_and_within_the_tolerance_only():
    region = _box_mask((100, 100), 40, 40, 60, 60)  # pixels 40..59
    fmap = np.zeros((100, 100), np.float32)
    fmap[50, 50] = 1.0
    assert A.pointing(fmap, region) == 1.0  # on the object
    fmap[:] = 0
    fmap[50, 74] = 1.0  # 15 px right of the last object column (59): exactly the tolerance
    assert A.pointing(fmap, region) == 1.0
    fmap[:] = 0
    fmap[50, 75] = 1.0  # 16 px
    assert A.pointing(fmap, region) == 0.0
    assert A.pointing(fmap, region, tolerance=16) == 1.0
    fmap[:] = 0
    fmap[70, 70] = 1.0  # (11, 11) from the corner (59, 59): 15.56 px, Euclidean: a miss at 15
    assert A.pointing(fmap, region) == 0.0
    assert A.pointing(fmap, region, tolerance=15.6) == 1.0
    assert A.pointing(fmap, region, tolerance=0) == 0.0


def test_a_constant_map_points_nowhere_and_nan_is_no_data():
    region = _box_mask((20, 20), 0, 0, 10, 10)
    assert A.pointing(np.zeros((20, 20)), region) == 0.0
    assert A.pointing(np.full((20, 20), 0.7), region) == 0.0
    fmap = np.full((20, 20), np.nan)
    fmap[15, 15] = 0.2  # the only value the model gave: its peak
    assert A.peak(fmap) == (15, 15) and A.pointing(fmap, region, tolerance=0) == 0.0


# ---- energy-based pointing game (Wang et al. 2020, Score-CAM): sum inside / sum overall ------------------

def test_energy_is_the_share_of_the_maps_sum_inside_the_object():
    region = _box_mask((10, 10), 2, 2, 6, 6)  # 16 pixels
    fmap = np.ones((10, 10))
    fmap[region] = 4.0
    assert A.energy(fmap, region) == pytest.approx(16 * 4 / (84 + 16 * 4))
    assert A.energy(np.zeros((10, 10)), region) == pytest.approx(0.16)  # constant: uniform, the area share
    fmap = np.zeros((10, 10))
    fmap[region] = 1
    assert A.energy(fmap, region) == 1.0
    assert A.energy(fmap, ~region) == 0.0


# ---- top-region IoU, border share, entropy, agreement ----------------------------------------------------

def test_top_region_holds_the_top_percent_and_its_iou():
    fmap = np.arange(100, dtype=np.float64).reshape(10, 10)  # distinct values 0..99
    top = A.top_region(fmap, 20)
    assert top.sum() == 20 and fmap[top].min() == 80
    assert A.top_iou(fmap, top, 20) == 1.0
    assert A.top_iou(fmap, fmap >= 90, 20) == pytest.approx(10 / 20)
    assert A.top_iou(fmap, fmap < 10, 20) == 0.0
    assert A.top_region(np.zeros((4, 4)), 20).all()  # constant: the whole image
    assert A.iou(np.zeros((3, 3)), np.zeros((3, 3))) == 0.0


def test_top_region_is_the_k_largest_on_any_map():
    """The binned search finds the same k-th largest value as a full partition, ties and zeros included."""
    rng = np.random.default_rng(0)
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        a = rng.random((h, w)).astype(np.float32)
        if t % 3 == 0:
            a[a < 0.5] = 0
        if t % 5 == 0:
            a = np.round(a * 4) / 4
        p = float(rng.uniform(0.1, 100))
        k = max(1, math.ceil(a.size * p / 100))
        kth = np.partition(a.ravel(), a.size - k)[a.size - k]
        want = (a >= kth) & (a > 0) if a.max() > 0 else np.ones(a.shape, bool)
        assert (A.top_region(a, p) == want).all(), (t, h, w, p)


def test_border_share_and_entropy():
    band = A.border_mask((100, 200), 0.1)  # 10 px on every edge
    assert band.sum() == 100 * 200 - 80 * 180
    assert A.border(np.ones((100, 200)), 0.1) == pytest.approx(band.mean())
    fmap = np.zeros((100, 200))
    fmap[50, 100] = 1
    assert A.border(fmap) == 0.0 and A.entropy(fmap) == 0.0
    fmap[0, 0] = 1
    assert A.border(fmap) == 0.5
    assert A.entropy(fmap) == pytest.approx(math.log(2) / math.log(100 * 200))
    assert A.entropy(np.ones((10, 10))) == pytest.approx(1.0)
    assert A.entropy(np.zeros((10, 10))) == pytest.approx(1.0)  # constant: uniform


def test_spearman_is_scipys_on_the_resized_maps():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.random((30, 40)), rng.random((30, 40))
    b = 0.5 * a + 0.5 * b
    a[a < 0.3] = 0  # ties, as ReLU'd maps have
    assert A.spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic)
    assert A.spearman(a, a) == pytest.approx(1.0) and A.spearman(a, -a + 1) == pytest.approx(-1.0)
    assert A.spearman(a, np.zeros_like(a)) == 0.0
    big_a, big_b = np.kron(a, np.ones((4, 4))), np.kron(b, np.ones((4, 4)))  # 120 x 160: area-resized to 48 x 64
    small = A._small(big_a, 64)
    assert small.shape == (48, 64)
    assert -1 <= A.spearman(big_a, big_b) <= 1
    agree = A.agreement(a, a)
    assert agree == dict(spearman=pytest.approx(1.0), agreement_iou=1.0)


def test_measure_without_a_region_leaves_the_object_measures_empty():
    found = A.measure(np.ones((8, 8)), None)
    assert found["pointing"] is None and found["energy"] is None and found["iou"] is None
    assert found["border"] is not None and found["entropy"] == pytest.approx(1.0)


# ---- annotations -----------------------------------------------------------------------------------------

def test_a_box_covers_the_pixels_whose_centre_it_holds():
    objs = [A.Obj("cat", (2, 3, 5, 7)), A.Obj("dog", (0, 0, 1, 1))]
    mask = A.object_region(objs, "cat", (10, 10), {"cat", "dog"}, ["cat", "dog"])
    assert mask is not None and mask.sum() == 3 * 4 and mask[3:7, 2:5].all()
    # the file's names are none of the model's: every object counts
    both = A.object_region(objs, "tabby", (10, 10), {"cat", "dog"}, ["tabby"])
    assert both is not None and both.sum() == 13
    assert A.object_region(objs, "bird", (10, 10), {"cat", "dog"}, ["cat", "bird"]) is None


def _coco(tmp_path):
    doc = dict(images=[dict(id=1, file_name="val/a.jpg", width=50, height=40),
                       dict(id=2, file_name="b.jpg", width=50, height=40),
                       dict(id=3, file_name="other/a.jpg", width=50, height=40)],
               annotations=[dict(id=1, image_id=1, category_id=7, bbox=[10, 5, 20, 10], area=200, iscrowd=0,
                                 segmentation=[[10, 5, 30, 5, 30, 15, 10, 15]]),
                            dict(id=2, image_id=2, category_id=8, bbox=[0, 0, 4, 4], area=16, iscrowd=0),
                            dict(id=3, image_id=3, category_id=8, bbox=[1, 1, 2, 2], area=4, iscrowd=0)],
               categories=[dict(id=7, name="cat"), dict(id=8, name="dog")])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_boxes_and_file_names(tmp_path):
    ann = A.read_annotations(_coco(tmp_path))
    assert ann is not None and ann.categories == {"cat", "dog"}
    objs = ann.objects("/data/coco/val/a.jpg")  # two entries are named a.jpg: the longest shared suffix wins
    assert objs == [A.Obj("cat", (10.0, 5.0, 30.0, 15.0), ((10.0, 5.0, 30.0, 5.0, 30.0, 15.0, 10.0, 15.0),))]
    assert ann.objects("/data/other/a.jpg")[0].box == (1.0, 1.0, 3.0, 3.0)
    assert ann.objects("/x/b.jpg")[0].category == "dog"
    assert ann.objects("/x/c.jpg") is None


def test_coco_read_as_pycocotools_reads_it(tmp_path):
    coco_mod = pytest.importorskip("pycocotools.coco", reason="pycocotools is not installed: visctl's own reader "
                                   "is tested above without it")
    path = _coco(tmp_path)
    ref = coco_mod.COCO(str(path))
    ann = A.read_coco(path)
    for img in ref.loadImgs(ref.getImgIds()):
        mine = ann.objects("/r/" + img["file_name"])
        theirs = ref.loadAnns(ref.getAnnIds(imgIds=[img["id"]]))
        assert [o.box for o in mine] == [(a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                          a["bbox"][1] + a["bbox"][3]) for a in theirs]
        assert [o.category for o in mine] == [ref.loadCats(a["category_id"])[0]["name"] for a in theirs]
        for o, a in zip(mine, theirs):
            if o.polygons:  # the polygon's pixels as pycocotools rasterises them, to within its edge rule
                region = A.object_region([o], o.category, (img["height"], img["width"]), set(), None)
                assert abs(int(region.sum()) - int(ref.annToMask(a).sum())) <= 2 * (20 + 10)


def test_voc_boxes_are_one_based_and_inclusive(tmp_path):
    folder = tmp_path / "Annotations"
    folder.mkdir()
    (folder / "000001.xml").write_text(
        "<annotation><filename>000001.jpg</filename><size><width>50</width><height>40</height></size>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>5</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>20</xmin><ymin>10</ymin><xmax>29.5</xmax><ymax>19</ymax></bndbox>"
        "</object></annotation>")
    ann = A.read_annotations(folder)
    objs = ann.objects("/voc/JPEGImages/000001.jpg")
    assert [(o.category, o.box) for o in objs] == [("dog", (0.0, 0.0, 10.0, 5.0)), ("cat", (19.0, 9.0, 29.5, 19.0))]
    dog = A.object_region(objs, "dog", (40, 50), ann.categories, ["cat", "dog"])
    assert dog.sum() == 10 * 5 and dog[0, 0] and dog[4, 9] and not dog[5, 9]  # pixels 1..10 x 1..5, one-based
    assert A.read_annotations(folder / "000001.xml").objects("000001.jpg") == objs


def test_annotation_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        A.read_annotations(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="cannot read the COCO file"):
        A.read_annotations(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError, match="not a COCO instances file"):
        A.read_annotations(tmp_path / "list.json")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(InputError, match="COCO .json or VOC .xml"):
        A.read_annotations(tmp_path / "x.txt")
    with pytest.raises(InputError, match="both give"):
        A.read_annotations(tmp_path / "x.txt", tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        A.read_annotations(None, tmp_path / "x.txt")


def test_mask_files_are_found_beside_or_mirroring_the_images(tmp_path):
    import cv2

    (tmp_path / "masks" / "cat").mkdir(parents=True)
    m = np.zeros((8, 8), np.uint8)
    m[2:4, 2:4] = 255
    cv2.imwrite(str(tmp_path / "masks" / "cat" / "1.png"), m)
    np.save(tmp_path / "masks" / "2.npy", m > 0)
    ann = A.read_annotations(None, tmp_path / "masks")
    root = tmp_path / "data"
    found = ann.mask_file(root / "cat" / "1.jpg", root)
    assert found == tmp_path / "masks" / "cat" / "1.png"
    assert A.mask_region(found, (8, 8), None).sum() == 4
    assert ann.mask_file(root / "dog" / "2.jpg", root) == tmp_path / "masks" / "2.npy"
    assert ann.mask_file(root / "dog" / "3.jpg", root) is None
    with pytest.raises(InputError, match="is 8x8, its image 8x9"):
        A.mask_region(found, (9, 8), None)


# ---- thresholds, sums, the worst images ------------------------------------------------------------------

def test_fail_under_names_and_values():
    assert A.parse_thresholds(["pointing=0.8,energy=0.5", "accuracy=0.9"]) == dict(pointing=0.8, energy=0.5,
                                                                                  accuracy=0.9)
    for bad in ("pointing", "pointy=0.8", "pointing=x", "pointing=nan"):
        with pytest.raises(ArgumentError, match="fail_under="):
            A.parse_thresholds([bad])
    summary = dict(pointing=0.625, accuracy=1.0)
    assert A.failed_thresholds(summary, dict(pointing=0.8, accuracy=0.9)) == ["pointing 0.625 < 0.8"]
    assert A.failed_thresholds(dict(accuracy=1.0), dict(energy=0.5)) == ["energy n/a < 0.5 (no object annotations)"]


def test_exact_sums_do_not_depend_on_the_order():
    values = [random.Random(i).uniform(-1, 1) * 10 ** random.Random(i + 1).randint(-8, 8) for i in range(2000)]
    forward, shuffled = A.ExactSum(), A.ExactSum()
    for v in values:
        forward.add(v)
    order = values[:]
    random.Random(0).shuffle(order)
    half = A.ExactSum()
    for v in order[:1000]:
        shuffled.add(v)
    for v in order[1000:]:
        half.add(v)
    shuffled.merge(half)
    assert forward.value == shuffled.value == math.fsum(values)


def test_worst_keeps_the_lowest_keys_and_draws_only_those():
    drawn = []
    worst = A.Worst(3)
    for i, k in enumerate([5, 1, 4, 1, 9, 0, 7]):
        worst.offer((k, i), dict(i=i), lambda i=i: drawn.append(i) or i)
    assert [w.key for w in worst.kept] == [(0, 5), (1, 1), (1, 3)]
    assert 4 not in drawn and 6 not in drawn  # keys above the kept three: never drawn
    other = A.Worst(3)
    other.merge([A.Kept((2, 10), {}), A.Kept((0, 0), {})])
    assert [w.key for w in other.kept] == [(0, 0), (2, 10)]
