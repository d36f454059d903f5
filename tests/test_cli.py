"""The CLI shell: startup cost, version, help, completion, error reporting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "torchvision", "cv2", "mmengine", "pytorch_grad_cam", "timm", "matplotlib", "sklearn", "numpy")


def _loaded_after(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    code = (
        "import sys\n"
        f"sys.argv = {argv!r}\n"
        "from visctl.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})},
                         check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED")][-1]
    return eval(line.removeprefix("LOADED "))


COMMANDS = ("cam", "featmap", "boxam", "slice", "tsne", "recon", "pipeline", "browse", "lr", "demo", "audit")


def test_help_and_completion_import_no_heavy_module():
    assert _loaded_after(["visctl", "--help"]) == []
    for command in COMMANDS:
        assert _loaded_after(["visctl", command, "--help"]) == [], command
    env = {"_VISCTL_COMPLETE": "complete_bash", "COMP_WORDS": "visctl cam --method la", "COMP_CWORD": "3"}
    assert _loaded_after(["visctl"], env) == []


def test_import_visctl_and_its_version_import_no_heavy_module_and_no_cli():
    code = ("import sys\nimport visctl\nprint(visctl.__version__)\n"
            f"print('LOADED', sorted(m for m in {(*HEAVY, 'typer', 'rich', 'click')!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version, loaded = out.stdout.splitlines()[-2:]
    assert version == "0.1.0"
    assert eval(loaded.removeprefix("LOADED ")) == []


def test_version_and_module_entry():
    out = subprocess.run([sys.executable, "-m", "visctl", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("visctl ")


def test_cam_help_lists_seed_flags(invoke):
    result = invoke("cam", "--help")
    assert result.exit_code == 0
    for flag in ("--target-layers", "--preview-model", "--method", "--target-category", "--save-path",
                 "--vit-like", "--num-extra-tokens", "--aug-smooth", "--eigen-smooth", "--device", "--cfg-options",
                 "--threads", "--batch-size", "--json", "--save-raw"):
        assert flag in result.stdout, flag


def test_bash_completion_of_method_names():
    env = {**os.environ, "_VISCTL_COMPLETE": "complete_bash", "COMP_WORDS": "visctl cam --method la",
           "COMP_CWORD": "3"}
    out = subprocess.run(["visctl"], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["layercam"]


def test_completion_scripts_are_fresh():
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    for shell in ("bash", "zsh", "fish"):
        fresh = subprocess.run(["visctl", "--show-completion", shell], capture_output=True, text=True, env=env,
                               check=True).stdout
        stored = (ROOT / "completions" / f"visctl.{shell}").read_text()
        assert fresh == stored, f"completions/visctl.{shell} is stale: run completions/generate.sh"


def test_readme_help_block_is_fresh():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- help:start -->")[1].split("<!-- help:end -->")[0]
    fresh = subprocess.run(["visctl", "--help"], capture_output=True, text=True, check=True,
                           env={**os.environ, "COLUMNS": "100"}).stdout
    expected = f"\n```text\n$ visctl --help\n{fresh.rstrip()}\n```\n"
    assert block == expected, "README's help block is stale: paste `COLUMNS=100 visctl --help` into it"


def test_user_errors_exit_2_without_traceback(invoke, image_file, tmp_path):
    cfg = ROOT / "examples" / "demo_classifier" / "config.py"
    cases = [
        (["cam", tmp_path / "nope.jpg", cfg], "image not found"),
        (["cam", image_file, tmp_path / "nope.py"], "config file not found"),
        (["cam", image_file, cfg, "--method", "gradkam"], "unknown CAM method"),
        (["cam", image_file, cfg, "--target-layers", "backbone.layer9"], "no layer"),
        (["cam", image_file, cfg, "--target-category", "7"], "out of range"),
        (["cam", image_file, cfg, "--target-category", "hexagon"], "not a class"),
        (["cam", image_file, cfg, "--device", "cuda:3"], "--device"),
        (["cam", image_file, cfg, tmp_path / "missing.pth"], "checkpoint not found"),
    ]
    for args, needle in cases:
        result = invoke(*args, "-o", tmp_path / "out")
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.stderr, (args, result.stderr)
        assert "hint:" in result.stderr
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_mismatched_checkpoint_is_an_error(invoke, image_file, tmp_path):
    import torch
    import torchvision

    ckpt = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), ckpt)
    cfg = ROOT / "examples" / "demo_classifier" / "config.py"
    result = invoke("cam", image_file, cfg, ckpt, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "fits only 0 of the model's" in result.stderr
    # a rename would not help (another architecture): the hint does not suggest one
    assert "checkpoint_revise_keys" not in result.stderr and "other modules than the model's" in result.stderr


def test_debug_shows_traceback(invoke, tmp_path):
    result = invoke("cam", tmp_path / "nope.jpg", "torchvision.resnet18", "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    os.environ.pop("VISCTL_DEBUG", None)


def test_unknown_device_name_is_rejected(invoke, image_file):
    result = invoke("cam", image_file, "torchvision.resnet18", "--device", "tpu")
    assert result.exit_code == 2 and "unknown device" in result.stderr


def test_tensorboard_backend_gets_the_images(invoke, image_file, tmp_path):
    from conftest import DEMO_CFG
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    result = invoke("cam", image_file, DEMO_CFG, "--backend", "tensorboard", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    events = list((tmp_path / "vis_data").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent), size_guidance={IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()["images"]
    assert len(tags) == 1 and "cam" in tags[0]
    img = acc.Images(tags[0])[0]
    assert img.width > 100 and img.height > 100


def test_local_backend_and_unknown_backend(invoke, image_file, tmp_path):
    from conftest import DEMO_CFG

    result = invoke("cam", image_file, DEMO_CFG, "--backend", "local", "-o", tmp_path)
    assert result.exit_code == 0, result.output
    # mmengine's Visualizer adds vis_data to save_dir itself: one vis_data folder, not vis_data/vis_data
    pngs = list(tmp_path.rglob("vis_image/*.png"))
    assert len(pngs) == 1 and pngs[0].parent.parent == tmp_path / "vis_data", pngs
    assert not list(tmp_path.rglob("vis_data/**/vis_data"))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["backend"]["save_dir"] == str(tmp_path / "vis_data")
    bad = invoke("cam", image_file, DEMO_CFG, "--backend", "visdom", "-o", tmp_path / "x")
    assert bad.exit_code == 2 and "unknown --backend" in bad.stderr and "Traceback" not in bad.output


def test_every_command_is_registered_and_documented(invoke):
    readme = (ROOT / "README.md").read_text()
    listed = invoke("--help").stdout
    for command in COMMANDS:
        assert f"  {command} " in listed, command
        assert f"visctl {command}" in readme, f"README has no example of visctl {command}"
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.stdout, command


def test_a_crash_exits_3_with_its_traceback(invoke, image_file, tmp_path, monkeypatch):
    """A bug (any exception that is not a VisctlError) must not read as "some inputs failed" (exit 1)."""
    from conftest import DEMO_CFG

    from visctl import render

    def broken(*args, **kwargs):
        raise RuntimeError("boom in map_figure")

    monkeypatch.setattr(render, "map_figure", broken)
    result = invoke("cam", image_file, DEMO_CFG, "-o", tmp_path)
    assert result.exit_code == 3, result.output
    assert "Traceback" in result.stderr and "boom in map_figure" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("internal error: RuntimeError: boom in map_figure") and "please report" in last
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "crashed" and "boom" in manifest["error"]


def test_a_crash_outside_a_run_exits_3(monkeypatch, capsys):
    import pytest

    from visctl import environment
    from visctl.cli import main

    def broken():
        raise ValueError("boom in diagnose")

    monkeypatch.setattr(environment, "diagnose", broken)
    with pytest.raises(SystemExit) as exit_info:
        main(["doctor"])
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error: ValueError: boom in diagnose" in err


def test_every_option_of_every_command_has_help():
    import typer

    from visctl.cli import app

    group = typer.main.get_command(app)
    missing = [f"{name} {'/'.join(param.opts)}" for name, cmd in group.commands.items()  # type: ignore[attr-defined]
               for param in cmd.params if not getattr(param, "hidden", False)
               and not (getattr(param, "help", None) or "").strip()]
    assert len(group.commands) >= len(COMMANDS)  # type: ignore[attr-defined]
    assert missing == []
