"""EigenCAM and KPCA-CAM oriented by the evidence for the target, at any layer.

The first principal component's sign is arbitrary. Orienting it by the channel mean of the activations works
after a ReLU (the object is where the layer fires) but says nothing at a linear bottleneck (a projection conv
+ BN with no activation, MobileNetV2/EfficientNet blocks), where a trained network lit the background. visctl
orients it by the gradient x activation map of the same layer and target (one backward per batch):
:func:`visctl.cams.orient_by`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from visctl import _gradcam, cams, checkpoints, layers

BOTTLENECK_CFG = Path(__file__).resolve().parent.parent / "examples" / "demo_bottleneck" / "config.py"
LAYER = "features.3.conv.3"  # the last InvertedResidual's projection BN: no activation after it
SEEDS = range(100_000, 100_060)  # held out: examples/train_bottleneck.py trains on seeds 0..2999

pytest.importorskip("pytorch_grad_cam")
EIGEN = [m for m in (cams.Method.eigencam, cams.Method.kpcacam) if _gradcam.available(cams.METHODS[m][0])]


# ---- the rule -------------------------------------------------------------------------------------------

def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activations (2, 4, 8, 8) whose channel mean is LOW on the object, and gradients that make the object the
    evidence for the target: channel 0 fires on the object and carries the class, channels 1-3 (a linear layer's
    other features) dip there and do not matter to the score."""
    obj = np.zeros((8, 8), np.float32)
    obj[2:5, 3:6] = 1.0
    acts = rng.normal(scale=0.05, size=(2, 4, 8, 8)).astype(np.float32)
    acts[:, 0] += 3.0 * obj
    acts[:, 1:] -= 2.0 * obj
    grads = np.zeros_like(acts)
    grads[:, 0] = 0.1
    return acts, grads, obj.astype(bool)


def test_orient_by_lights_the_evidence_where_the_channel_mean_does_not():
    acts, grads, obj = _scene(np.random.default_rng(0))
    # the component that separates the object from the background, with both signs
    for sign in (1.0, -1.0):
        proj = sign * (acts[:, 0] - acts[:, 1:].mean(1))
        old = cams.orient(proj, acts)
        assert (old[:, obj].mean(1) < old[:, ~obj].mean(1)).all()  # the channel mean's rule lights the background
        new, unsure = cams.orient_by(proj, cams.gradient_map(acts, grads))
        assert unsure == []
        assert (new[:, obj].mean(1) > new[:, ~obj].mean(1)).all()  # the gradient's lights the object
        assert np.array_equal(np.abs(new), np.abs(proj))


def test_orient_by_keeps_the_sign_and_says_so_where_the_gradient_gives_none():
    acts, grads, obj = _scene(np.random.default_rng(1))
    proj = acts[:, 0] - acts[:, 1:].mean(1)
    # no gradient reached the layer (a zero head, a batch row with no target) or none at all
    for reference in (cams.gradient_map(acts, np.zeros_like(grads)), None):
        out, unsure = cams.orient_by(proj, reference)
        assert unsure == [0, 1] and np.array_equal(out, proj)
    # a gradient map uncorrelated with the component (a checkerboard against a centred blob): no sign either
    checker = np.indices((8, 8)).sum(0) % 2 * 2.0 - 1.0
    flat = np.zeros((8, 8))
    flat[2:6, 2:6] = 1.0
    assert abs(np.corrcoef(checker.ravel(), flat.ravel())[0, 1]) < cams.NO_SIGN
    out, unsure = cams.orient_by(np.stack([flat, -flat]), np.stack([checker, flat]))
    assert unsure == [0] and np.array_equal(out[0], flat) and np.array_equal(out[1], flat)
    # a non-finite reference gives no sign
    out, unsure = cams.orient_by(proj, np.full((2, 8, 8), np.nan))
    assert unsure == [0, 1]


# ---- a trained network whose target layer is a linear bottleneck ----------------------------------------

@pytest.fixture(scope="module")
def bottleneck():
    from torch import nn

    from visctl import config, shapes

    cfg = config.load_config(str(BOTTLENECK_CFG))
    model, _ = checkpoints.load_model(cfg, None, "cpu")
    model.eval()
    block = layers.find_layer(model, "features.3")[1]
    assert isinstance(layers.find_layer(model, LAYER)[1], nn.BatchNorm2d) and block.conv[-1] is \
        layers.find_layer(model, LAYER)[1] and isinstance(model.features[4][-1], nn.ReLU6)  # conv+BN, no activation
    scenes = [shapes.make_scene(s, size=64) for s in SEEDS]
    x = torch.from_numpy((np.stack([s.image for s in scenes]).astype(np.float32) - 127.5) / 64.0)
    x = x.permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        logits = model(x)
    labels = torch.tensor([s.labels[0] for s in scenes])
    assert (logits.argmax(1) == labels).float().mean() >= 0.95  # trained: it knows the shapes
    return model, x, [s.boxes[0] for s in scenes], logits.argmax(1).tolist()


def _object_brighter(maps: np.ndarray, boxes: list) -> int:
    hits = 0
    for m, (x0, y0, x1, y1) in zip(maps, boxes):
        inside = np.zeros(m.shape, bool)
        inside[y0:y1, x0:x1] = True
        hits += m[inside].mean() > m[~inside].mean()
    return hits


@contextmanager
def _negated_projections(monkeypatch):
    """Plain grad-cam with the other sign of the principal component (test_cam's, for grad-cam 1.4.8 too)."""
    import sys

    from pytorch_grad_cam.utils import svd_on_activations as svd

    with monkeypatch.context() as mp:
        for name in ("get_2d_projection", "get_2d_projection_kernel"):
            fn = getattr(svd, name, None)  # the kernel one is new in grad-cam 1.5
            for mod_name, mod in list(sys.modules.items()):
                if fn is not None and mod_name.startswith("pytorch_grad_cam") and getattr(mod, name, None) is fn:
                    mp.setattr(mod, name, lambda *a, _fn=fn, **k: -_fn(*a, **k))
        yield


@contextmanager
def _channel_mean_orientation(monkeypatch):
    """The orientation before: the channel mean of the activations, forward only."""
    with monkeypatch.context() as mp:
        mp.setattr(cams, "GRADIENT_ORIENTED", frozenset())
        yield


@pytest.mark.parametrize("method", EIGEN, ids=lambda m: m.value)
def test_eigen_maps_light_the_object_at_a_linear_bottleneck(bottleneck, method, monkeypatch):
    import pytorch_grad_cam as gc
    from test_cam import _plain_grad_cam

    model, x, boxes, top = bottleneck
    layout = cams.plan(model, x[:1], [LAYER], None, None).layouts
    targets = [cams.ClassTarget(c) for c in top]
    engine = cams.CamEngine(model, method, [LAYER], layout)
    maps, _ = engine(x, targets)
    assert engine.unoriented == []
    gradcam, _ = cams.CamEngine(model, cams.Method.gradcam, [LAYER], layout)(x, targets)
    assert _object_brighter(gradcam, boxes) >= 57  # the layer does see the object
    got = _object_brighter(maps, boxes)
    assert got >= 57, f"{method.value}: the object brighter than the background on {got}/60"
    # the orientation before (the channel mean of the activations, forward only) lights the background here
    with _channel_mean_orientation(monkeypatch):
        old, _ = cams.CamEngine(model, method, [LAYER], layout)(x, targets)
    assert _object_brighter(old, boxes) <= 45
    # and the maps are grad-cam's up to the sign
    some = slice(0, 8)
    cls = getattr(gc, cams.METHODS[method][0])
    expected = _plain_grad_cam(cls, model, LAYER, None, x[some], top[some])
    with _negated_projections(monkeypatch):
        flipped = _plain_grad_cam(cls, model, LAYER, None, x[some], top[some])
    for g, e, f in zip(maps[some], expected, flipped):
        assert min(np.abs(g - e).max(), np.abs(g - f).max()) < 1e-4


def test_each_image_is_oriented_by_its_own_target_whatever_the_batch(bottleneck):
    """One backward per batch (the targets' scores summed) gives every image its own gradient: an image's map
    is the same alone or in a batch, for a rank target (the predicted class) as for a class index."""
    model, x, _, top = bottleneck
    layout = cams.plan(model, x[:1], [LAYER], None, None).layouts
    engine = cams.CamEngine(model, cams.Method.eigencam, [LAYER], layout)
    batch, _ = engine(x[:4], [cams.RankTarget(0), cams.ClassTarget(top[1]), cams.RankTarget(0), cams.RankTarget(1)])
    for i, target in enumerate([cams.ClassTarget(top[0]), cams.ClassTarget(top[1]), cams.RankTarget(0)]):
        alone, _ = engine(x[i:i + 1], [target])
        np.testing.assert_allclose(alone[0], batch[i], atol=1e-5)


def _zero_head():
    """A net whose class scores do not depend on the target layer: no gradient reaches it."""
    from torch import nn

    torch.manual_seed(0)
    # stride 8: grad-cam's SVD (full_matrices=True) holds an (H*W)^2 matrix, so the map stays small
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=8, padding=1), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        model[4].weight.zero_()
    return model.eval()


@pytest.mark.parametrize("method", EIGEN, ids=lambda m: m.value)
def test_without_a_gradient_the_map_keeps_the_channel_mean_orientation_and_says_so(method, monkeypatch):
    model = _zero_head()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    engine = cams.CamEngine(model, method, ["1"], [cams.Layout("nchw")])
    got, _ = engine(x, [cams.ClassTarget(0), cams.ClassTarget(2)])
    assert engine.unoriented == [0, 1]
    with _channel_mean_orientation(monkeypatch):
        old, _ = cams.CamEngine(model, method, ["1"], [cams.Layout("nchw")])(x, [cams.ClassTarget(0),
                                                                                  cams.ClassTarget(2)])
    np.testing.assert_allclose(got, old, atol=1e-5)  # the graph from the layer on: float rounding apart


def test_the_library_notes_the_maps_the_gradient_could_not_orient():
    import visctl

    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    opts = visctl.RunOptions(device="cpu", threads=1)
    res = visctl.cam([img], _zero_head(), method="eigencam", target_layers=["1"], options=opts)
    assert any("oriented by the channel mean" in n and "eigencam" in n for n in res.notes), res.notes
    from visctl.errors import InputWarning

    with pytest.warns(InputWarning, match="constant"):  # gradcam's map of a zero head is blank, and says so
        res = visctl.cam([img], _zero_head(), method="gradcam", target_layers=["1"], options=opts)
    assert not any("oriented by the channel mean" in n for n in res.notes)


def test_score_ranks_eigencam_above_a_random_map(invoke, tmp_path):
    """The issue's symptom: with the background lit, ``--score`` ranked EigenCAM below RandomCAM."""
    import json

    from visctl import shapes

    paths = [p for p, _ in shapes.write_scenes(tmp_path / "img", range(100_000, 100_004), size=64)]
    result = invoke("cam", *paths, BOTTLENECK_CFG, "--method", "eigencam,randomcam", "--score", "--seed", "0",
                    "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["params"]["target_layers"] == [LAYER]
    ranking = {r["method"]: r for r in man["faithfulness_ranking"]}
    assert ranking["eigencam"]["rank"] == 1, man["faithfulness_ranking"]
