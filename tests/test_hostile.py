"""Hostile and broken inputs (issue 14): data never runs code, a bad image never sinks a batch, pages show
names as text, a foreign manifest never breaks a run. Parametrized by command where it applies: a new
command that reads images inherits the image cases (and fails until it has a command line below)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import DEMO_CFG, ROOT, chromium_driver, manifest

from visctl.errors import ModelError

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"


def _commands_with(option: str | None) -> list[str]:
    """The commands of the CLI that declare ``option`` (all of them for None)."""
    import typer.main

    from visctl.cli import app

    group = typer.main.get_command(app)
    return sorted(name for name, cmd in group.commands.items()  # type: ignore[attr-defined]
                  if option is None or any(option in p.opts for p in cmd.params))


IMAGE_COMMANDS = _commands_with("--max-pixels")
MODEL_COMMANDS = _commands_with("--unsafe-load-checkpoint")  # the commands that build a model from a config


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb: 66 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16 x 16 JPEG whose SOF0 header is rewritten to claim ``width x height``."""
    import cv2
    import numpy as np

    data = bytearray(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _command_line(command: str, folder: Path, data_cfg: Path) -> list:
    lines = {
        "cam": ["cam", folder, DEMO_CFG],
        "featmap": ["featmap", folder, DEMO_CFG],
        "boxam": ["boxam", folder, DET_CFG],
        "slice": ["slice", folder, DET_CFG, "--patch-size", "64"],
        "recon": ["recon", folder, MAE_CFG],
        "pipeline": ["pipeline", data_cfg, "--number", "-1", "--mode", "original"],
        "browse": ["browse", data_cfg, "--number", "-1"],
        "tsne": ["tsne", data_cfg, "--method", "pca"],
        "audit": ["audit", DEMO_CFG, "--data", folder],
    }
    assert command in lines, f"add a command line for {command} to test_hostile._command_line"
    return lines[command]


@pytest.fixture
def bombs(tmp_path):
    """Eight good images in class folders, plus a 66-byte PNG and a JPEG claiming 100000 x 100000 and
    65000 x 65000 pixels; and a config whose datasets read that folder."""
    from visctl.shapes import write_scenes

    folder = tmp_path / "imgs"
    write_scenes(folder, range(100_000, 100_008))
    (folder / "circle" / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    (folder / "square" / "bomb.jpg").write_bytes(_jpeg_claiming(65_000, 65_000))
    cfg = tmp_path / "data_cfg.py"
    cfg.write_text(f"_base_ = [{str(DEMO_CFG)!r}]\n"
                   f"train_dataloader = dict(dataset=dict(data_root={str(folder)!r}))\n"
                   f"test_dataloader = dict(dataset=dict(data_root={str(folder)!r}))\n")
    return folder, cfg


# -- 1. YAML is data ---------------------------------------------------------------------------------

PYTHON_TAGS = ["!!python/object/apply:os.system [{cmd!r}]", "!!python/object/new:os.system [{cmd!r}]",
               "!!python/name:os.system", "!!python/module:os"]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
@pytest.mark.parametrize("how", ["top", "yaml base", "python config's yaml base"])
def test_yaml_python_tags_never_run(invoke, image_file, tmp_path, tag, how):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.yaml"
    evil.write_text("model:\n  type: torchvision.resnet18\npwn: " + tag.format(cmd=f"touch {marker}") + "\n")
    cfg = evil
    if how == "yaml base":
        cfg = tmp_path / "child.yaml"
        cfg.write_text("_base_: [evil.yaml]\nclasses: [a, b]\n")
    elif how == "python config's yaml base":
        cfg = tmp_path / "child.py"
        cfg.write_text("_base_ = ['evil.yaml']\n")
    result = invoke("cam", image_file, cfg, "-o", tmp_path / "out")
    assert not marker.exists()
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "YAML tag !!python/" in errors[0] and "refused" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_yaml_and_json_bases_still_inherit_as_in_mmengine(tmp_path):
    """A benign YAML/JSON chain reads exactly as mmengine's own Config.fromfile reads it."""
    from mmengine.config import Config

    from visctl.config import load_config

    (tmp_path / "base.yaml").write_text("model:\n  type: torchvision.resnet18\n  num_classes: 10\n"
                                        "classes: [a, b]\nscale: !!python/tuple [224, 224]\n"
                                        "test_pipeline:\n  - {type: Resize, scale: 64}\n")
    (tmp_path / "child.yaml").write_text("_base_: [base.yaml]\nmodel:\n  num_classes: 3\n")
    (tmp_path / "child.json").write_text(json.dumps({"_base_": ["child.yaml"], "classes": ["x", "y", "z"]}))
    (tmp_path / "child.py").write_text("_base_ = ['child.json']\nmodel = dict(num_classes=5)\n")
    for name in ("child.yaml", "child.json", "child.py"):
        ours = load_config(str(tmp_path / name)).to_dict()
        assert ours == Config.fromfile(str(tmp_path / name)).to_dict(), name
    cfg = load_config(str(tmp_path / "child.json"))
    assert cfg.model.num_classes == 3 and cfg.classes == ["x", "y", "z"] and cfg.scale == (224, 224)


@pytest.mark.parametrize("text, reason", [
    ("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")), "alias bomb"),
    ("a: &a [1, *a]\n", "contains itself"),
    ("a: !custom 1\n", "YAML tag !custom"),
])
def test_hostile_yaml_structures_are_one_error(invoke, image_file, tmp_path, text, reason):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    result = invoke("cam", image_file, cfg, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert reason in result.stderr and result.stderr.count("error:") == 1


def test_custom_imports_never_name_the_standard_library(invoke, image_file, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": {"type": "torchvision.resnet18"}, "custom_imports": {"imports": ["antigravity"]}}))
    result = invoke("cam", image_file, cfg, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "standard library" in result.stderr
    assert "antigravity" not in sys.modules


# -- 2. a model type builds a model ------------------------------------------------------------------

def _route(route: str, tmp_path: Path, marker: Path) -> tuple[list[str], list[str]]:
    """(config argument, extra options) that name os:system with ``touch MARKER`` by one route."""
    cmd = f"touch {marker}"
    if route == "py":
        (tmp_path / "m.py").write_text(f"model = dict(type='os:system', command={cmd!r})\n")
        return [str(tmp_path / "m.py")], []
    if route == "json":
        (tmp_path / "m.json").write_text(json.dumps({"model": {"type": "os:system", "command": cmd}}))
        return [str(tmp_path / "m.json")], []
    if route == "yaml":
        (tmp_path / "m.yaml").write_text(f"model:\n  type: 'os:system'\n  command: {cmd}\n")
        return [str(tmp_path / "m.yaml")], []
    if route == "cfg-options":
        return ["torchvision.resnet18"], ["--cfg-options", "model.type=os:system", f"model.command={cmd}"]
    if route == "registry":  # an OpenMMLab scope resolves dotted names by import
        return ["torchvision.resnet18"], ["--cfg-options", "default_scope=mmengine", "model.type=os.system",
                                          f"model.command={cmd}"]
    raise AssertionError(route)


@pytest.mark.parametrize("route", ["py", "json", "yaml", "cfg-options", "registry"])
@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_model_type_os_system_never_runs(invoke, image_file, tmp_path, route, command):
    marker = tmp_path / "MARKER"
    cfg, extra = _route(route, tmp_path, marker)
    args = ([command, *cfg] if command == "tsne" else [command, *cfg, "--data", image_file.parent.parent]
            if command == "audit" else [command, image_file, *cfg])
    result = invoke(*args, *extra, "-o", tmp_path / "out")
    assert not marker.exists()
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model type" in errors[0] and "standard library" in errors[0], result.stderr


def test_lr_paramwise_model_refused_without_running(invoke, tmp_path):
    """lr builds the model only for paramwise_cfg; a refused one falls back to stand-in parameters."""
    marker = tmp_path / "MARKER"
    cfg = tmp_path / "lr.json"
    cfg.write_text(json.dumps({
        "model": {"type": "os:system", "command": f"touch {marker}"},
        "optim_wrapper": {"optimizer": {"type": "SGD", "lr": 0.1, "weight_decay": 1e-4},
                          "paramwise_cfg": {"norm_decay_mult": 0.0}},
        "param_scheduler": {"type": "MultiStepLR", "milestones": [1], "by_epoch": True},
        "train_cfg": {"by_epoch": True, "max_epochs": 2}}))
    result = invoke("lr", cfg, "-d", "8", "--batch-size", "4", "-o", tmp_path / "out")
    assert not marker.exists()
    assert result.exit_code == 0, result.output
    assert "stand-in" in result.stderr and "standard library" in result.stderr


def test_lr_optim_wrapper_constructor_is_a_registered_name(invoke, tmp_path):
    marker = tmp_path / "MARKER"
    cfg = tmp_path / "lr.json"
    cfg.write_text(json.dumps({
        "optim_wrapper": {"optimizer": {"type": "SGD", "lr": 0.1}, "constructor": "os.system"},
        "param_scheduler": {"type": "MultiStepLR", "milestones": [1], "by_epoch": True},
        "train_cfg": {"by_epoch": True, "max_epochs": 2}}))
    result = invoke("lr", cfg, "-d", "8", "--batch-size", "4", "-o", tmp_path / "out")
    assert not marker.exists()
    assert result.exit_code == 2 and "unknown optim_wrapper constructor 'os.system'" in result.stderr


@pytest.mark.parametrize("spec, says", [
    ("posix:system", "standard library"), ("builtins:exec", "standard library"),
    ("subprocess:Popen", "standard library"), ("antigravity:x", "standard library"),
    ("torch.hub:load", "torch is not model code"), ("torch:load", "torch is not model code"),
    ("torch.utils.cpp_extension:load_inline", "torch is not model code"),
    ("mmengine.hub:get_model", "mmengine is not model code"), ("numpy:load", "numpy is not model code"),
    ("torchvision.datasets.utils:download_url", "not model code"), ("torchvision.io:write_file", "not model code"),
    ("visctl.output.files:atomic_write", "not model code"), ("mmengine.config:Config", "not a torch.nn.Module"),
])
def test_import_paths_that_build_no_model_are_refused_before_the_call(spec, says):
    from visctl.building import build_model

    with pytest.raises(ModelError, match=says):
        build_model(dict(type=spec, path="/nonexistent"))
    assert "antigravity" not in sys.modules


@pytest.mark.parametrize("spec", ["visctl.demo_models:shapes_classifier", "visctl.mim_models:mae_vit",
                                  "torchvision.models:resnet18", "torchvision.models.resnet:ResNet18_Weights",
                                  "tiny_models:TupleNet", "timm:create_model"])
def test_model_code_still_builds(spec):
    """Classes and factories of model code (lazy `from torch import nn` included) build as before."""
    from torch import nn

    from visctl.building import build_model

    kwargs = {"timm:create_model": dict(model_name="resnet10t"), "visctl.mim_models:mae_vit": dict(
        img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1,
        decoder_num_heads=2)}.get(spec, {})
    if spec.endswith("_Weights"):  # an enum class, not a module: refused before anything is called
        with pytest.raises(ModelError, match="not a torch.nn.Module"):
            build_model(dict(type=spec))
        return
    assert isinstance(build_model(dict(type=spec, **kwargs)), nn.Module)


def test_nested_registry_parts_are_checked_too(tmp_path):
    """An OpenMMLab model building a part from a nested dict goes through the same check."""
    from mmengine.registry import MODELS
    from torch import nn

    from visctl.building import build_model

    class Wrapper(nn.Module):
        def __init__(self, inner: dict) -> None:
            super().__init__()
            self.inner = MODELS.build(inner)

    MODELS.register_module(name="VisctlTestWrapper", module=Wrapper, force=True)
    marker = tmp_path / "MARKER"
    try:
        with pytest.raises(ModelError, match="standard library"):
            build_model(dict(type="VisctlTestWrapper", inner=dict(type="os.system", command=f"touch {marker}")),
                        "mmengine")
        assert not marker.exists()
        built = build_model(dict(type="VisctlTestWrapper", inner=dict(type="torch.nn.Linear", in_features=2,
                                                                       out_features=3)), "mmengine")
        assert isinstance(built.inner, nn.Linear)
    finally:
        MODELS._module_dict.pop("VisctlTestWrapper", None)


# -- 5. decompression bombs and the pixel budget -------------------------------------------------------

def test_every_image_command_has_the_pixel_budget():
    assert set(IMAGE_COMMANDS) == set(_commands_with(None)) - {"lr", "demo", "doctor"}  # no images read


@pytest.mark.parametrize("command", IMAGE_COMMANDS)
def test_bombs_are_skipped_and_listed_and_the_rest_finish(invoke, bombs, tmp_path, command):
    folder, data_cfg = bombs
    out = tmp_path / "out"
    result = invoke(*_command_line(command, folder, data_cfg), "-o", out)
    assert result.exit_code == 1, result.output
    m = manifest(out)
    failed = {Path(f["path"]).name: f["error"] for f in m["failures"]}
    assert set(failed) == {"bomb.png", "bomb.jpg"}, m["failures"]
    assert "100000 x 100000" in failed["bomb.png"] and "--max-pixels" in failed["bomb.png"]
    assert "65000 x 65000" in failed["bomb.jpg"]
    assert m["outputs"] and m["params"]["max_pixels"] > 0
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", IMAGE_COMMANDS)
def test_max_pixels_refuses_images_over_a_smaller_budget(invoke, bombs, tmp_path, command):
    """80 x 80 images are 6400 pixels: a budget of 6000 refuses every one of them, 6400 none."""
    folder, data_cfg = bombs
    for name in ("circle/bomb.png", "square/bomb.jpg"):
        (folder / name).unlink()
    result = invoke(*_command_line(command, folder, data_cfg), "--max-pixels", "6400", "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    result = invoke(*_command_line(command, folder, data_cfg), "--max-pixels", "6000", "-o", tmp_path / "b")
    assert result.exit_code in (1, 2), result.output  # every input failed: partial, or nothing to do
    assert "80 x 80 pixels" in result.stderr


def test_a_bomb_is_never_decoded(tmp_path, monkeypatch):
    import cv2

    from visctl import images

    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(images.ImageTooLarge, match="100000 x 100000"):
        images.read_image(path)
    assert calls == []


def test_opencv_refusal_without_a_readable_header_is_an_input_error(tmp_path, monkeypatch):
    """Where PIL cannot read the header, OpenCV's own limit (cv2.error) becomes a skipped input."""
    from visctl import images
    from visctl.errors import InputError

    monkeypatch.setattr(images, "image_size", lambda path: None)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(InputError, match="OpenCV refuses it"):
        images.read_image(path)


def test_images_beyond_opencvs_limit_decode_through_pil_within_the_budget(tmp_path, monkeypatch):
    """slice's use: a budget above OpenCV's limit decodes the image with PIL, the same pixels."""
    import cv2
    import numpy as np

    from visctl import images

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    monkeypatch.setattr(images, "_opencv_pixel_limit", lambda: 1000)  # as if the image were beyond it
    np.testing.assert_array_equal(images.read_image(path, max_pixels=10_000), rgb)


def _peak_rss_mb(args: list, cwd: Path) -> float:
    # VmHWM, the peak of this process's own memory: ru_maxrss survives fork+exec on Linux, so it would report
    # the (large) pytest process that started it
    code = ("import runpy, sys\nsys.argv = ['visctl'] + sys.argv[1:]\nstatus = 0\n"
            "try:\n    runpy.run_module('visctl', run_name='__main__')\nexcept SystemExit as e:\n    status = e.code\n"
            "hwm = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0]\n"
            "print('PEAK', hwm, file=sys.stderr)\nsys.exit(status)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                         env=env)
    assert run.returncode in (0, 1), run.stderr
    return int(run.stderr.rsplit("PEAK", 1)[1].split()[0]) / 1024


def test_featmap_memory_stays_bounded_by_the_budget(tmp_path):
    """A 3000 x 3000 PNG (9 MP, 20 KB) over a 1 MP budget costs featmap nothing; within the budget it costs
    hundreds of MB (so the measurement can tell)."""
    import cv2
    import numpy as np

    from visctl.shapes import write_scenes

    small = tmp_path / "small"
    write_scenes(small, range(100_000, 100_001))
    big = tmp_path / "big"
    big.mkdir()
    for p in small.rglob("*.png"):
        (big / p.name).write_bytes(p.read_bytes())
    cv2.imwrite(str(big / "huge.png"), np.full((3000, 3000, 3), 90, np.uint8))
    line = ["featmap", "--max-pixels", "1000000", "-q", "-o"]
    base = _peak_rss_mb([*line, tmp_path / "o1", small, DEMO_CFG], tmp_path)
    refused = _peak_rss_mb([*line, tmp_path / "o2", big, DEMO_CFG], tmp_path)
    allowed = _peak_rss_mb(["featmap", "-q", "-o", tmp_path / "o3", big, DEMO_CFG], tmp_path)
    assert refused - base < 40, (base, refused)
    assert allowed - base > 100, (base, allowed)


# -- 12. foreign manifests under visctl-out --------------------------------------------------------------

FOREIGN = {
    "not-json": b"{nope",
    "empty": b"",
    "bad-utf8": b"\xff\xfe\x00",
    "a-list": b"[1, 2]",
    "no-command": json.dumps({"outputs": []}).encode(),
    "command-not-str": json.dumps({"command": 3, "outputs": [], "params": {}}).encode(),
    "outputs-not-list": json.dumps({"command": "x", "outputs": 5, "params": {}}).encode(),
    "bad-entries": json.dumps({"command": "other", "params": {}, "outputs": [3, {"kind": "image"},
                                                                            {"path": "a.png", "kind": "image"}]}).encode(),
}


def test_foreign_manifests_never_break_a_default_output_run(invoke, image_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, data in FOREIGN.items():
        (tmp_path / "visctl-out" / name).mkdir(parents=True)
        (tmp_path / "visctl-out" / name / "manifest.json").write_bytes(data)
    result = invoke("cam", image_file, DEMO_CFG)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "visctl-out" / "index.html").read_text()
    assert 'href="cam/index.html"' in page
    assert 'href="bad-entries/a.png"' in page  # what can be read is listed
    for name in FOREIGN:
        if name != "bad-entries":
            assert f'href="{name}/index.html"' not in page, name


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_index_manifest_skips_what_it_cannot_read(tmp_path, name):
    from visctl.gallery import index_manifest

    path = tmp_path / "manifest.json"
    path.write_bytes(FOREIGN[name])
    doc = index_manifest(path)
    if name == "bad-entries":
        assert doc is not None and doc["outputs"] == [{"path": "a.png", "kind": "image"}]
    else:
        assert doc is None


# -- 4. every page treats names as text ---------------------------------------------------------------

HOSTILE_FILES = ["<img src=x onerror=window.__pwned=1>", '" onmouseover="window.__pwned=2" x="',
                 "<svg onload=window.__pwned=3>"]
HOSTILE_CLASSES = ["<img src=x onerror=window.__pwned=4>", "</script><script>window.__pwned=5</script>",
                   "' onmouseover='window.__pwned=6", "a&amp;b"]


def test_pages_built_from_hostile_names_run_no_script(invoke, tmp_path, monkeypatch):

    from visctl.shapes import write_scenes

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    scenes = write_scenes(tmp_path / "plain", range(100_000, 100_008))
    data.mkdir()
    lines = []
    for i, (path, _scene) in enumerate(scenes):
        name = f"{HOSTILE_FILES[i % len(HOSTILE_FILES)]}{i}.png"
        (data / name).write_bytes(path.read_bytes())
        lines.append(f"{name} {i % len(HOSTILE_CLASSES)}")
    (data / "ann.txt").write_text("\n".join(lines) + "\n")
    (data / f"{HOSTILE_FILES[0]}broken.png").write_bytes(b"not an image")  # listed under failures
    hostile_dir = tmp_path / HOSTILE_CLASSES[0]  # a folder named like a tag, holding images
    hostile_dir.mkdir()
    for i, (path, _) in enumerate(scenes[:2]):
        (hostile_dir / f"{HOSTILE_FILES[i]}.png").write_bytes(path.read_bytes())
    (hostile_dir / f"{HOSTILE_FILES[2]}.png").write_bytes(b"broken")
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"_base_ = [{str(DEMO_CFG)!r}]\nclasses = {HOSTILE_CLASSES!r}\n"
                   f"test_dataloader = dict(dataset=dict(type='CustomDataset', data_root={str(data)!r}, "
                   "ann_file='ann.txt', data_prefix='', classes=classes))\n")
    assert invoke("tsne", cfg, "--method", "pca").exit_code == 0
    assert invoke("cam", hostile_dir, DEMO_CFG).exit_code == 1  # the broken one failed
    assert invoke("browse", cfg, "--phase", "test", "--number", "8").exit_code == 0
    root = tmp_path / "visctl-out"
    pages = [root / "index.html", *sorted(root.glob("*/index.html")), *sorted(root.glob("tsne/tsne_*.html"))]
    assert len(pages) >= 5
    driver = chromium_driver()
    try:
        for page in pages:
            driver.get(page.as_uri())
            tips = driver.execute_script(
                "var out=[];document.querySelectorAll('circle').forEach(function(c){var r=c.getBoundingClientRect();"
                "c.dispatchEvent(new MouseEvent('mouseover',{clientX:r.x,clientY:r.y,bubbles:true}));"
                "c.dispatchEvent(new MouseEvent('mousemove',{clientX:r.x,clientY:r.y,bubbles:true}));"
                "out.push(document.getElementById('tip').textContent);});"
                "document.querySelectorAll('*').forEach(function(e){"
                "e.dispatchEvent(new MouseEvent('mouseover',{bubbles:true}));});return out;")
            import time

            time.sleep(0.5)  # let any injected onerror/onload fire
            assert driver.execute_script("return window.__pwned") is None, page
            assert "pwned" not in driver.title, page
            text = driver.execute_script("return document.body.innerText")
            if page.name.startswith("tsne_"):
                shown = " ".join(tips)
                for name in HOSTILE_CLASSES[:3] + HOSTILE_FILES:
                    assert name in shown, (page, name)  # shown as text in the tooltip
                assert HOSTILE_CLASSES[1] in text  # the legend, as text
            if page.parent.name == "cam" and page.name == "index.html":
                assert f"{HOSTILE_FILES[2]}.png" in text  # the failure, as text
    finally:
        driver.quit()
