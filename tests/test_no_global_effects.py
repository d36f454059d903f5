"""Library calls leave the process as they found it: environment, the tqdm class, torch's random state."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

from visctl import transforms
from visctl.shapes import make_scene


def test_wandb_backend_runs_offline_without_touching_os_environ(tmp_path, monkeypatch):
    from mmengine.visualization import Visualizer

    from visctl.output.backends import push_to_backend
    from visctl.output.files import atomic_write

    calls: list[dict] = []
    fake = types.ModuleType("wandb")  # records what mmengine's WandbVisBackend hands to wandb (not installed here)
    fake.init = lambda **kw: calls.append(kw)
    fake.log = lambda *a, **kw: None
    fake.Image = lambda img: img
    fake.join = lambda: None
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    png = tmp_path / "a.png"
    atomic_write(png, output_png())
    before = dict(os.environ)
    instances = dict(getattr(Visualizer, "_instance_dict", {}))
    push_to_backend("wandb", tmp_path, [("a", png)], "cam")
    assert dict(os.environ) == before
    assert calls and calls[0]["mode"] == "offline" and calls[0]["project"] == "visctl"
    assert dict(getattr(Visualizer, "_instance_dict", {})) == instances  # no visualizer left registered

    calls.clear()
    monkeypatch.setenv("WANDB_MODE", "online")  # the user's own wandb setup wins
    push_to_backend("wandb", tmp_path, [("a", png)], "cam")
    assert calls and "mode" not in calls[0] and os.environ["WANDB_MODE"] == "online"


def output_png() -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", make_scene(1, size=32).image[..., ::-1])
    assert ok
    return buf.tobytes()


def test_grad_cam_bars_are_off_and_the_tqdm_class_is_untouched():
    import pytorch_grad_cam.score_cam as score_cam
    import tqdm

    from visctl.cams import library_calls

    init = vars(tqdm.tqdm)["__init__"]
    with library_calls():
        assert vars(tqdm.tqdm)["__init__"] is init
        assert tqdm.tqdm(range(3)).disable is False  # anyone else's bars still show
        assert score_cam.tqdm.tqdm(range(3)).disable is True  # grad-cam's are off
    assert score_cam.tqdm is tqdm  # restored


@pytest.mark.parametrize("step", [dict(type="RandomResizedCrop", size=24), dict(type="ColorJitter", brightness=0.5),
                                  dict(type="RandomRotation", degrees=30)])
def test_a_seeded_torchvision_step_leaves_torchs_random_state_alone(step):
    img = make_scene(2, size=(40, 50)).image
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = transforms.run_pipeline(img, [step], np.random.default_rng(5)).img
    assert torch.equal(torch.random.get_rng_state(), state)
    again = transforms.run_pipeline(img, [step], np.random.default_rng(5)).img
    np.testing.assert_array_equal(first, again)  # the step still repeats under the same seed
