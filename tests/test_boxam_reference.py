"""visctl.boxam reproduces plain grad-cam: a no-grad detection pass, then grad-cam's own CAM class with one
FasterRCNNBoxScoreTarget per image -- though visctl takes its boxes from the CAM forward itself (one forward,
not two) and computes the gradient methods natively."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROOT

import visctl
from visctl.shapes import make_scene

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
SCORE_THR = 0.3


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(s, 128, n_objects=1 + s % 4, min_side=10, max_side=36).image for s in (200_010, 200_011, 200_012)]


def _grad_cam_maps(images: list[np.ndarray], method: str, per_box: bool) -> list[list[np.ndarray]]:
    """What grad-cam's detection tutorial does: detect under no_grad, keep the boxes, build the targets, run
    the CAM class on the same batch (grad-cam's full graph, parameters requiring grad)."""
    import pytorch_grad_cam as gc
    from mmengine.config import Config
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    from visctl import cams
    from visctl.checkpoints import load_model

    model, _ = load_model(Config.fromfile(str(DET_CFG)), str(DET_CFG.parent / "detector.pth"))
    model.eval()
    batch = torch.from_numpy(np.stack([(i.astype(np.float32) - 127.5) / 64.0 for i in images]).transpose(0, 3, 1, 2)
                             .copy())
    with torch.no_grad():
        found = model(batch)
    kept = []
    for out in found:
        order = out["scores"].argsort(descending=True)
        order = order[out["scores"][order] >= SCORE_THR][:10]
        kept.append({k: v[order].detach() for k, v in out.items()})
    cls = {"layercam": gc.LayerCAM, "gradcam++": gc.GradCAMPlusPlus, "eigencam": gc.EigenCAM}[method]
    maps: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in images]
    slots = max(len(k["scores"]) for k in kept) if per_box else 1
    for slot in range(slots):
        sel = slice(slot, slot + 1) if per_box else slice(None)
        targets = [FasterRCNNBoxScoreTarget(labels=k["labels"][sel], bounding_boxes=k["boxes"][sel]) for k in kept]
        for p in model.parameters():
            p.requires_grad_(True)
        # library_calls fixes EigenCAM's principal component's sign (cams.orient: the channel mean); visctl then
        # orients it by the boxes' gradient (cams.orient_by), so for eigencam each map is one of the two signs
        with cams.library_calls(), cls(model=model, target_layers=[model.neck]) as cam:
            out = cam(batch, targets)
        flipped = out
        if method == "eigencam":
            orient = cams.orient
            try:
                cams.orient = lambda *a, _orient=orient: -_orient(*a)
                with cams.library_calls(), cls(model=model, target_layers=[model.neck]) as cam:
                    flipped = cam(batch, targets)
            finally:
                cams.orient = orient
        for i, k in enumerate(kept):
            if not per_box or slot < len(k["scores"]):
                maps[i].append((out[i], flipped[i]))
    return maps


@pytest.mark.parametrize(("method", "per_box"), [("layercam", False), ("gradcam++", True), ("eigencam", False)])
def test_boxam_maps_equal_grad_cams_two_pass_run(scenes, method, per_box):
    res = visctl.boxam(scenes, DET_CFG, method=method, per_box=per_box, score_thr=SCORE_THR, batch_size=3,
                       options=visctl.RunOptions(device="cpu", threads=1))
    ref = _grad_cam_maps(scenes, method, per_box)
    assert sum(len(i.boxes) for i in res.images) >= 5 and min(len(i.boxes) for i in res.images) >= 1
    for img, want in zip(res.images, ref):
        assert len(img.maps) == len(want)
        for got, (exp, flipped) in zip(img.maps, want):
            if not np.allclose(got, flipped, atol=1e-5, rtol=0):
                np.testing.assert_allclose(got, exp, atol=1e-5)
