"""visctl's own gradient CAMs (cams.NATIVE) against grad-cam's classes on the same batch.

:class:`visctl.cams.CamEngine` computes GradCAM, HiResCAM, GradCAMElementWise, XGradCAM, LayerCAM and GradCAM++
itself for class targets (so a default `visctl cam` run never imports grad-cam); ``native=False`` runs grad-cam's
own class inside the same engine (hooks, frozen parameters, rank targets). Each test runs both on one batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visctl import _gradcam, building, cams
from visctl.choices import Method
from visctl.layers import Layout

METHODS = sorted(cams.NATIVE, key=lambda m: m.value)


def _targets() -> list:
    # a batch of 3: the top class, a fixed class, the second class
    return [cams.RankTarget(0), cams.ClassTarget(3), cams.RankTarget(1)]


def _resnet():
    torch.manual_seed(0)
    return building.build_model(dict(type="resnet18", num_classes=10)).eval()


def _vit():
    torch.manual_seed(0)
    return building.build_model(dict(type="timm.vit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=8,
                                   embed_dim=24, depth=2, num_heads=2)).eval()


def _swin_like():
    from tiny_models import ChannelsLastNet

    torch.manual_seed(0)
    return ChannelsLastNet().eval()


# model, input side, target layers, expected layout kind
CASES = {
    "cnn-two-layers": (_resnet, 64, ["layer3.1", "layer4.1"], "nchw"),
    "vit-tokens": (_vit, 32, ["blocks.1.norm1"], "tokens"),
    "nhwc": (_swin_like, 32, ["blocks.1.norm1"], "nhwc"),
}


@pytest.fixture(scope="module")
def built():
    return {name: (make(), side, layers, kind) for name, (make, side, layers, kind) in CASES.items()}


def _both(model, method, layers, layouts, x, forced_calls, **kw):
    targets_native, targets_ref = _targets(), _targets()
    native = cams.CamEngine(model, method, layers, layouts, **kw)
    got, logits = native(x, targets_native)
    assert forced_calls == []  # the native call did not build a grad-cam object
    want, want_logits = cams.CamEngine(model, method, layers, layouts, native=False, **kw)(x, targets_ref)
    assert len(forced_calls) == 1  # the forced call did
    assert [t.category for t in targets_native] == [t.category for t in targets_ref]
    return got, logits, want, want_logits


@pytest.fixture
def gradcam_builds(monkeypatch):
    """Every grad-cam object the engine builds (the native path must build none)."""
    calls: list[str] = []
    real = _gradcam.build

    def spy(cls, *args, **kwargs):
        calls.append(cls.__name__)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(_gradcam, "build", spy)
    return calls


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", METHODS, ids=[m.value for m in METHODS])
def test_native_maps_equal_grad_cams_own_class(method, case, built, gradcam_builds):
    model, side, layers, kind = built[case]
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(1))
    layouts = cams.plan(model, x[:1], layers, None, None).layouts
    assert [lay.kind for lay in layouts] == [kind] * len(layers)
    got, logits, want, want_logits = _both(model, method, layers, layouts, x, gradcam_builds)
    assert got.shape == want.shape == (3, side, side) and got.dtype == want.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5
    assert torch.equal(logits, want_logits) and logits.shape == (3, model(x[:1]).shape[-1])
    assert got.max() > 0  # not a blank map compared with a blank map
    assert all(p.requires_grad for p in model.parameters())  # the caller's flags restored
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", METHODS, ids=[m.value for m in METHODS])
def test_native_maps_equal_grad_cam_under_autocast(method, gradcam_builds):
    # --amp's path (CUDA only from the CLI): the engine takes any (device type, dtype); CPU bf16 runs here
    from tiny_models import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    got, logits, want, want_logits = _both(model, method, ["features.5"], [Layout("nchw")], x, gradcam_builds,
                                           autocast=("cpu", torch.bfloat16))
    assert np.abs(got - want).max() <= 1e-5 and torch.equal(logits, want_logits)


def test_frozen_model_under_no_grad_and_a_failing_call_leave_no_hooks():
    model = _resnet()
    for p in model.parameters():
        p.requires_grad_(False)
    engine = cams.CamEngine(model, Method.gradcam, ["layer4"], [Layout("nchw")])
    with torch.no_grad():
        maps, logits = engine(torch.randn(2, 3, 64, 64), [cams.RankTarget(0), cams.ClassTarget(1)])
    assert maps.shape == (2, 64, 64) and maps.max() > 0 and logits.shape == (2, 10)
    assert not any(p.requires_grad for p in model.parameters())  # the caller's (frozen) flags, as they were
    with pytest.raises(IndexError):  # a class the model does not have: the target fails after the forward
        engine(torch.randn(1, 3, 64, 64), [cams.ClassTarget(99)])
    assert all(not m._forward_hooks for m in model.modules())


def test_native_only_where_grad_cam_would_give_the_same_maps():
    model = _resnet()
    layout = [Layout("nchw")]
    engine = cams.CamEngine(model, Method.gradcam, ["layer4"], layout)
    assert engine._native_for(_targets(), aug_smooth=False, eigen_smooth=False)
    assert not engine._native_for(_targets(), aug_smooth=True, eigen_smooth=False)  # ttach's augmentations
    assert not engine._native_for(_targets(), aug_smooth=False, eigen_smooth=True)  # grad-cam's SVD
    assert not engine._native_for([lambda out: out[..., 0]] * 3, aug_smooth=False, eigen_smooth=False)
    assert not cams.CamEngine(model, Method.gradcam, ["layer4"], layout, native=False)._native_for(
        _targets(), False, False)
    assert not cams.CamEngine(model, Method.eigengradcam, ["layer4"], layout)._native_for(_targets(), False, False)


def test_version_checks_do_not_import_grad_cam():
    import subprocess
    import sys

    code = ("import sys\nfrom visctl import _gradcam, cams\n_gradcam.check()\n"
            "assert _gradcam.available('FEM') and len(cams.parse_method('all')) > 6\n"
            "print(sorted(m for m in ('pytorch_grad_cam', 'sklearn', 'scipy', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
