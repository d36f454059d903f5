"""Faithfulness scores (visctl.faithfulness): sanity checks a reviewer asks for, on the demo classifier."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DEMO_CFG


@pytest.fixture(scope="module")
def demo(demo_logits):
    logits_model, batch, cats, scenes, states = demo_logits
    # a map on the object: its box (in the 64 px input) filled with 1, softened
    h, w = batch.shape[2:]
    on = np.zeros((len(scenes), h, w), np.float32)
    for i, (scene, state) in enumerate(zip(scenes, states)):
        sx, sy = state.scale
        x0, y0, x1, y1 = scene.boxes[0]
        on[i, int(y0 * sy):int(np.ceil(y1 * sy)), int(x0 * sx):int(np.ceil(x1 * sx))] = 1.0
    return logits_model, batch, cats, on


def test_object_map_beats_its_inverse_and_a_random_map(demo):
    from visctl import faithfulness

    model, batch, cats, on = demo
    rng = np.random.default_rng(0)
    scores = {name: faithfulness.score(model, batch, maps, cats, steps=6, percentiles=(30, 70), seed=0)
              for name, maps in (("object", on), ("inverse", 1 - on),
                                 ("random", rng.random(on.shape).astype(np.float32)))}
    mean = {name: {k: np.mean([getattr(s, k) for s in v]) for k in faithfulness.SCORES} for name, v in scores.items()}
    for other in ("inverse", "random"):
        assert mean["object"]["road_combined"] > mean[other]["road_combined"], mean
        assert mean["object"]["deletion_auc"] < mean[other]["deletion_auc"], mean
        assert mean["object"]["insertion_auc"] > mean[other]["insertion_auc"], mean
    ranked = faithfulness.ranking(scores)
    assert ranked[0]["method"] == "object" and ranked[-1]["method"] == "inverse"


def test_scores_are_deterministic_with_a_seed(demo):
    from visctl import faithfulness

    model, batch, cats, on = demo
    a = faithfulness.score(model, batch[:2], on[:2], cats[:2], steps=4, percentiles=(50,), seed=3)
    b = faithfulness.score(model, batch[:2], on[:2], cats[:2], steps=4, percentiles=(50,), seed=3)
    assert a == b


def test_road_equals_grad_cams_road_on_each_image_alone(demo):
    """The ROAD scores are grad-cam's ROAD averagers on each image alone after ``torch.manual_seed(seed)``
    (MoRF first, then LeRF on the same generator), to float rounding: grad-cam forwards the image alone, visctl
    with its other perturbed images (a batched conv rounds ~1e-7 differently)."""
    import torch
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from visctl import faithfulness

    model, batch, cats, on = demo
    maps = np.stack([on[0], np.random.default_rng(1).random(on.shape[1:]).astype(np.float32), on[2]])
    ours = faithfulness.score(model, batch[:3], maps, cats[:3], steps=2, percentiles=(40, 80), seed=5)
    state = torch.random.get_rng_state()
    try:
        for i in range(3):
            targets = [ClassifierOutputSoftmaxTarget(cats[i])]
            torch.manual_seed(5)
            with torch.no_grad():
                morf = ROADMostRelevantFirstAverage([40, 80])(batch[i:i + 1], maps[i:i + 1], targets, model)
                lerf = ROADLeastRelevantFirstAverage([40, 80])(batch[i:i + 1], maps[i:i + 1], targets, model)
            np.testing.assert_allclose(ours[i].road_morf, float(morf[0]), rtol=1e-5, atol=2e-6)
            np.testing.assert_allclose(ours[i].road_lerf, float(lerf[0]), rtol=1e-5, atol=2e-6)
            np.testing.assert_allclose(ours[i].road_combined, float(lerf[0] - morf[0]) / 2, rtol=1e-5, atol=2e-6)
    finally:
        torch.random.set_rng_state(state)


def test_cam_score_ranks_methods_in_manifest_captions_and_gallery(invoke, held_out, tmp_path):
    paths = list(held_out)[:3]
    result = invoke("cam", *paths, DEMO_CFG, "--method", "gradcam,eigencam", "--score", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    import json

    man = json.loads((tmp_path / "manifest.json").read_text())
    ranking = man["faithfulness_ranking"]
    assert sorted(r["method"] for r in ranking) == ["eigencam", "gradcam"]
    assert [r["rank"] for r in ranking] == [1, 2]
    assert ranking[0]["road_combined"]["mean"] >= ranking[1]["road_combined"]["mean"]
    assert man["outputs"][0]["path"] == "cam_ranking.png"  # the gallery opens with the ranking
    for item in man["inputs"]:
        assert set(item["scores"]) == {f"{m}_c{c}" for m in ("gradcam", "eigencam")
                                       for c in [int(item["targets"][0].split()[1])]}
    # the mean in the ranking is the mean of the per-image scores
    grad = [item["scores"][k]["road_combined"] for item in man["inputs"] for k in item["scores"] if "gradcam" in k]
    row = next(r for r in ranking if r["method"] == "gradcam")
    assert abs(row["road_combined"]["mean"] - np.mean(grad)) < 1e-9
    assert "forward passes" in result.stderr  # the cost is said before the work
