"""``--backend`` (mmengine's vis backends) is checked before anything else: on a plain install without mmengine
the refusal comes first (one line saying what to install, exit 2), before any config, model, data or folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plain_install import _run, _says_what_to_install

from visctl.errors import DependencyError
from visctl.output import backends


@pytest.mark.parametrize("missing", ["mmengine", "cv2"])
def test_check_backend_needs_mmengine_and_opencv(monkeypatch, missing):
    real = backends._present
    monkeypatch.setattr(backends, "_present", lambda m: False if m == missing else real(m))
    with pytest.raises(DependencyError, match="--backend local") as info:
        backends.check_backend("local")
    assert info.value.missing == missing  # type: ignore[attr-defined]


def test_without_mmengine_backend_is_refused_before_the_model(tmp_path):
    from PIL import Image

    from visctl.shapes import make_scene

    Image.fromarray(make_scene(100_001, 64, 1).image).save(tmp_path / "img.png")
    out = tmp_path / "out"
    commands = {
        "cam": ["cam", str(tmp_path / "img.png"), "torchvision.resnet18", "--backend", "local", "-o", f"{out}/1"],
        "featmap": ["featmap", str(tmp_path / "img.png"), "torchvision.models:resnet18", "--backend", "tensorboard",
                    "-o", f"{out}/2"],
    }
    results = dict(zip(commands, _run(["mmengine"], list(commands.values()), tmp_path)))
    for name, result in results.items():
        assert _says_what_to_install(result, "mmengine"), (name, result)
        assert "--backend" in result["stderr"], result
        assert result["seconds"] < 5, result  # nothing was built
    assert not Path(out).exists()  # before the folder, the config and the model
