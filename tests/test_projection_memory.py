"""The first-principal-component projections stay within memory at large maps: EigenCAM's SVD never builds
grad-cam's (H*W) x (H*W) ``U`` (20 GB at a 224 x 224 map) and gives grad-cam's projection; KPCA-CAM, whose kernel
matrix is (H*W)^2 by nature, is skipped with the reason beyond a bound instead of exhausting the machine."""

from __future__ import annotations

import numpy as np
import pytest


def test_first_component_is_grad_cams_projection_up_to_sign():
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from visctl import cams

    rng = np.random.default_rng(0)
    acts = rng.normal(size=(3, 16, 20, 24)).astype(np.float32)
    acts[1, :, 5, 5] = np.nan
    ours, theirs = cams.first_component(acts), get_2d_projection(acts)
    assert ours.shape == theirs.shape == (3, 20, 24) and ours.dtype == np.float32
    for a, b in zip(ours, theirs):
        sign = np.sign((a * b).sum())
        np.testing.assert_allclose(a, sign * b, atol=1e-4)


def test_first_component_at_a_large_map_needs_no_square_matrix(monkeypatch):
    """A 160 x 160 map (25,600 positions): grad-cam's full U would be 25,600^2 float32 = 2.6 GB; the reduced SVD
    asked for must not be the full one."""
    from visctl import cams

    asked = []
    real = np.linalg.svd

    def svd(a, full_matrices=True, **kw):
        asked.append((a.shape, full_matrices))
        return real(a, full_matrices=full_matrices, **kw)

    monkeypatch.setattr(np.linalg, "svd", svd)
    out = cams.first_component(np.random.default_rng(1).normal(size=(1, 8, 160, 160)).astype(np.float32))
    assert out.shape == (1, 160, 160) and asked == [((25_600, 8), False)]


def test_eigencam_through_visctl_uses_the_bounded_projection(image_file):
    """The projection visctl hands grad-cam for EigenCAM is the reduced one (a spy counts it)."""
    import torch.nn as nn

    import visctl
    from visctl import cams

    calls = []
    real = cams.first_component

    def spy(batch):
        calls.append(batch.shape)
        return real(batch)

    import unittest.mock

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3))
    with unittest.mock.patch.object(cams, "first_component", spy):
        result = visctl.cam(image_file, model, target_layers="1", method="eigencam")
    assert calls and len(result.items) == 1


def test_kpca_beyond_its_bound_is_skipped_with_the_reason(image_file, monkeypatch):
    pytest.importorskip("pytorch_grad_cam.utils.svd_on_activations", reason="grad-cam")
    from pytorch_grad_cam.utils import svd_on_activations as svd

    if not hasattr(svd, "get_2d_projection_kernel"):
        pytest.skip("grad-cam 1.4.8 has no KPCA-CAM")
    import torch.nn as nn

    import visctl
    from visctl import cams

    monkeypatch.setattr(cams, "KPCA_MAX_POSITIONS", 100)  # a 64 px map has 4,096 positions
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3))
    result = visctl.cam(image_file, model, target_layers="1", method="kpca_cam,gradcam")
    assert [s.method for s in result.skipped_methods] == ["kpca_cam"]
    assert "KPCA-CAM's kernel" in result.skipped_methods[0].reason and "deeper layer" in result.skipped_methods[0].reason
