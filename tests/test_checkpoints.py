"""Checkpoints: mmengine training checkpoints load safely, code in a pickle never runs without the opt-in flag,
damaged files say why, and every command records the same load summary in the manifest and on stderr."""

from __future__ import annotations

import http.server
import json
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch
from conftest import DEMO_CFG, ROOT, manifest

from visctl import building, checkpoints
from visctl.errors import ModelError

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A real mmengine Runner trains the demo classifier 2 iterations; CheckpointHook writes epoch_1.pth.

    The config goes through ``Runner.from_cfg`` like ``tools/train.py``, so the dataset's metainfo is a
    ConfigDict in ``meta['dataset_meta']``; a hook adds the numpy values OpenMMLab checkpoints carry.
    """
    import numpy as np
    import torch.nn.functional as F
    from mmengine.config import Config
    from mmengine.dataset import BaseDataset
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.registry import DATASETS, HOOKS, MODELS
    from mmengine.runner import Runner

    from visctl.demo_models import shapes_classifier

    class Trainee(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            net = shapes_classifier(num_classes=4)
            self.backbone, self.neck, self.head = net.backbone, net.neck, net.head

        def forward(self, inputs, labels=None, mode="tensor", **_):
            logits = self.head(self.neck(self.backbone(inputs)))
            return dict(loss=F.cross_entropy(logits, labels)) if mode == "loss" else logits

    class Shapes(BaseDataset):
        def load_data_list(self):
            g = torch.Generator().manual_seed(0)
            return [dict(inputs=torch.randn(3, 32, 32, generator=g), labels=torch.tensor(i % 4)) for i in range(4)]

    class NumpyMeta(Hook):
        def before_save_checkpoint(self, runner, checkpoint):
            checkpoint["meta"].update(best_score=np.float64(0.75), best_epoch=np.int64(1), flags=np.array([1, 0]),
                                      dtype=np.dtype("float32"), dtype_class=type(np.dtype("float64")),
                                      scalar_type=np.float32)

    # registered by name: the Runner writes the config's text into the checkpoint, which needs plain values
    MODELS.register_module("VisctlTestTrainee", module=Trainee, force=True)
    DATASETS.register_module("VisctlTestShapes", module=Shapes, force=True)
    HOOKS.register_module("VisctlTestNumpyMeta", module=NumpyMeta, force=True)
    work = tmp_path_factory.mktemp("mmengine_run")
    cfg = Config(dict(
        model=dict(type="VisctlTestTrainee"), work_dir=str(work), log_level="WARNING", randomness=dict(seed=0),
        train_dataloader=dict(dataset=dict(type="VisctlTestShapes", serialize_data=False,
                                           metainfo=dict(classes=("circle", "square", "triangle", "cross"),
                                                         extra=dict(source="generated"))),
                              sampler=dict(type="DefaultSampler", shuffle=False), batch_size=2,
                              collate_fn=dict(type="default_collate")),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9)),
        param_scheduler=dict(type="MultiStepLR", milestones=[1]),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)),
        custom_hooks=[dict(type="VisctlTestNumpyMeta")]))
    runner = Runner.from_cfg(cfg)
    runner.train()
    return dict(path=work / "epoch_1.pth", state={k: v.detach().clone() for k, v in runner.model.state_dict().items()})


def test_mmengine_training_checkpoint_loads_safely_and_exactly(trained):
    import numpy as np

    ckpt = torch.load(trained["path"], weights_only=False)  # the reference: what the Runner wrote
    assert {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"} <= set(ckpt)
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(trained["path"])))
    # what plain torch.load refuses, so the test proves the allow-list carries these
    assert {"mmengine.logging.history_buffer.HistoryBuffer", "mmengine.config.config.ConfigDict",
            "numpy.dtypes.Float64DType", "numpy.float32", "builtins.getattr"} <= unsafe
    with pytest.raises(pickle.UnpicklingError):
        torch.load(trained["path"], weights_only=True)

    model = building.build_model(dict(type="visctl.demo_models:shapes_classifier", num_classes=4))
    summary = checkpoints.load_checkpoint(model, str(trained["path"]))
    assert summary["loaded"] == summary["total"] == len(trained["state"])
    assert not summary["missing"] and not summary["unexpected"] and not summary["unsafe"]
    assert summary["classes"] == ["circle", "square", "triangle", "cross"]  # meta['dataset_meta']['classes']
    own = model.state_dict()
    for key, value in trained["state"].items():
        assert torch.equal(own[key], value), key
        assert torch.equal(own[key], ckpt["state_dict"][key]), key
    read, unsafe_used = checkpoints.read_checkpoint(str(trained["path"]))
    meta = read["meta"]
    assert not unsafe_used
    assert type(meta["best_score"]) is np.float64 and meta["best_score"] == 0.75
    assert meta["dtype"] == np.dtype("float32") and meta["dtype_class"] is type(np.dtype("float64"))
    assert meta["scalar_type"] is np.float32 and meta["flags"].tolist() == [1, 0]
    assert meta["dataset_meta"]["extra"] == {"source": "generated"}


def test_mmengine_checkpoint_through_the_cli(invoke, image_file, trained, tmp_path):
    result = invoke("cam", image_file, DEMO_CFG, trained["path"], "-o", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    n = len(trained["state"])
    line = f"checkpoint {trained['path']}: loaded {n}/{n} tensors; 0 missing; 0 unexpected"
    assert line in result.stderr.splitlines() and line in manifest(tmp_path / "o")["notes"]


def test_class_names_from_the_checkpoints_meta(invoke, image_file, trained, tmp_path):
    """A Runner's checkpoint carries the dataset's classes in meta['dataset_meta'] (mmpretrain's init_model
    copies them to model.dataset_meta): a config without classes still captions with names."""
    cfg = tmp_path / "bare.py"
    cfg.write_text("model = dict(type='visctl.demo_models:shapes_classifier', num_classes=4)\n")
    result = invoke("cam", image_file, cfg, trained["path"], "-c", "2", "-c", "cross", "--json", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["inputs"][0]["targets"] == ["class 2 triangle", "class 3 cross"]
    assert "class names: the checkpoint's meta (4)" in doc["notes"]


class _Payload:
    """Unpickling it runs code: ``func(*args)``, the way every pickle exploit works."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil_checkpoint(tmp_path: Path, payload: _Payload) -> Path:
    src = building.build_model(dict(type="visctl.demo_models:shapes_classifier", num_classes=4))
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": src.state_dict(), "meta": {"note": payload}}, path)
    return path


@pytest.mark.parametrize("how, refused", [("os.system", "posix.system"), ("exec", "builtins.exec")])
def test_code_in_a_pickle_runs_only_with_the_opt_in_flag(invoke, image_file, tmp_path, how, refused):
    if os.name != "posix":
        pytest.skip("the payload uses a POSIX shell")
    marker = tmp_path / "pwned"
    payload = (_Payload(os.system, f"touch {marker}") if how == "os.system"
               else _Payload(exec, f"open({str(marker)!r}, 'w').close()"))
    evil = _evil_checkpoint(tmp_path, payload)
    result = invoke("cam", image_file, DEMO_CFG, evil, "-o", tmp_path / "safe")
    assert result.exit_code == 2
    assert not marker.exists()
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(evil) in errors[0] and refused in errors[0], result.stderr
    assert "--unsafe-load-checkpoint" in result.stderr
    assert "\x1b[" not in result.stderr and "Traceback" not in result.stderr
    assert "is it a PyTorch checkpoint" not in result.stderr and "WeightsUnpickler" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # error: + hint:

    result = invoke("cam", image_file, DEMO_CFG, evil, "--unsafe-load-checkpoint", "-o", tmp_path / "unsafe")
    assert result.exit_code == 0, result.stderr
    assert marker.exists()  # the flag does what its help says: it ran the file's code
    assert "full pickle load" in result.stderr
    assert any("read by a full pickle load" in n for n in manifest(tmp_path / "unsafe")["notes"])


def test_getattr_is_allowed_for_the_training_log_only(tmp_path):
    import collections

    # a general getattr would reach __globals__/__builtins__ and from there eval
    evil = _evil_checkpoint(tmp_path, _Payload(getattr, collections.OrderedDict, "fromkeys"))
    model = building.build_model(dict(type="visctl.demo_models:shapes_classifier", num_classes=4))
    with pytest.raises(ModelError, match=r"needs getattr\(OrderedDict, 'fromkeys'\), which safe loading refuses"):
        checkpoints.load_checkpoint(model, str(evil))


@pytest.mark.parametrize("content, reason", [
    (b"", "is empty (0 bytes)"),
    ("truncated", "is cut off"),
    (b"hello, not a checkpoint", "is not a PyTorch checkpoint"),
    ("legacy-truncated-tail", "is damaged"),
    ("legacy-truncated-head", "ends early"),
])
def test_damaged_files_say_why(tmp_path, content, reason):
    path = tmp_path / "bad.pth"
    if isinstance(content, str):
        good = tmp_path / "good.pth"
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, good,
                   _use_new_zipfile_serialization=content == "truncated")  # False: the torch < 1.6 format
        data = good.read_bytes()
        content = {"truncated": data[:1000], "legacy-truncated-tail": data[:-100],
                   "legacy-truncated-head": data[:100]}[content]
    path.write_bytes(content)
    model = building.build_model(dict(type="visctl.demo_models:shapes_classifier", num_classes=4))
    with pytest.raises(ModelError) as err:
        checkpoints.load_checkpoint(model, str(path))
    assert reason in err.value.message and str(path) in err.value.message
    assert not err.value.message.rstrip().endswith(":") and "\n" not in err.value.message
    assert "is it a PyTorch checkpoint" not in (err.value.hint or "")


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """A local HTTP server over tmp_path/www (no internet); torch.hub caches under tmp_path/hub."""
    www = tmp_path / "www"
    www.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_and_torchvision_sources_load_safely(http_root, tmp_path, monkeypatch, trained):
    import shutil

    import mmengine.runner.checkpoint as mm_ckpt

    www, url = http_root
    shutil.copy(trained["path"], www / "trained.pth")
    model = building.build_model(dict(type="visctl.demo_models:shapes_classifier", num_classes=4))
    summary = checkpoints.load_checkpoint(model, f"{url}/trained.pth")
    assert summary["loaded"] == summary["total"] and not summary["unsafe"]
    assert torch.equal(model.head.fc.weight, trained["state"]["head.fc.weight"])
    # torchvision://NAME goes through mmengine's model-name table to a URL
    monkeypatch.setattr(mm_ckpt, "get_torchvision_models", lambda: {"tiny": f"{url}/trained.pth"})
    summary = checkpoints.load_checkpoint(model, "torchvision://tiny")
    assert summary["loaded"] == summary["total"]
    # torch.hub loads URLs with weights_only=False by default: visctl's safe load must hold there too
    marker = tmp_path / "pwned"
    shutil.copy(_evil_checkpoint(tmp_path, _Payload(exec, f"open({str(marker)!r}, 'w').close()")), www / "evil.pth")
    with pytest.raises(ModelError, match="builtins.exec"):
        checkpoints.load_checkpoint(model, f"{url}/evil.pth")
    assert not marker.exists()


def _demo_line(cfg: Path, ckpt: str) -> str:
    # the demo checkpoints fit their models fully, so the summary is known without visctl
    n = len(torch.load(cfg.parent / ckpt, weights_only=True)["state_dict"])
    return f"checkpoint {cfg.parent / ckpt}: loaded {n}/{n} tensors; 0 missing; 0 unexpected"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from visctl.shapes import write_scenes

    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, range(100_000, 100_012))
    return root


COMMANDS = {
    "cam": (DEMO_CFG, "classifier.pth", lambda img, root: ["cam", img, DEMO_CFG]),
    "featmap": (DEMO_CFG, "classifier.pth", lambda img, root: ["featmap", img, DEMO_CFG]),
    "boxam": (DET_CFG, "detector.pth", lambda img, root: ["boxam", img, DET_CFG]),
    "slice": (DET_CFG, "detector.pth", lambda img, root: ["slice", img, DET_CFG, "--patch-size", "64"]),
    "tsne": (DEMO_CFG, "classifier.pth", lambda img, root: [
        "tsne", DEMO_CFG, "--cfg-options", f"test_dataloader.dataset.data_root={root}", "--method", "pca",
        "--max-num-samples-per-class", "2"]),
    "recon": (MAE_CFG, "mae.pth", lambda img, root: ["recon", img, MAE_CFG]),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_records_the_same_load_summary(invoke, scenes, tmp_path, command):
    cfg, ckpt, args = COMMANDS[command]
    image = next(scenes.rglob("*.png"))
    result = invoke(*args(image, scenes), "-o", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    line = _demo_line(cfg, ckpt)
    notes = [n for n in manifest(tmp_path / "o")["notes"] if n.startswith("checkpoint ")]
    assert notes == [line]
    assert result.stderr.splitlines().count(line) == 1


def test_json_manifest_carries_the_load_summary(invoke, scenes, tmp_path):
    import json

    result = invoke("recon", next(scenes.rglob("*.png")), MAE_CFG, "--json", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    assert _demo_line(MAE_CFG, "mae.pth") in json.loads(result.stdout)["notes"]


def test_featmap_compare_records_the_second_load_too(invoke, scenes, tmp_path):
    image = next(scenes.rglob("*.png"))
    result = invoke("featmap", image, DEMO_CFG, "--compare", DEMO_CFG, "-o", tmp_path / "o")
    assert result.exit_code == 0, result.stderr
    line = "compare: " + _demo_line(DEMO_CFG, "classifier.pth")
    assert line in manifest(tmp_path / "o")["notes"] and line in result.stderr.splitlines()
