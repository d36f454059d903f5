"""A plain ``pip install visctl`` (no extra): no mmengine, and perhaps no OpenCV.

Every command either runs (a model name, an import path, a config of plain values need neither mmengine nor
its registries) or ends with the one line that says what to install (doctor's fix, word for word), exit 2,
never a traceback. The missing packages are simulated in a fresh interpreter: an import hook refuses
``mmengine`` and ``cv2`` and pip's metadata does not list them, as in a venv that never had them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import DEMO_CFG, ROOT

from visctl.errors import LITE_FIX

EXAMPLES = ROOT / "examples"
DET_CFG = EXAMPLES / "demo_detector" / "config.py"
MAE_CFG = EXAMPLES / "demo_mae" / "config.py"

# runs in the child: refuse the blocked modules (as if never installed) and their distributions, then run
# each command line through the console script's own path, its stderr kept per command
CHILD = textwrap.dedent('''
    import contextlib, importlib.abc, importlib.metadata as md, io, json, os, sys, time
    BLOCKED = tuple(json.loads(sys.argv[1]))
    DISTS = {"mmengine": ("mmengine", "mmengine-lite"),
             "cv2": ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                     "opencv-contrib-python-headless")}

    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Absent())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    hidden = {d for m in BLOCKED for d in DISTS[m]}
    real = md.version
    def version(name):
        if name.lower() in hidden:
            raise md.PackageNotFoundError(name)
        return real(name)
    md.version = version

    from visctl.cli import run
    out = []
    for argv in json.loads(sys.argv[2]):
        err, std, started = io.StringIO(), io.StringIO(), time.time()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            try:
                code = run(argv)
            except SystemExit as exc:
                code = exc.code
        out.append(dict(argv=argv, code=code, stderr=err.getvalue(), seconds=round(time.time() - started, 1)))
    print("RESULTS" + json.dumps(out))
''')


def _run(blocked: list[str], commands: list[list[str]], cwd: Path) -> list[dict]:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "120", "MPLBACKEND": "Agg",
           "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(blocked), json.dumps(commands)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(line[len("RESULTS"):])


def _says_what_to_install(result: dict, module: str) -> bool:
    """Exit 2 with one error line naming the module and the fix, a hint, and no traceback."""
    errors = [ln for ln in result["stderr"].splitlines() if ln.startswith("error:")]
    label = {"mmengine": "mmengine", "cv2": "OpenCV"}[module]
    return (result["code"] == 2 and len(errors) == 1 and f"needs {label} ({LITE_FIX})" in errors[0]
            and "hint:" in result["stderr"] and "Traceback" not in result["stderr"])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    from visctl.shapes import make_scene, write_scenes

    root = tmp_path_factory.mktemp("plain")
    write_scenes(root / "data", range(100_000, 100_016))
    Image.fromarray(make_scene(100_001, 96, 1).image).save(root / "img.png")
    (root / "scenes").mkdir()
    Image.fromarray(make_scene(200_000, 128, 3, 10, 36).image).save(root / "scenes" / "a.png")
    Image.fromarray(make_scene(7, (256, 384), n_objects=8, min_side=12, max_side=28).image).save(root / "big.png")
    (root / "plain.py").write_text(textwrap.dedent('''\
        """A config of plain values: read without running it."""
        depth = 18
        model = dict(type=f'torchvision.resnet{depth}', num_classes=2 * 2)
        classes = ['circle', 'square', 'triangle', 'cross']
        test_pipeline = [dict(type='Resize', scale=(64, 64)), dict(type='PackInputs')]
        visctl = dict(target_layers=['layer3'])
    '''))
    (root / "plain.json").write_text(json.dumps({"model": {"type": "torchvision.models:resnet18", "num_classes": 3}}))
    (root / "plain.yaml").write_text("model:\n  type: resnet18\n  num_classes: 3\nclasses: [a, b, c]\n")
    (root / "based.py").write_text("_base_ = ['plain.py']\n")
    (root / "code.py").write_text("import os\nmodel = dict(type='resnet18')\n")
    return dict(root=root, img=root / "img.png", data=root / "data", scenes=root / "scenes", big=root / "big.png",
                plain_py=root / "plain.py", plain_json=root / "plain.json", plain_yaml=root / "plain.yaml",
                based=root / "based.py", code=root / "code.py")


def _commands(i: dict[str, Path]) -> dict[str, list[str]]:
    out = str(i["root"] / "out")
    train = f"train_dataloader.dataset.data_root={i['data']}"
    return {
        "cam-name": ["cam", str(i["img"]), "torchvision.resnet18", "-o", f"{out}/1", "--quiet"],
        "cam-import-path": ["cam", str(i["img"]), "torchvision.models:resnet18", "-o", f"{out}/2", "--quiet"],
        "cam-plain-py": ["cam", str(i["img"]), str(i["plain_py"]), "-o", f"{out}/3", "--quiet",
                         "--cfg-options", "model.num_classes=2", "classes=[a,b]"],
        "cam-json": ["cam", str(i["img"]), str(i["plain_json"]), "-o", f"{out}/4", "--quiet"],
        "cam-yaml": ["cam", str(i["img"]), str(i["plain_yaml"]), "-o", f"{out}/5", "--quiet"],
        "cam-demo": ["cam", str(i["img"]), str(DEMO_CFG), "-o", f"{out}/6", "--quiet", "--method", "gradcam,eigencam"],
        "featmap": ["featmap", str(i["img"]), str(DEMO_CFG), "-o", f"{out}/7", "--quiet"],
        "boxam": ["boxam", str(i["scenes"]), str(DET_CFG), "-o", f"{out}/8", "--quiet"],
        "slice": ["slice", str(i["big"]), str(DET_CFG), "--patch-size", "128", "-o", f"{out}/9", "--quiet"],
        "recon": ["recon", str(i["img"]), str(MAE_CFG), "-o", f"{out}/10", "--quiet"],
        "tsne": ["tsne", str(DEMO_CFG), "--method", "pca", "-o", f"{out}/11", "--quiet",
                 "--cfg-options", f"test_dataloader.dataset.data_root={i['data']}"],
        "pipeline": ["pipeline", str(DEMO_CFG), "-o", f"{out}/12", "--quiet", "--number", "2", "--cfg-options", train],
        "browse": ["browse", str(DEMO_CFG), "-o", f"{out}/13", "--quiet", "--number", "2", "--cfg-options", train],
        # only mmengine reads these: the one line
        "lr": ["lr", str(DEMO_CFG), "--dataset-size", "100", "-o", f"{out}/14", "--quiet"],
        "cam-base": ["cam", str(i["img"]), str(i["based"]), "-o", f"{out}/15", "--quiet"],
        "cam-code": ["cam", str(i["img"]), str(i["code"]), "-o", f"{out}/16", "--quiet"],
        "checkpoint-url": ["cam", str(i["img"]), "torchvision.resnet18", "https://example.invalid/w.pth",
                           "-o", f"{out}/17", "--quiet"],
        "demo": ["demo", "-o", f"{out}/demo", "--images", "4", "--quiet"],
        "doctor": ["doctor", "--json"],
    }


NEEDS_MMENGINE = {"lr", "cam-base", "cam-code", "checkpoint-url"}
DEMO_COVERS = {"cam-demo", "boxam", "slice", "recon", "tsne", "pipeline", "browse"}


def test_without_mmengine_every_command_runs_or_says_what_to_install(inputs):
    """What pip installs without an extra (grad-cam brings OpenCV): the commands that can run, run."""
    # demo runs boxam, slice, recon, tsne, pipeline and browse on the demo configs through the library
    commands = {k: v for k, v in _commands(inputs).items() if k not in DEMO_COVERS}
    results = dict(zip(commands, _run(["mmengine"], list(commands.values()), inputs["root"])))
    for name, result in results.items():
        assert "Traceback" not in result["stderr"] and "internal error" not in result["stderr"], (name, result)
        if name in NEEDS_MMENGINE:
            assert _says_what_to_install(result, "mmengine"), (name, result)
        elif name == "doctor":
            assert result["code"] == 1
        elif name == "demo":  # every step but lr, which says why it was left out
            assert result["code"] == 0, result
            assert f"warning: lr left out: mmengine is not installed; visctl lr needs mmengine ({LITE_FIX})" \
                in result["stderr"], result["stderr"]
            assert sorted(p.name for p in (inputs["root"] / "out" / "demo").iterdir() if p.is_dir()) == [
                "boxam", "browse", "cam", "cam-score", "cam-segmentation", "data", "data-tsne", "featmap", "mae",
                "pipeline", "recon", "scenes", "seg", "slice", "tsne"]
        else:
            assert result["code"] == 0, (name, result)
    plain = json.loads((inputs["root"] / "out" / "3" / "manifest.json").read_text())["runs"][-1]
    assert plain["status"] == "ok" and plain["outputs"], plain  # the plain .py config, with its --cfg-options


def test_without_mmengine_and_opencv_nothing_ends_in_a_traceback(inputs):
    commands = _commands(inputs)
    results = dict(zip(commands, _run(["mmengine", "cv2"], list(commands.values()), inputs["root"])))
    for name, result in results.items():
        if name == "doctor":
            assert result["code"] == 1 and "Traceback" not in result["stderr"], result
            continue
        assert result["code"] == 0 or _says_what_to_install(result, "cv2") or _says_what_to_install(result, "mmengine"), \
            (name, result)
        assert "Traceback" not in result["stderr"] and "internal error" not in result["stderr"], (name, result)
    assert _says_what_to_install(results["lr"], "mmengine")


def test_doctor_gives_the_same_fix_as_the_commands(inputs):
    """The fix doctor prints for a missing mmengine and OpenCV is the one every command's error line carries."""
    from visctl import environment

    real = environment._module_present
    checks = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(environment, "_module_present", lambda n: False if n in ("mmengine", "cv2") else real(n))
        mp.setattr(environment, "dist_version",
                   lambda d: None if d.startswith(("mmengine", "opencv")) else environment.metadata.version(d)
                   if _installed(d) else None)
        mp.setattr(environment, "cv2_gui", lambda: None)
        for check in environment._mmengine_checks() + environment._opencv_checks():
            checks[check.name] = check
    assert checks["mmengine"].status == "problem" and checks["mmengine"].fix == LITE_FIX
    assert checks["opencv"].status == "problem" and checks["opencv"].fix == LITE_FIX


def _installed(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


# ---- the plain reader: what mmengine's Config reads from the same file, and never any code ----------------


PLAIN_CONFIGS = {
    "literals.py": textwrap.dedent('''\
        """doc"""
        n = 3
        scale: int = 2 ** 6
        model = dict(type='torchvision.resnet18', num_classes=n * 2 - 1)
        base = dict(a=1, b=[1, 2, (3, 4)])
        merged = dict(**base, c=-1.5, d={'x': None, **base})
        data_root = 'data/'
        train_dataloader = dict(batch_size=4, dataset=dict(type='CustomDataset', data_root=f'{data_root}train',
                                                           pipeline=[dict(type='Resize', scale=(scale, scale))]))
        name = f'{n:03d}-{1 / 4!r}' + "x" * 3
        first = base['b'][2][-1]
        tail = [1, 2, 3][1:]
        work_dir = './work_dirs/{{ fileBasenameNoExtension }}'
        where = '{{ fileDirname }}/{{ fileBasename }}{{fileExtname}}'
        '''),
    "data.json": json.dumps({"model": {"type": "resnet18", "num_classes": 3}, "classes": ["a", "b", "c"],
                             "where": "{{ fileDirname }}"}),
    "data.yaml": "model:\n  type: resnet18\ntest_pipeline:\n  - type: Resize\n    scale: [64, 64]\n",
}


@pytest.mark.parametrize("name", list(PLAIN_CONFIGS))
def test_plain_reader_reads_what_mmengine_reads(tmp_path, name):
    from mmengine.config import Config

    from visctl.plain_config import read_config_file

    path = tmp_path / name
    path.write_text(PLAIN_CONFIGS[name])
    ours = read_config_file(str(path))
    theirs = Config.fromfile(str(path))
    assert ours.to_dict() == theirs.to_dict()
    options = {"model.num_classes": 7, "model.extra": [1, (2, 3)], "new.key": "v"}
    if name == "literals.py":
        options["train_dataloader.dataset.pipeline.0.scale"] = (32, 32)
    ours.merge_from_dict(dict(options))
    theirs.merge_from_dict(dict(options))
    assert ours.to_dict() == theirs.to_dict()
    assert ours.model.num_classes == 7 and ours.get("new").key == "v"  # attributes, as mmengine's ConfigDict


@pytest.mark.parametrize("value", ["1,2,3", "[a, b, c]", "[(1, 2, 3), [a, b], c]", "(1,[2,3])", "true", "None",
                                   "1e-3", "'quoted'", "x"])
def test_cfg_option_values_parse_as_mmengine_parses_them(value):
    from mmengine.config import DictAction

    from visctl import config

    assert config._parse_iterable(value) == DictAction._parse_iterable(value)


CODE = [
    "import os\nmodel = dict(type='resnet18')\n",
    "model = __import__('os').system('touch {marker}')\n",
    "model = open('{marker}', 'w')\n",
    "x = (1).__class__\n",
    "model = dict(type='resnet18', f=lambda: 1)\n",
    "model = [open('{marker}', 'w') for _ in range(1)]\n",
    "def f():\n    pass\n",
    "model = dict(type='resnet18')\nif True:\n    open('{marker}', 'w')\n",
    "dict = print\nmodel = dict('{marker}')\n",
    "_base_ = ['x.py']\n",
    "custom_imports = dict(imports=['json'])\n",
    "model = dict(type='{{{{ _base_.model.type }}}}')\n",
]


@pytest.mark.parametrize("source", CODE)
def test_plain_reader_never_runs_code(tmp_path, source, monkeypatch):
    """What only mmengine reads (it runs a Python config) is the one line that says to install it; the
    reader parses the file and runs nothing of it."""
    from visctl import environment
    from visctl.config import load_config
    from visctl.errors import VisctlError

    real = environment._module_present
    monkeypatch.setattr(environment, "_module_present", lambda n: False if n == "mmengine" else real(n))
    marker = tmp_path / "ran"
    path = tmp_path / "cfg.py"
    path.write_text(source.format(marker=marker))
    with pytest.raises(VisctlError) as info:
        load_config(str(path))
    assert not marker.exists()
    assert f"needs mmengine ({LITE_FIX})" in info.value.message or "dict" in source, info.value.message


def test_plain_reader_refuses_bombs(tmp_path):
    from visctl.errors import ConfigError
    from visctl.plain_config import read_config_file

    for source in ("x = 'a' * 10 ** 9\n", "x = 10 ** 10 ** 10\n", "x = [0] * 2 ** 40\n"):
        path = tmp_path / "bomb.py"
        path.write_text(source)
        with pytest.raises(ConfigError):
            read_config_file(str(path))


def test_featmap_overlay_without_mmengine_is_mmengine_s_pixel_for_pixel(monkeypatch):
    import numpy as np

    from visctl import config, render

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    fmap = rng.normal(size=(37, 53)).astype(np.float32) * 3 + 1
    theirs = render.mmengine_overlay(image, fmap, 0.4)
    monkeypatch.setattr(config, "mmengine_present", lambda: False)
    ours = render.mmengine_overlay(image, fmap, 0.4)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
