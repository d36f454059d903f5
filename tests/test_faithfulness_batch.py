"""cam --score (issue 24, item 5): a map's scores are a function of the image alone, they still are what their
definitions say, and the ranking picture's numbers stand clear of its bars."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DEMO_CFG


@pytest.fixture(scope="module")
def demo(demo_logits):
    logits_model, batch, cats, scenes, states = demo_logits
    rng = np.random.default_rng(0)
    h, w = batch.shape[2:]
    yy, xx = np.mgrid[:h, :w]
    maps = []
    for _ in range(len(batch)):  # smooth blobs with ties (a flat top) and a few exact zeros, as CAMs have
        cy, cx = rng.uniform(10, h - 10), rng.uniform(10, w - 10)
        m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(6, 14) ** 2))
        maps.append(np.clip(m * 1.2 - 0.1, 0, 1).astype(np.float32))
    return logits_model, batch, cats, np.stack(maps)


def _score(model, batch, maps, cats, **kw):
    from visctl import faithfulness

    return faithfulness.score(model, batch, maps, cats, seed=7, **kw)


@pytest.mark.parametrize("pixels", [None, 5 * 64 * 64])  # None: one forward per map; else forwards of 5 images
def test_an_images_scores_are_the_same_alone_and_anywhere_in_any_batch(demo, monkeypatch, pixels):
    """Exactly equal (every float), whatever the other images, their maps, the position and the global
    generator: each map's perturbed images go through the model in batches of their own, of a size fixed by the
    image's size, and ROAD's noise comes from a generator seeded for that map."""
    import torch

    from visctl import faithfulness

    if pixels:
        monkeypatch.setattr(faithfulness, "FORWARD_PIXELS", pixels)
    model, batch, cats, maps = demo
    alone = _score(model, batch[:1], maps[:1], cats[:1])[0]
    other = np.random.default_rng(3).random(maps.shape).astype(np.float32)
    for order in ([3, 0, 5], [0, 6, 7, 2, 1], [4, 2, 0], [5, 1, 6, 0]):
        torch.manual_seed(len(order) * 11)  # whatever the global generator holds
        state = torch.random.get_rng_state()
        where = order.index(0)
        these = np.stack([maps[0] if j == 0 else other[j] for j in order])
        scores = _score(model, batch[order], these, [cats[j] for j in order])
        assert scores[where] == alone, (order, scores[where], alone)
        assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    assert _score(model, batch[:1], maps[:1], cats[:1], batch_size=1)[0] == alone  # the old keyword: no effect


def test_a_scorer_shares_an_images_forwards_without_changing_a_score(demo):
    """One Scorer per batch (as cam does for its methods and classes) gives every map the scores it gets alone,
    and forwards the clean, mean-colour and blurred images once per image, a repeated map's images once."""
    import torch

    from visctl import faithfulness

    model, batch, cats, maps = demo
    seen = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            seen.append(len(x))
            return model(x)

    scorer = faithfulness.Scorer(Counting(), batch[:2], seed=7)
    first = scorer(maps[:2], cats[:2])
    second = scorer(maps[2:4], cats[:2])
    again = scorer(maps[:2], [(c + 1) % 5 for c in cats[:2]])  # the same maps for another class
    per_map = faithfulness.forwards_per_map()
    assert sum(seen) == 2 * faithfulness.FORWARDS_PER_IMAGE + 4 * per_map  # what cam's cost line counts
    assert first == _score(model, batch[:2], maps[:2], cats[:2])
    assert second == _score(model, batch[:2], maps[2:4], cats[:2])
    assert again == _score(model, batch[:2], maps[:2], [(c + 1) % 5 for c in cats[:2]])


def test_the_cli_scores_an_image_alike_alone_and_in_a_batch(invoke, held_out, tmp_path):
    """visctl cam --score: the image's scores in the manifest are the same, to the last bit, alone (batch size
    1) and third in a batch of four (its CAMs are made alone too when scoring)."""
    paths = list(held_out)[:4]

    def scores(images, out, *extra):
        result = invoke("cam", *images, DEMO_CFG, "--method", "gradcam,eigencam", "--score", "-o", tmp_path / out,
                        *extra)
        assert result.exit_code == 0, result.output
        man = json.loads((tmp_path / out / "manifest.json").read_text())
        return {item["input"] if "input" in item else item["path"]: item["scores"] for item in man["inputs"]}

    alone = scores([paths[0]], "alone", "--batch-size", "1")
    batch = scores([paths[2], paths[1], paths[0], paths[3]], "batch", "--batch-size", "4")
    key = next(iter(alone))
    assert alone[key] and batch[key] == alone[key]


def test_deletion_insertion_and_keep_top_are_their_definitions(demo):
    """Recomputed step by step: each perturbed image alone through the model, torchvision's Gaussian blur,
    numpy's trapezoid rule (1e-5: the batched forwards and the blur's matrix products round differently)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    model, batch, cats, maps = demo
    steps, keep = 6, 25.0
    ours = _score(model, batch[:3], maps[:3], cats[:3], steps=steps, keep=keep)
    fractions = np.linspace(0, 1, steps + 1)
    trapezoid = np.trapezoid if hasattr(np, "trapezoid") else np.trapz
    for i in range(3):
        x, cam, c = batch[i], maps[i], cats[i]
        h, w = cam.shape
        sigma = max(1.0, min(h, w) / 10)
        k = int(2 * round(3 * sigma) + 1)
        blurred = F.gaussian_blur(x[None], [k, k], [sigma, sigma])[0]
        mean = x.mean(dim=(1, 2), keepdim=True)
        order = np.argsort(-cam.ravel(), kind="stable")

        def prob(image, c=c):
            with torch.no_grad():
                return float(model(image[None]).softmax(-1)[0, c])

        dele, ins = [], []
        for f in fractions:
            top = torch.zeros(h * w)
            top[torch.from_numpy(order[:int(round(f * h * w))])] = 1
            top = top.view(1, h, w)
            dele.append(prob(x * (1 - top) + mean * top))
            ins.append(prob(blurred * (1 - top) + x * top))
        kept = torch.from_numpy(cam >= np.percentile(cam, 100 - keep)).float()
        assert ours[i].deletion_auc == pytest.approx(trapezoid(dele, fractions), abs=1e-5)
        assert ours[i].insertion_auc == pytest.approx(trapezoid(ins, fractions), abs=1e-5)
        assert ours[i].keep_top_change == pytest.approx(prob(x * kept + mean * (1 - kept)) - prob(x), abs=1e-5)


def test_the_imputer_is_grad_cams(demo):
    """ROAD's system is grad-cam's, value for value, and the imputed image is grad-cam's NoisyLinearImputer's after
    ``torch.manual_seed`` (1e-6: a symmetric LU instead of its spsolve), on masks with no, few and most pixels
    known, on a non-square image."""
    import torch
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, neighbors_weights

    from visctl import faithfulness

    rng = np.random.default_rng(5)
    state = torch.random.get_rng_state()
    try:
        for image in (demo[1][0], torch.randn(3, 37, 53)):
            h, w = image.shape[1:]
            for share in (0.0, 0.05, 0.5, 0.95):
                known = np.float32(rng.random((h, w)) < share)
                a, b, _ = faithfulness._road_system(known, image.numpy())
                ref_a, ref_b = NoisyLinearImputer.setup_sparse_system(known, image.numpy(), neighbors_weights)
                assert (a != ref_a.tocsc()).nnz == 0 and np.array_equal(b, ref_b)
                torch.manual_seed(9)
                ref = NoisyLinearImputer()(image, torch.from_numpy(known))
                ours = faithfulness._impute(image, known, torch.Generator().manual_seed(9))
                np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-6, rtol=0)
    finally:
        torch.random.set_rng_state(state)


@pytest.mark.parametrize("shape", [(3, 64, 64), (3, 37, 90), (3, 6, 5)])
def test_the_blur_is_torchvisions(shape):
    import torch
    from torchvision.transforms.v2 import functional as F

    from visctl import faithfulness

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    sigma = max(1.0, min(shape[1:]) / 10)
    k = int(2 * round(3 * sigma) + 1)
    ref = F.gaussian_blur(x[None], [k, k], [sigma, sigma])[0]
    np.testing.assert_allclose(faithfulness._blur(x).numpy(), ref.numpy(), atol=1e-5, rtol=0)


def _rows(means, stds, names=None):
    from visctl import faithfulness

    per = {}
    for j, (m, s) in enumerate(zip(means, stds)):
        name = names[j] if names else f"method{j}"
        per[name] = [faithfulness.Faithfulness(road_combined=m + d, road_morf=0.0, road_lerf=0.0, deletion_auc=0.25,
                                               insertion_auc=0.75, keep_top_change=0.0) for d in (-s, s)]
    return faithfulness.ranking(per)


@pytest.mark.parametrize("rows", [
    ([0.24, 0.21, 0.11, -0.07, -0.2, -0.24], [0.19, 0.13, 0.15, 0.18, 0.2, 0.14]),
    ([0.4], [0.0]),
    ([0.9, 0.85, -0.9], [0.05, 0.6, 0.05]),
    (list(np.linspace(0.5, -0.5, 15)), [0.3] * 15),
], ids=["six", "one", "extremes", "fifteen"])
def test_the_ranking_numbers_stand_clear_of_the_bars_and_error_bars(rows):
    """Every number's text box (in pixels, as drawn) overlaps no bar, no error bar or cap, no other text, and
    lies inside the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.container import ErrorbarContainer
    from matplotlib.transforms import Bbox

    from visctl import faithfulness

    names = ["gradcam++", "a_rather_long_method_name"] if len(rows[0]) == 2 else None
    fig = faithfulness.ranking_figure(_rows(*rows, names))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    texts = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(texts) == len(rows[0])
    obstacles = [p.get_window_extent(renderer) for p in ax.patches]
    errorbar = next(c for c in ax.containers if isinstance(c, ErrorbarContainer))
    for collection in errorbar.lines[2]:
        for seg in collection.get_segments():
            obstacles.append(Bbox(ax.transData.transform(seg)).padded(1))
    obstacles += [cap.get_window_extent(renderer) for cap in errorbar.lines[1]]
    obstacles += [t.get_window_extent(renderer) for t in ax.get_yticklabels()]
    figure_box = fig.bbox
    for j, box in enumerate(texts):
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, (box, figure_box)
        for other in obstacles + texts[j + 1:]:
            assert not box.overlaps(other), (ax.texts[j].get_text(), box, other)
