"""``boxam``, ``slice`` and ``featmap`` on mmdet 3.x and mmyolo 0.6 detectors from their own configs.

References, run on the same image and Runner-style checkpoint: ``mmdet.apis.init_detector`` +
``inference_detector`` (the boxes), mmyolo's ``mmyolo/utils/boxam_utils.py`` along boxam_vis_demo's own path
(``BoxAMDetectorWrapper``, its GradCAM with grad-cam 1.4.8, ``DetBoxScoreTarget`` on the loss), and the detector's
own ``extract_feat`` on the package's pipeline and data preprocessor (feature maps). Images are small and the
test pipelines' scales are lowered by config options (the same options on both sides) to keep the stage short.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from mmstack import mm_config, need, need_mmcv_ops, package_configs, runner_checkpoint

import visctl

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning",
                                        "ignore::ImportWarning", "ignore::RuntimeWarning")

SMALL = "(320,320)"
# id -> (package, config, cfg options): random weights score low, so every box is kept (score_thr=0)
DETECTORS = {
    "yolov5_s": ("mmyolo", "yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py",
                 ("model.test_cfg.score_thr=0.0", f"test_dataloader.dataset.pipeline.1.scale={SMALL}",
                  f"test_dataloader.dataset.pipeline.2.scale={SMALL}")),
    "yolox_s": ("mmyolo", "yolox/yolox_s_fast_8xb8-300e_coco.py",
                ("model.test_cfg.score_thr=0.0", f"test_dataloader.dataset.pipeline.1.scale={SMALL}")),
    "rtmdet_tiny": ("mmyolo", "rtmdet/rtmdet_tiny_syncbn_fast_8xb32-300e_coco.py",
                    ("model.test_cfg.score_thr=0.0", f"test_dataloader.dataset.pipeline.1.scale={SMALL}",
                     f"test_dataloader.dataset.pipeline.2.scale={SMALL}")),
    "mmdet_rtmdet_tiny": ("mmdet", "rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
                          ("model.test_cfg.score_thr=0.0", f"test_dataloader.dataset.pipeline.1.scale={SMALL}",
                           f"test_dataloader.dataset.pipeline.2.size={SMALL}")),
    "mmdet_yolox_s": ("mmdet", "yolox/yolox_s_8xb8-300e_coco.py",
                      ("model.test_cfg.score_thr=0.0", f"test_dataloader.dataset.pipeline.1.scale={SMALL}")),
    "retinanet_r50": ("mmdet", "retinanet/retinanet_r50_fpn_1x_coco.py",
                      ("model.test_cfg.score_thr=0.0", f"test_dataloader.dataset.pipeline.1.scale={SMALL}")),
    "faster_rcnn_r50": ("mmdet", "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
                        ("model.test_cfg.rcnn.score_thr=0.0", f"test_dataloader.dataset.pipeline.1.scale={SMALL}")),
    # LoadImageFromFile(to_float32=True), RandomCenterCropPad's test mode: the original placed at `border` inside
    # a padded image, no resize
    "centernet_r18": ("mmdet", "centernet/centernet_r18_8xb16-crop512-140e_coco.py", ()),
}


def _reference_detector(package: str, cfg, checkpoint: Path):
    """``mmdet.apis.init_detector`` with the checkpoint's weights (its loader's weights-only torch.load refuses
    the Runner's HistoryBuffer, so the state dict is loaded beside it)."""
    import torch
    from mmdet.apis import init_detector

    if package == "mmyolo":
        from mmyolo.utils import register_all_modules

        register_all_modules()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = init_detector(cfg, None, device="cpu")
    model.load_state_dict(torch.load(str(checkpoint), weights_only=False)["state_dict"])
    return model.eval()


@pytest.fixture(scope="module")
def small_photo(mm_tmp) -> Path:
    """A 240x320 photo-like picture (landscape: the letterbox pads top and bottom)."""
    import cv2

    yy, xx = np.mgrid[0:240, 0:320]
    img = np.stack([80 + 60 * np.sin(xx / 50.0), 90 + 40 * np.cos(yy / 40.0), 120 + 0 * xx], -1)
    cv2.circle(img, (200, 100), 50, (20, 200, 240), -1)
    cv2.rectangle(img, (40, 140), (120, 220), (200, 40, 40), -1)
    path = mm_tmp / "small_photo.jpg"
    cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))
    return path


@functools.cache
def _checkpoint(key: str, folder: str) -> tuple[Path, Path, tuple[str, ...]]:
    package, rel, options = DETECTORS[key]
    cfg_path = package_configs(package) / rel
    return cfg_path, runner_checkpoint(cfg_path, Path(folder), options), options


def _sorted(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # by score (both sides compute the same float32 scores), ties by the corners to 0.01 px
    key = np.round(np.nan_to_num(boxes.astype(np.float64), posinf=1e9, neginf=-1e9), 2)
    order = np.lexsort((key[:, 3], key[:, 2], key[:, 1], key[:, 0], -scores.astype(np.float64)))
    return boxes[order], scores[order]


@pytest.mark.parametrize("key", list(DETECTORS))
def test_boxes_equal_inference_detector(key, small_photo, mm_tmp):
    package = DETECTORS[key][0]
    need(package)
    need_mmcv_ops()
    cfg_path, ckpt, options = _checkpoint(key, str(mm_tmp))
    from mmdet.apis import inference_detector

    model = _reference_detector(package, mm_config(cfg_path, options), ckpt)
    ref = inference_detector(model, str(small_photo)).pred_instances
    ref_boxes = ref.bboxes.numpy()
    # a random-weight head may decode x1 < x0: visctl draws boxes corner-ordered
    ref_boxes = np.concatenate([np.minimum(ref_boxes[:, :2], ref_boxes[:, 2:]),
                                np.maximum(ref_boxes[:, :2], ref_boxes[:, 2:])], 1)
    # one tile as large as the image, nothing merged away: the detector's boxes as visctl reports them
    res = visctl.slice(small_photo, cfg_path, str(ckpt), patch_size=400, score_thr=0.0, merge_metric="iou",
                              merge_iou_thr=1.0, options=visctl.RunOptions(device="cpu", threads=1,
                                                                         cfg_options=list(options)))
    got = res.images[0]
    assert len(got.tiles) == 1 and len(ref_boxes) >= 20 and len(got.boxes) == len(ref_boxes)
    want_b, want_s = _sorted(ref_boxes, ref.scores.numpy())
    got_b, got_s = _sorted(np.asarray(got.boxes), np.asarray(got.scores))
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    np.testing.assert_allclose(got_b, want_b, atol=1e-3)
    # COCO's names from the config's CocoDataset, in the records the CLI writes
    assert res.results[0]["category"] in visctl_coco_names()
    if key == "yolov5_s":  # the Python API on init_detector's model itself (its .cfg gives the pipeline)
        again = visctl.slice(small_photo, model, patch_size=400, score_thr=0.0, merge_metric="iou",
                                    merge_iou_thr=1.0, options=visctl.RunOptions(device="cpu", threads=1))
        np.testing.assert_allclose(_sorted(np.asarray(again.images[0].boxes), np.asarray(again.images[0].scores))[0],
                                   got_b, atol=1e-5)


def test_batched_images_of_different_sizes_keep_their_own_geometry(small_photo, mm_tmp):
    """Three pictures of different shapes letterboxed into one batch: each image's boxes are its own
    inference_detector's (each carries its own scale_factor and pad_param), each map its own size."""
    need("mmyolo")
    need("pytorch_grad_cam")
    need_mmcv_ops()
    import cv2
    from mmdet.apis import inference_detector

    cfg_path, ckpt, options = _checkpoint("yolov5_s", str(mm_tmp))
    img = cv2.imread(str(small_photo))
    paths = [small_photo, mm_tmp / "tall.jpg", mm_tmp / "wide.jpg"]
    cv2.imwrite(str(paths[1]), cv2.resize(img, (200, 300)))
    cv2.imwrite(str(paths[2]), cv2.resize(img, (400, 150)))
    res = visctl.boxam(paths, cfg_path, str(ckpt), method="eigencam", topk=5, score_thr=0.0, batch_size=3,
                       options=visctl.RunOptions(device="cpu", threads=1, cfg_options=list(options)))
    model = _reference_detector("mmyolo", mm_config(cfg_path, options), ckpt)
    for path, got in zip(paths, res.images):
        ref = inference_detector(model, str(path)).pred_instances
        np.testing.assert_allclose(got.boxes, ref.bboxes.numpy()[:5], atol=1e-3)
        np.testing.assert_allclose(got.scores, ref.scores.numpy()[:5], atol=1e-6)
        assert got.maps[0].shape == cv2.imread(str(path)).shape[:2]


def visctl_coco_names() -> tuple[str, ...]:
    from mmdet.datasets import CocoDataset

    return tuple(CocoDataset.METAINFO["classes"])


def _carry_back(amap: np.ndarray, meta: dict, ori_hw: tuple[int, int]) -> np.ndarray:
    """A map over the network input -> the original image, from what the package's pipeline recorded:
    original pixel centre (x + 0.5) -> input coordinate (x + 0.5) * scale_factor + pad left/top -> map index
    (the map covers the input's ``img_shape``, which is the padded input: the letterbox pads inside it)."""
    import cv2

    sx, sy = meta["scale_factor"]
    pad = meta.get("pad_param")
    left, top = (pad[2], pad[0]) if pad is not None else (0.0, 0.0)
    kx, ky = amap.shape[1] / meta["img_shape"][1], amap.shape[0] / meta["img_shape"][0]
    m = np.array([[sx * kx, 0, (0.5 * sx + left) * kx - 0.5], [0, sy * ky, (0.5 * sy + top) * ky - 0.5]], np.float64)
    return cv2.warpAffine(amap.astype(np.float32), m, (ori_hw[1], ori_hw[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def _mmyolo_boxam(cfg, checkpoint: Path, image: Path, layer: str, thr: float, topk: int, tmp: Path,
                  method: str = "gradcam", ignore: tuple[str, ...] = ("loss_obj",)):
    """mmyolo's boxam_vis_demo for one image and ``method`` (its GradCAM, GradCAM++, or grad-cam's EigenCAM):
    the map at the network input's
    size (a blank of that size stands for the image the demo passes only for its size), the boxes and the
    pipeline's meta."""
    import cv2
    import torch
    from mmengine import MessageHub
    from mmyolo.utils import register_all_modules
    from mmyolo.utils.boxam_utils import (
        BoxAMDetectorVisualizer,
        BoxAMDetectorWrapper,
        DetAblationLayer,
        DetBoxScoreTarget,
        GradCAM,
        GradCAMPlusPlus,
        reshape_transform,
    )

    register_all_modules()
    MessageHub.get_current_instance().runtime_info["epoch"] = 0
    plain = tmp / f"{checkpoint.stem}_weights.pth"  # init_detector's weights-only load: the weights alone
    torch.save({"state_dict": torch.load(str(checkpoint), weights_only=False)["state_dict"], "meta": {}}, plain)
    wrapper = BoxAMDetectorWrapper(cfg, str(plain), thr, device="cpu")
    layers = [eval(f"wrapper.detector.{layer}")]  # as the demo resolves --target-layers
    from pytorch_grad_cam import EigenCAM

    # the demo's GRAD_BASED_METHOD_MAP and GRAD_FREE_METHOD_MAP
    cam_class = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}[method]
    grad = method != "eigencam"
    vis = BoxAMDetectorVisualizer(cam_class, wrapper, layers,
                                  reshape_transform=functools.partial(reshape_transform, max_shape=[-1],
                                                                      is_need_grad=grad),
                                  is_need_grad=grad, extra_params=dict(batch_size=1, ablation_layer=DetAblationLayer(),
                                                                       ratio_channels_to_ablate=0.5))
    img = cv2.imread(str(image))
    wrapper.set_input_data(img)
    pred = wrapper()[0].pred_instances
    pred = pred[pred.scores > thr][:topk]
    targets = [DetBoxScoreTarget(pred, device="cpu", ignore_loss_params=list(ignore))]
    if grad:
        wrapper.need_loss(True)
        wrapper.set_input_data(img, pred)
        vis.switch_activations_and_grads(wrapper)
    sample, inputs = wrapper.input_data["data_samples"], wrapper.input_data["inputs"]
    sample, inputs = (sample[0], inputs[0]) if isinstance(sample, list) else (sample, inputs)
    meta = dict(sample.metainfo)
    h, w = inputs.shape[1:]
    am = vis(np.zeros((h, w, 3), np.uint8), targets=targets)
    return am, pred.bboxes.numpy(), meta


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "eigencam"])
def test_boxam_equals_mmyolo_boxam_vis_demo(method, small_photo, mm_tmp):
    """YOLOv5-s with its own letterbox pipeline: the boxes are mmyolo's, and the map is mmyolo's GradCAM carried
    back from the network input by the pipeline's scale_factor and pad_param."""
    need("mmyolo")
    need("pytorch_grad_cam")
    need_mmcv_ops()
    cfg_path, ckpt, options = _checkpoint("yolov5_s", str(mm_tmp))
    thr, topk, layer = 0.25, 2, "neck.out_layers[0]"  # level 0: the small random boxes are assigned there
    am, boxes, meta = _mmyolo_boxam(mm_config(cfg_path, options), ckpt, small_photo, layer, thr, topk, mm_tmp, method)
    assert am.max() > 0.99 and meta.get("pad_param") is not None and meta["pad_param"][0] > 0
    res = visctl.boxam(small_photo, cfg_path, str(ckpt), method=method, target_layers=[layer], topk=topk,
                       score_thr=thr, options=visctl.RunOptions(device="cpu", threads=1, cfg_options=list(options)))
    got = res.images[0]
    np.testing.assert_allclose(got.boxes, boxes, atol=1e-3)
    want = _carry_back(am, meta, (240, 320))
    assert got.maps[0].shape == (240, 320)
    assert np.corrcoef(got.maps[0].ravel(), want.ravel())[0, 1] > 0.999
    np.testing.assert_allclose(got.maps[0], want, atol=2e-2)
    assert any("mmyolo's boxam_vis_demo" in n for n in res.notes)


def test_boxam_seed_line_with_the_seeds_resize_pipeline(small_photo, mm_tmp, invoke):
    """The seed's advice (``mmdet.Resize`` with ``keep_ratio=False`` in place of the letterbox), and its command
    line with the tool's name: mmyolo's map at the original size is then aligned, and visctl's equals it."""
    need("mmyolo")
    need("pytorch_grad_cam")
    need_mmcv_ops()
    base = package_configs("mmyolo") / DETECTORS["yolov5_s"][1]
    cfg_path = mm_tmp / "yolov5_s_resize.py"
    cfg_path.write_text(f"_base_ = {str(base)!r}\n" + """
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='mmdet.Resize', scale=(320, 320), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True, _scope_='mmdet'),
    dict(type='mmdet.PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
""")
    ckpt = runner_checkpoint(cfg_path, mm_tmp)
    from mmengine.config import Config

    thr, topk, layer = 0.25, 2, "neck.out_layers[0]"
    am, boxes, meta = _mmyolo_boxam(Config.fromfile(str(cfg_path)), ckpt, small_photo, layer, thr, topk, mm_tmp)
    ref_full = _carry_back(am, meta, (240, 320))  # a plain stretch: what the demo draws at the original size
    out = mm_tmp / "boxam_seed"
    result = invoke("boxam", str(small_photo), str(cfg_path), str(ckpt), "--topk", str(topk), "--method", "gradcam",
                    "--target-layers", layer, "--score-thr", str(thr), "--save-raw", "-o", str(out),
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    raw = np.load(next(out.glob("*_boxam_all.npy")))
    assert raw.shape == (240, 320)
    assert np.corrcoef(raw.ravel(), ref_full.ravel())[0, 1] > 0.999
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    drawn = [b["box"] for i in manifest["inputs"] for b in i.get("boxes", [])]
    np.testing.assert_allclose(drawn, boxes, atol=0.06)  # the manifest rounds to 0.1 px


def test_boxam_on_retinanet_scores_its_own_boxes(small_photo, mm_tmp):
    """A detector mmyolo's boxam does not cover (mmdet's RetinaNet): the box-score target on the package's own
    predictions, whose graph is kept through its predict (mmdet detaches the scores there); the default layer is
    the FPN's finest output, where these boxes come from."""
    need("mmdet")
    need_mmcv_ops()
    cfg_path, ckpt, options = _checkpoint("retinanet_r50", str(mm_tmp))
    from mmdet.apis import inference_detector

    ref = inference_detector(_reference_detector("mmdet", mm_config(cfg_path, options), ckpt),
                             str(small_photo)).pred_instances
    res = visctl.boxam(small_photo, cfg_path, str(ckpt), method="gradcam", topk=2, score_thr=0.05,
                       options=visctl.RunOptions(device="cpu", threads=1, cfg_options=list(options)))
    got = res.images[0]
    assert list(res.params["target_layers"]) == ["neck.fpn_convs.0"]  # a frozen result: a tuple
    np.testing.assert_allclose(got.boxes, ref.bboxes.numpy()[:2], atol=1e-3)
    np.testing.assert_allclose(got.scores, ref.scores.numpy()[:2], atol=1e-5)
    amap = got.maps[0]
    assert amap.shape == (240, 320) and np.isfinite(amap).all() and amap.max() > 0.99


def _reference_features(cfg, ckpt: Path, image: Path, module_path: str):
    """The detector's own features: inference_detector's pipeline and data preprocessor, a hook on the module."""
    import torch
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg

    model = _reference_detector("mmyolo", cfg, ckpt)
    pipeline = Compose(get_test_pipeline_cfg(cfg))
    data = pipeline(dict(img_path=str(image), img_id=0))
    meta = dict(data["data_samples"].metainfo)
    found = []
    module = eval(f"model.{module_path}")
    handle = module.register_forward_hook(lambda _m, _i, out: found.append(out))
    with torch.no_grad():
        model.test_step(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]))
    handle.remove()
    return found[0], meta


@pytest.mark.parametrize(("layer", "count"), [("backbone", 3), ("neck", 3), (None, 3)])
def test_featmap_of_backbone_and_neck(layer, count, small_photo, mm_tmp):
    """The seed's ``--target-layers backbone`` / ``neck`` on YOLOv5-s (and no layer: featmap_vis_demo's default,
    the backbone): three output maps each, every one carried back to the original's size, equal to the
    detector's own output reduced the same way."""
    need("mmyolo")
    need_mmcv_ops()
    cfg_path, ckpt, options = _checkpoint("yolov5_s", str(mm_tmp))
    res = visctl.featmap(small_photo, cfg_path, str(ckpt), target_layers=[layer] if layer else None,
                         channel_reduction="squeeze_mean",
                         options=visctl.RunOptions(device="cpu", threads=1, cfg_options=list(options)))
    layers = res.images[0].layers
    assert len(layers) == count
    layer = layer or "backbone"
    feats, meta = _reference_features(mm_config(cfg_path, options), ckpt, small_photo, layer)
    assert len(feats) == count
    for got, ref in zip(layers, feats):
        arr = got.map("A")
        assert arr.shape == (240, 320) and np.isfinite(arr).all()
        want = _carry_back(ref[0].mean(0).numpy(), meta, (240, 320))
        assert np.corrcoef(arr.ravel(), want.ravel())[0, 1] > 0.999


def _sahi_grid(h: int, w: int, patch: int, overlap: float) -> list[tuple[int, int, int, int]] | None:
    try:
        from sahi.slicing import get_slice_bboxes
    except ImportError:  # .ci/run's OpenMMLab stage installs sahi: there the comparison must run
        if os.environ.get("VISCTL_OPENMMLAB_STAGE") == "1":
            pytest.fail("sahi is not installed, though VISCTL_OPENMMLAB_STAGE=1 says this environment has it")
        return None
    return [tuple(b) for b in get_slice_bboxes(h, w, patch, patch, False, overlap, overlap)]


def test_slice_large_image_in_original_pixels(mm_tmp):
    """large_image_demo's use on a 700x900 picture, 320 px tiles, with its defaults: every tile's boxes are the
    detector's own (inference_detector on the tile) moved by the tile's offset, merged as the demo merges them
    (mmyolo/utils/large_image.py merge_results_by_nms: mmcv's class-aware batched_nms at --merge-iou-thr 0.25 on
    every box), and those over --score-thr drawn."""
    need("mmyolo")
    need_mmcv_ops()
    import cv2
    from mmdet.apis import inference_detector

    from visctl import detection

    cfg_path, ckpt, options = _checkpoint("yolov5_s", str(mm_tmp))
    rng = np.random.default_rng(0)
    big = np.full((700, 900, 3), 90, np.uint8)
    for _ in range(12):
        x, y = int(rng.integers(0, 860)), int(rng.integers(0, 660))
        cv2.rectangle(big, (x, y), (x + 40, y + 30), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    path = mm_tmp / "large.png"
    cv2.imwrite(str(path), big)
    thr = 0.26
    res = visctl.slice(path, cfg_path, str(ckpt), patch_size=320, patch_overlap_ratio=0.25, score_thr=thr,
                              batch_size=4, options=visctl.RunOptions(device="cpu", threads=1,
                                                                      cfg_options=list(options)))
    assert (res.params["merge_iou_thr"], res.params["merge_metric"]) == (0.25, "iou")  # the demo's defaults
    got = res.images[0]
    grid = list(got.tiles)
    assert grid == detection.tiles(700, 900, 320, 0.25)
    sahi = _sahi_grid(700, 900, 320, 0.25)
    if sahi is not None:  # sahi's own grid, as large_image_demo slices
        assert sorted(grid) == sorted(sahi)
    model = _reference_detector("mmyolo", mm_config(cfg_path, options), ckpt)
    parts = []
    for x0, y0, x1, y1 in grid:
        pred = inference_detector(model, np.ascontiguousarray(big[y0:y1, x0:x1])).pred_instances
        b = pred.bboxes.numpy() + np.array([x0, y0, x0, y0], np.float32)
        parts.append(detection.Detections(b, pred.scores.numpy(), pred.labels.numpy()))
    import torch
    from mmcv.ops import batched_nms

    raw = detection.Detections.concat(parts)
    assert got.boxes_before_merge == int((raw.scores >= thr).sum()) > 0
    _, kept = batched_nms(torch.from_numpy(raw.boxes), torch.from_numpy(raw.scores), torch.from_numpy(raw.labels),
                          dict(type="nms", iou_threshold=0.25))
    want = raw.keep(kept.numpy())
    want = want.keep(want.scores >= thr)  # the demo draws these (its --score-thr)
    assert len(got.boxes) == len(want)
    got_b, got_s = _sorted(np.asarray(got.boxes), np.asarray(got.scores))
    want_b, want_s = _sorted(want.boxes, want.scores)
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    np.testing.assert_allclose(got_b, want_b, atol=1e-3)
    assert got_b[:, 2].max() > 320 and got_b[:, 3].max() > 320  # boxes beyond the first tile: original pixels


def test_the_adapter_forgets_its_batch_and_refuses_a_mismatch(small_photo, mm_tmp, monkeypatch):
    """After a run the detector holds no pipeline states (a later call would read stale metas), a batch whose
    size does not fit the bound states is an error, and the loss leaves mmengine's MessageHub as it was."""
    need("mmyolo")
    need("pytorch_grad_cam")
    need_mmcv_ops()
    import torch
    from mmengine.logging import MessageHub

    from visctl import mmdet_adapter

    made: list = []
    real = mmdet_adapter.adapt
    monkeypatch.setattr(mmdet_adapter, "adapt", lambda *a: made.append(real(*a)) or made[-1])
    cfg_path, ckpt, options = _checkpoint("yolov5_s", str(mm_tmp))
    hub = MessageHub.get_current_instance()
    hub.runtime_info.pop("epoch", None)
    res = visctl.boxam(small_photo, cfg_path, str(ckpt), method="gradcam", target_layers=["neck.out_layers[0]"],
                       topk=1, score_thr=0.0, options=visctl.RunOptions(device="cpu", threads=1,
                                                                       cfg_options=list(options)))
    assert len(res.images[0].boxes) == 1 and made
    adapter = made[-1]
    assert adapter._states == []
    assert "epoch" not in MessageHub.get_current_instance().runtime_info
    visctl.slice(small_photo, cfg_path, str(ckpt), patch_size=400, score_thr=0.0,
                        options=visctl.RunOptions(device="cpu", threads=1, cfg_options=list(options)))
    assert made[-1]._states == []
    adapter.bind([object(), object()])
    with pytest.raises(RuntimeError, match="2 images' pipeline states for a batch of 3"):
        adapter.metas(torch.zeros(3, 3, 32, 32))
    adapter.bind([])


def test_the_tile_grid_is_sahis():
    """visctl's tiles equal sahi's get_slice_bboxes (which mmyolo's large_image_demo slices with) on every
    combination of image sides, patch sizes and overlaps below, .5 pixel overlaps included."""
    import itertools

    from visctl import detection

    cases = list(itertools.product([1, 50, 333, 641, 1000, 3000], [1, 77, 700, 1280, 4000], [33, 100, 333, 640],
                                   [0, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9]))
    for h, w, patch, overlap in cases:
        want = _sahi_grid(h, w, patch, overlap)
        if want is None:
            pytest.skip("sahi is not installed")
        assert detection.tiles(h, w, patch, overlap) == want, (h, w, patch, overlap)


def test_centernet_maps_are_carried_back_past_its_border(small_photo, mm_tmp):
    """CenterNet's test pipeline puts the original inside a larger padded image at ``border``: a feature map taken
    in the packed image and carried back lands where the detector's own features say (not shifted by the pad)."""
    need("mmdet")
    need_mmcv_ops()
    import cv2

    from visctl import mmdet_adapter

    cfg_path, ckpt, options = _checkpoint("centernet_r18", str(mm_tmp))
    pipe = mmdet_adapter.PackagePipeline(mm_config(cfg_path, options))
    from visctl import transforms

    img = cv2.cvtColor(cv2.imread(str(small_photo)), cv2.COLOR_BGR2RGB)
    state = transforms.ImageState(img.copy())
    pipe(state)
    top, bottom, left, right = (int(v) for v in state.meta["border"])
    assert (left, top) != (0, 0)  # the case: the original does not start at the corner
    assert mmdet_adapter.placement(state.meta) == (left, top)
    # a point of the original maps into the packed image at (x + left, y + top), and the pixels agree there
    h, w = img.shape[:2]
    np.testing.assert_array_equal(state.img[top:top + h, left:left + w], img)
    assert state.scale == (1.0, 1.0) and state.shift == (float(left), float(top)) and state.geometry_known


@pytest.mark.parametrize(("config", "family"), [
    ("yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py", "yolov8"),  # a YOLOv5Head subclass without loss_obj
    ("yolov7/yolov7_tiny_syncbn_fast_8x16b-300e_coco.py", "yolov5"),
    ("ppyoloe/ppyoloe_plus_s_fast_8xb8-80e_coco.py", "yolov6"),
    ("yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco.py", "yolov5"),
])
def test_boxam_leaves_out_a_loss_the_head_has(config, family):
    """The loss boxam leaves out (mmyolo boxam_vis_demo's IGNORE_LOSS_PARAMS) is chosen by the head and is one of
    its losses: YOLOv8's head subclasses YOLOv5's but has no loss_obj, so leaving loss_obj out left nothing out."""
    need("mmyolo")
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from visctl import mmdet_adapter

    cfg = Config.fromfile(str(package_configs("mmyolo") / config))
    init_default_scope("mmyolo")
    model = MODELS.build(cfg.model)
    assert mmdet_adapter.loss_family(model, cfg) == family
    from torch import nn

    assert all(isinstance(getattr(model.bbox_head, name, None), nn.Module) for name in mmdet_adapter.IGNORE_LOSS[family])


def test_a_detector_that_fails_in_its_own_package_code_is_one_error(invoke, small_photo, mm_tmp):
    """mmdet 3.3's SSD300 reads a loss_cls its SSDHead does not have (inference_detector fails alike): an error
    line naming mmdet, exit 2, not visctl's "internal error"."""
    need("mmdet")
    need_mmcv_ops()
    cfg_path = package_configs("mmdet") / "ssd/ssd300_coco.py"
    ckpt = runner_checkpoint(cfg_path, mm_tmp)
    result = invoke("boxam", small_photo, cfg_path, ckpt, "-o", mm_tmp / "ssd")
    assert result.exit_code == 2, result.output
    assert "error: mmdet's" in result.stderr and "internal error" not in result.stderr
    assert "loss_cls" in result.stderr and "inference_detector fails alike" in result.stderr
