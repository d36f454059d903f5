"""Detection: the demo detector, `visctl boxam` and `visctl slice`, merging and tiling."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, manifest

from visctl import detection
from visctl.choices import Merge
from visctl.detection import Detections
from visctl.shapes import make_scene

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
HELD = range(200_000, 200_100)


def _scene(seed):
    return make_scene(seed, 128, n_objects=1 + seed % 5, min_side=10, max_side=36)


@pytest.fixture(scope="module")
def det_model():
    from mmengine.config import Config

    from visctl.checkpoints import load_model

    model, _ = load_model(Config.fromfile(str(DET_CFG)), None)
    return model


def _detect(model, images):
    from mmengine.config import Config

    from visctl import config, transforms

    mean, std, rgb = config.normalization(Config.fromfile(str(DET_CFG)))
    batch = transforms.to_tensor([transforms.ImageState(img=i) for i in images], mean, std, rgb)
    return [detection.to_original(o, transforms.ImageState(img=i)) for o, i in zip(detection.detect(model, batch),
                                                                                    images)]


def test_demo_detector_map50(det_model):
    scenes = [_scene(s) for s in HELD]
    preds = _detect(det_model, [s.image for s in scenes])
    gts = [(np.array(s.boxes, np.float32), np.array(s.labels)) for s in scenes]
    m_ap, aps = detection.average_precision(preds, gts, 4)
    assert m_ap >= 0.8, (m_ap, aps)


def test_merge_methods_are_class_aware():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    dets = Detections(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.array([0, 0, 1, 0]))
    for m in Merge:
        out = detection.merge(dets, m, 0.5)
        assert len(out) == 3, m  # the two overlapping class-0 boxes become one; class 1 stays apart
    nmm = detection.merge(dets, Merge.nmm, 0.5)
    assert nmm.boxes[0].tolist() == [0, 0, 11, 11]
    wbf = detection.merge(dets, Merge.wbf, 0.5)
    assert wbf.boxes[0][0] == pytest.approx(0.8 / 1.7)


def test_tiles_cover_the_image_and_stay_inside():
    grid = detection.tiles(300, 500, 128, 0.25)
    assert all(x1 - x0 == 128 and y1 - y0 == 128 for x0, y0, x1, y1 in grid)
    assert max(x1 for _, _, x1, _ in grid) == 500 and max(y1 for _, _, _, y1 in grid) == 300
    assert detection.tiles(50, 60, 128, 0.25) == [(0, 0, 60, 50)]


def _text_box(drawn):
    """The bounding box (x0, y0, x1, y1) of a label's text: white on the red label fill."""
    ys, xs = np.nonzero((drawn > 200).all(-1))
    return xs.min(), ys.min(), xs.max(), ys.max()


@pytest.mark.parametrize("box", [(370, 60, 399, 120), (380, 0, 399, 30), (395, 290, 399, 299)])
def test_box_labels_stay_inside_the_image(box):
    """A box at the right (and top, and bottom-right) edge: its label moves left/down, fully drawn inside."""
    from visctl import render

    kw = dict(class_names=["a rather long class name"], colors=[(1.0, 0.0, 0.0)], thickness=1)
    # the same label (same font: it scales with the long side, 0.35 up to 700 px) away from every edge
    wide = render.draw_boxes(np.zeros((300, 700, 3), np.uint8), [(300, 150, 360, 200)], [0], [0.91], **kw)
    at_edge = render.draw_boxes(np.zeros((300, 400, 3), np.uint8), [box], [0], [0.91], **kw)
    wx0, wy0, wx1, wy1 = _text_box(wide)
    assert wx1 - wx0 > 400 - box[0]  # the label is wider than the room right of the box: it would be cut
    # every text pixel is drawn at the edge too (none cut off), in a text box of the same size
    assert ((at_edge > 200).all(-1)).sum() == ((wide > 200).all(-1)).sum()
    x0, y0, x1, y1 = _text_box(at_edge)
    assert (x1 - x0, y1 - y0) == (wx1 - wx0, wy1 - wy0)
    # the label's fill surrounds the text on every side, inside the image
    assert x0 >= 1 and y0 >= 1 and x1 <= 398 and y1 <= 298
    assert (at_edge[y0 - 1:y1 + 2, x0 - 1:x1 + 2, 0] > 200).all()


def test_boxam_map_of_each_box_peaks_inside_it(invoke, tmp_path):
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    scenes = {}
    for s in range(200_000, 200_020):
        scene = _scene(s)
        cv2.imwrite(str(folder / f"{s}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        scenes[str(folder / f"{s}.png")] = scene
    result = invoke("boxam", folder, DET_CFG, "--per-box", "--save-raw", "-o", tmp_path / "o")  # layercam
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "o")
    hits = total = 0
    for out in m["outputs"]:
        if out["kind"] != "array":
            continue
        fmap = np.load(tmp_path / "o" / out["path"])
        x0, y0, x1, y1 = out["box"]
        y, x = np.unravel_index(fmap.argmax(), fmap.shape)
        total += 1
        hits += x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1
    assert total >= 40 and hits / total >= 0.85, (hits, total)


def test_boxam_norm_in_bbox_is_zero_outside(invoke, tmp_path):
    import cv2

    scene = _scene(200_003)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    result = invoke("boxam", path, DET_CFG, "--norm-in-bbox", "--save-raw", "--method", "eigencam", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    m = manifest(tmp_path / "o")
    fmap = np.load(tmp_path / "o" / next(o["path"] for o in m["outputs"] if o["kind"] == "array"))
    inside = np.zeros(fmap.shape, bool)
    for b in m["inputs"][0]["boxes"]:
        x0, y0, x1, y1 = b["box"]  # rounded to 0.1 px in the manifest: widen by that much
        inside[max(0, int(np.floor(y0 - 0.05))):int(np.ceil(y1 + 0.05)),
               max(0, int(np.floor(x0 - 0.05))):int(np.ceil(x1 + 0.05))] = True
    assert inside.any() and fmap[~inside].max() == 0 and fmap[inside].max() == pytest.approx(1.0)


def test_boxam_errors(invoke, tmp_path):
    import cv2

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), _scene(200_001).image)
    for args, needle in ((["--method", "scorecam"], "scorecam"), (["--target-layers", "head.nope"], "no layer"),
                         (["--score-thr", "1.5"], "--score-thr 1.5 is out of range")):
        result = invoke("boxam", path, DET_CFG, *args, "-o", tmp_path / "o")
        assert result.exit_code == 2 and needle in result.output, (args, result.output)


def test_boxam_on_torchvision_detector_dict_layer_is_explained(invoke, tmp_path):
    import cv2

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), _scene(200_001).image)
    result = invoke("boxam", path, "fasterrcnn_mobilenet_v3_large_fpn", "--cfg-options", "model.num_classes=5",
                    "model.min_size=128", "model.max_size=128", "--target-layers", "backbone", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "tensor-valued" in result.stderr
    result = invoke("boxam", path, "fasterrcnn_mobilenet_v3_large_fpn", "--cfg-options", "model.num_classes=5",
                    "model.min_size=128", "model.max_size=128", "--score-thr", "0", "--method", "eigencam",
                    "-o", tmp_path / "o2")
    assert result.exit_code == 0, result.output
    assert "default target layer: backbone.fpn" in result.stderr


def test_slice_beats_the_whole_image_and_merges_border_objects(invoke, tmp_path):
    import cv2

    from visctl.shapes import draw_shape

    scene = make_scene(7, 1024, n_objects=40, min_side=12, max_side=24)
    img = scene.image
    # an object across the border of the first two tiles (tiles of 128 with overlap 0.25 start at 0 and 96)
    draw_shape(img, 1, (86, 300, 108, 322), (250, 250, 250))
    boxes = scene.boxes + [(86, 300, 108, 322)]
    labels = scene.labels + [1]
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = tmp_path / "o"
    result = invoke("slice", path, DET_CFG, "--patch-size", "128", "--debug", "-o", out)
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    preds = [Detections(np.array([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2],
                                   r["bbox"][1] + r["bbox"][3]] for r in res], np.float32),
                        np.array([r["score"] for r in res], np.float32), np.array([r["category_id"] for r in res]))]
    gts = [(np.array(boxes, np.float32), np.array(labels))]
    sliced = detection.recall(preds, gts)
    assert sliced >= 0.9, sliced
    border = [r for r in res if detection.box_iou(np.array([[86, 300, 108, 322]], np.float32), np.array(
        [[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]], np.float32))[0, 0] > 0.3]
    assert len(border) == 1
    assert len([o for o in manifest(out)["outputs"] if o["kind"] == "image"]) == 2  # annotated + debug
    # the whole image scaled down to one tile loses the small shapes
    whole = invoke("slice", path, DET_CFG, "--patch-size", "1024", "--full-image", "-o", tmp_path / "w",
                   "--cfg-options", "visctl.patch_size=1024")
    assert whole.exit_code == 0
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(path)), (128, 128), interpolation=cv2.INTER_AREA))
    r2 = invoke("slice", small, DET_CFG, "--patch-size", "128", "-o", tmp_path / "s")
    res2 = json.loads((tmp_path / "s" / "results.json").read_text())
    preds2 = [Detections(np.array([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2],
                                    r["bbox"][1] + r["bbox"][3]] for r in res2], np.float32).reshape(-1, 4) * 8,
                         np.array([r["score"] for r in res2], np.float32), np.array([r["category_id"] for r in res2]))]
    assert r2.exit_code == 0 and detection.recall(preds2, gts) < sliced


def test_adapter_example_wraps_another_family(invoke, tmp_path, monkeypatch):
    import cv2
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    ckpt = torch.load(ROOT / "examples" / "demo_detector" / "detector.pth", weights_only=False)
    torch.save({f"detector.net.{k}": v for k, v in ckpt["state_dict"].items()}, tmp_path / "adapted.pth")
    cfg = tmp_path / "cfg.py"
    cfg.write_text("model = dict(type='detector_adapter:build', num_classes=4)\n"
                   f"_base_ = ['{DET_CFG}']\nload_from = None\nvisctl = dict(task='detection', target_layers=None)\n")
    path = tmp_path / "a.png"
    scene = _scene(200_002)
    cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    result = invoke("slice", path, cfg, tmp_path / "adapted.pth", "--patch-size", "128", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert len(res) >= len(scene.boxes) - 1
    sys.modules.pop("detector_adapter", None)


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                                  "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn",
                                  "ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "maskrcnn_resnet50_fpn"])
def test_torchvision_detectors_follow_the_protocol(name, monkeypatch):
    import torch

    from visctl import building

    def no_download(*a, **k):
        raise AssertionError("download attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    kwargs = {} if name.startswith("ssd") else dict(min_size=96, max_size=96)
    model = building.build_model(dict(type=name, num_classes=5, **kwargs)).eval()
    assert detection.is_torchvision_detector(model)
    torch.manual_seed(0)
    out = detection.detect(model, torch.rand(2, 3, 96, 96))
    assert len(out) == 2 and all(set(o) == {"boxes", "scores", "labels"} for o in out)


def test_boxam_panel_size(invoke, tmp_path):
    import cv2

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), cv2.cvtColor(_scene(200_003).image, cv2.COLOR_RGB2BGR))  # 128 px
    for extra, side in (((), 160), (("--panel-size", "300"), 300)):
        out = tmp_path / str(side)
        result = invoke("boxam", path, DET_CFG, "--method", "eigencam", "-o", out, *extra)
        assert result.exit_code == 0, result.output
        m = manifest(out)
        assert m["params"]["panel_size"] == side and m["outputs"][0]["panel_size"] == side
        assert cv2.imread(str(out / m["outputs"][0]["path"])).shape[1] == side  # one panel for all boxes


def _outputs(seed: int, n: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 80
    wh = 8 + torch.rand(n, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + wh], 1).requires_grad_(True)
    scores = torch.rand(n, generator=g).requires_grad_(True)
    return dict(boxes=boxes, scores=scores, labels=torch.randint(0, 3, (n,), generator=g))


@pytest.mark.parametrize("seed", range(6))
def test_box_score_target_equals_grad_cams_value_and_gradients(seed):
    """detection.BoxScoreTarget against grad-cam's FasterRCNNBoxScoreTarget on the same outputs: kept boxes that
    are the outputs themselves, jittered, relabelled, far away, and two kept boxes on one output box."""
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from visctl.detection import BoxScoreTarget

    ref_out, out = _outputs(seed, 7), _outputs(seed, 7)
    g = torch.Generator().manual_seed(100 + seed)
    kept_boxes = ref_out["boxes"].detach()[[0, 0, 2, 3, 5]] + torch.randn(5, 4, generator=g) * 3
    kept_boxes[3] += 200  # matches nothing
    kept_labels = ref_out["labels"][[0, 0, 2, 3, 5]].clone()
    kept_labels[2] = (kept_labels[2] + 1) % 3  # the best box has another label
    want = FasterRCNNBoxScoreTarget(labels=kept_labels, bounding_boxes=kept_boxes)(ref_out)
    got = BoxScoreTarget(labels=kept_labels, bounding_boxes=kept_boxes)(out)
    assert got.shape == want.shape == (1,)
    assert float(want.detach()) > 0  # some boxes count, and some do not (relabelled, far away)
    torch.testing.assert_close(got, want)
    want.sum().backward()
    got.sum().backward()
    # one IoU matrix instead of a row per box: the same terms, summed in another order (differences ~1e-9)
    torch.testing.assert_close(out["boxes"].grad, ref_out["boxes"].grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["scores"].grad, ref_out["scores"].grad, rtol=0, atol=0)
    assert out["scores"].grad.count_nonzero() >= 1 and out["boxes"].grad.count_nonzero() >= 4


def test_box_score_target_without_boxes_or_matches_is_zero_as_grad_cams():
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from visctl.detection import BoxScoreTarget

    empty = dict(boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))
    far = torch.tensor([[500.0, 500.0, 520.0, 520.0]])
    for outputs in (empty, _outputs(0, 4)):
        for target in (FasterRCNNBoxScoreTarget, BoxScoreTarget):
            value = target(labels=torch.tensor([1]), bounding_boxes=far)(outputs)
            assert value.shape == (1,) and float(value.detach()) == 0.0
            # an image with no kept box (what boxam passes then)
            value = target(labels=torch.zeros(0, dtype=torch.long), bounding_boxes=torch.zeros(0, 4))(outputs)
            assert value.shape == (1,) and float(value.detach()) == 0.0
    with pytest.raises(ValueError, match="one label per box"):
        BoxScoreTarget(labels=torch.tensor([1]), bounding_boxes=torch.zeros(2, 4))(_outputs(0, 4))


def test_box_score_target_takes_the_first_of_equal_ious_as_grad_cam():
    """Two identical output boxes with other labels: grad-cam's argmax takes the first, so the kept label must
    be the first box's to count; the same here."""
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from visctl.detection import BoxScoreTarget

    box = [10.0, 10.0, 40.0, 40.0]
    outputs = dict(boxes=torch.tensor([box, box]), scores=torch.tensor([0.6, 0.9]), labels=torch.tensor([2, 1]))
    for label, want in ((2, 1.6), (1, 0.0)):
        kept = dict(labels=torch.tensor([label]), bounding_boxes=torch.tensor([box]))
        ref, got = FasterRCNNBoxScoreTarget(**kept)(outputs), BoxScoreTarget(**kept)(outputs)
        assert float(ref) == pytest.approx(want) and float(got) == pytest.approx(want)


def test_box_colours_are_matplotlibs_tab10_and_tab20():
    """render.class_colors writes tab10/tab20 out (no matplotlib import to draw boxes): the very same floats."""
    import matplotlib

    from visctl import render

    for n, name in ((4, "tab10"), (10, "tab10"), (17, "tab20"), (20, "tab20")):
        assert render.class_colors(n) == [tuple(float(c) for c in matplotlib.colormaps[name](i)[:3]) for i in range(n)]
    assert len(set(render.class_colors(30))) == 30


def test_an_mmdet_detector_module_without_its_config_is_one_clear_error():
    """An mmdet detector passed as an nn.Module needs its config (its test pipeline); init_detector's keeps it."""
    import numpy as np
    from torch import nn

    import visctl
    from visctl.errors import ModelError

    base = type("BaseDetector", (nn.Module,), {"__module__": "mmdet.models.detectors.base"})
    detector = type("SingleStageDetector", (base,), {"__module__": "mmdet.models.detectors.single_stage",
                                                      "forward": lambda self, x: x})
    with pytest.raises(ModelError, match="needs its config") as err:
        visctl.slice(np.zeros((32, 32, 3), np.uint8), detector(), options=visctl.RunOptions(device="cpu"))
    assert "init_detector" in (err.value.hint or "")


def test_draw_boxes_skips_non_finite_boxes():
    """An untrained head's exp() overflows to inf: such a box is not drawn, the others are."""
    from visctl import render

    img = np.zeros((40, 40, 3), np.uint8)
    boxes = np.array([[0, -np.inf, np.inf, 10], [5, 5, 30, 30], [np.nan, 0, 1, 1], [-5e9, 2, 5e9, 3]], np.float32)
    out = render.draw_boxes(img, boxes, np.zeros(4, np.int64), np.ones(4, np.float32), ["thing"])
    assert out.shape == img.shape and out[5:31, 5].any() and not out[20, 20].any()


def test_tiles_step_as_sahi_truncates_the_overlap():
    """sahi's get_slice_bboxes (sahi/slicing.py: ``x_overlap = int(overlap_width_ratio * slice_width)``, next tile
    at ``x_max - x_overlap``) truncates the overlap: 333 px at 0.5 overlaps 166 px and steps 167, which gives
    sahi's 391 tiles on a 4000x3000 image (rounding the step to 166 gave 432). tests/openmmlab compares the grid
    with sahi itself on 2,000 cases."""
    from visctl import detection

    grid = detection.tiles(3000, 4000, 333, 0.5)
    assert len(grid) == 391
    xs = sorted({x0 for x0, _, _, _ in grid})
    assert xs[:3] == [0, 167, 334] and xs[-1] == 4000 - 333
    assert all(x1 - x0 == 333 and y1 - y0 == 333 for x0, y0, x1, y1 in grid)


def test_box_target_of_zero_area_boxes_is_finite_and_so_is_its_gradient():
    """A random-weight head can keep boxes of zero area ([92.9, 49.5, 92.9, 49.5]): torchvision's box_iou gives
    0/0 = NaN for two of them, which made grad-cam's box score, every gradient and the whole map NaN. The IoU is
    torchvision's elsewhere, bit for bit."""
    import torch
    from torchvision.ops import box_iou

    from visctl import detection

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(7, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(7, 2, generator=g) * 30 + 1], 1)
    assert torch.equal(detection._iou_matrix(boxes[:3], boxes), box_iou(boxes[:3], boxes))
    found = torch.tensor([[92.9, 49.5, 92.9, 49.5], [10.0, 10.0, 10.0, 10.0], [20.0, 20.0, 60.0, 50.0]],
                         requires_grad=True)
    scores = torch.tensor([0.9, 0.8, 0.7], requires_grad=True)
    out = detection.BoxScoreTarget(labels=[1, 2, 3], bounding_boxes=found.detach().clone())(
        dict(boxes=found, scores=scores, labels=torch.tensor([1, 2, 3])))
    assert torch.isclose(out, torch.tensor([1.0 + 0.7])).all()  # the real box counts; the points add nothing
    out.sum().backward()
    assert torch.isfinite(found.grad).all() and torch.isfinite(scores.grad).all()
    assert scores.grad.tolist() == [0.0, 0.0, 1.0]
