"""The shared options, declared once (`visctl._options.shared`): every command keeps the ones it had, and they
reach the command as one frozen RunOptions with the values parsed from the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from visctl import _options as opt
from visctl.images import DEFAULT_MAX_PIXELS
from visctl.session import RunOptions

ALIASES = {"unsafe_load_checkpoint": ("--unsafe-load-checkpoint",), "device": ("--device",), "threads": ("--threads",),
           "batch_size": ("--batch-size", "--batch_size"), "cfg_options": ("--cfg-options", "--cfg_options"),
           "out_dir": ("--out-dir", "-o", "--output-dir"), "backend": ("--backend",), "show": ("--show",),
           "json_out": ("--json",), "quiet": ("--quiet", "-q"), "seed": ("--seed",), "debug": ("--debug",),
           "max_pixels": ("--max-pixels", "--max_pixels")}
MODEL = dict(unsafe_load_checkpoint=False, device="auto", threads=None, batch_size=16, cfg_options=None, out_dir=None,
             backend=None, show=False, json_out=False, quiet=False, seed=None, debug=False, max_pixels=89_478_485)
DATA = dict(cfg_options=None, out_dir=None, backend=None, show=False, json_out=False, quiet=False, seed=0, debug=False,
            max_pixels=89_478_485)
#: the shared options each command had, in --help order, with their defaults, before they were declared once
BEFORE = {
    "cam": MODEL, "featmap": MODEL, "boxam": {**MODEL, "batch_size": 4}, "recon": {**MODEL, "seed": 0},
    "slice": {**MODEL, "batch_size": 8, "max_pixels": 2**30}, "tsne": {**MODEL, "batch_size": 32, "seed": 0},
    "pipeline": DATA, "browse": DATA, "audit": MODEL,
    "lr": dict(batch_size=None, cfg_options=None, out_dir=None, backend=None, show=False, json_out=False, quiet=False,
               debug=False),
    "demo": dict(out_dir=None, threads=None, quiet=False), "doctor": dict(json_out=False),
}
OWN_ALIASES = {("demo", "out_dir"): ("--out-dir", "-o")}  # demo's --out-dir is the output root, without the alias


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_every_command_keeps_its_shared_options(name, invoke):
    from visctl.cli import command

    params = {p.name: p for p in command().commands[name].params}
    expected = BEFORE[name]
    assert [n for n in params if n in ALIASES] == list(expected)  # the same ones, in the same order
    help_text = invoke(name, "--help").stdout
    for option, default in expected.items():
        param = params[option]
        assert tuple(param.opts + param.secondary_opts) == OWN_ALIASES.get((name, option), ALIASES[option])
        assert param.default == default, option
        assert param.opts[0] in help_text


@opt.shared(*opt.after("out_dir", "label"), batch_size=4, seed=opt.seed("A seed."))
def probe(image: str, label: str = "", *, opts: opt.CommandOptions) -> None:
    """Record what the command receives."""
    SEEN.append((image, label, opts))


SEEN: list = []


def _run_probe(*args: str) -> tuple[str, str, opt.CommandOptions]:
    app = typer.Typer()
    app.command()(probe)
    SEEN.clear()
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    [seen] = SEEN
    return seen


def test_the_decorator_hands_one_frozen_run_options_with_the_parsed_values():
    image, label, opts = _run_probe("img.png", "--threads", "3", "--seed", "5", "--device", "cpu", "--batch-size", "2",
                                    "--cfg-options", "a=1", "--cfg-options", "b=2", "-o", "out", "--label", "x",
                                    "--backend", "local", "--show", "--json", "-q", "--debug", "--max-pixels", "100",
                                    "--unsafe-load-checkpoint")
    assert (image, label) == ("img.png", "x")  # the command's own parameters still reach it
    assert opts == opt.CommandOptions(device="cpu", threads=3, seed=5, cfg_options=("a=1", "b=2"),
                                      unsafe_load_checkpoint=True, max_pixels=100, quiet=True, json_out=True,
                                      debug=True, backend="local", show=True, out_dir=Path("out"), batch_size=2)
    assert isinstance(opts, RunOptions)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.threads = 1  # type: ignore[misc]


def test_the_decorator_gives_the_defaults_and_the_overrides():
    _, _, opts = _run_probe("img.png")
    assert opts == opt.CommandOptions(seed=0, batch_size=4, max_pixels=DEFAULT_MAX_PIXELS)
    params = [p.name for p in typer.main.get_command(_app_of(probe)).params]
    assert params[:2] == ["image", "unsafe_load_checkpoint"]
    assert params[params.index("out_dir") + 1] == "label"  # placed where the decorator was told


def _app_of(command):
    app = typer.Typer()
    app.command()(command)
    return app


def test_the_decorator_refuses_options_declared_twice_or_not_taken():
    with pytest.raises(TypeError, match="override"):
        opt.shared("seed", batch_size=3)

    def declares_seed(seed: int = 0, *, opts: opt.CommandOptions) -> None: ...

    with pytest.raises(TypeError, match="seed"):
        opt.shared("seed")(declares_seed)


MODEL_ARGS = ("--threads", "3", "--seed", "5", "--device", "cpu", "--batch-size", "2", "--cfg-options", "a=1")


@pytest.mark.parametrize("name, args, expected", [
    ("cam", ["img.png", "cfg.py", *MODEL_ARGS], dict(threads=3, seed=5, device="cpu", batch_size=2)),
    ("featmap", ["img.png", "cfg.py", *MODEL_ARGS], dict(threads=3, seed=5, device="cpu", batch_size=2)),
    ("boxam", ["img.png", "cfg.py", *MODEL_ARGS], dict(threads=3, seed=5, device="cpu", batch_size=2)),
    ("slice", ["img.png", "cfg.py", *MODEL_ARGS, "--debug"], dict(threads=3, seed=5, batch_size=2, debug=True)),
    ("recon", ["img.png", "cfg.py", *MODEL_ARGS], dict(threads=3, seed=5, device="cpu", batch_size=2)),
    ("tsne", ["cfg.py", *MODEL_ARGS], dict(threads=3, seed=5, device="cpu", batch_size=2)),
    ("pipeline", ["cfg.py", "--seed", "5", "--cfg-options", "a=1"], dict(seed=5, max_pixels=DEFAULT_MAX_PIXELS)),
    ("browse", ["cfg.py", "--seed", "5", "--cfg-options", "a=1", "-q"], dict(seed=5, quiet=True)),
    ("lr", ["cfg.py", "--log-level", "DEBUG", "--cfg-options", "a=1", "--json"], dict(debug=True, json_out=True)),
])
def test_each_command_opens_its_run_with_the_parsed_options(name, args, expected, invoke, monkeypatch, tmp_path):
    """The real commands: what reaches RunContext is the command line's values (the run itself is cut short)."""
    import importlib

    seen = {}

    def run_context(command, options, **kwargs):
        seen.update(command=command, options=options, **kwargs)
        raise typer.Exit(0)

    module = importlib.import_module(f"visctl.commands.{name}")
    monkeypatch.setattr(module, "RunContext", run_context)
    result = invoke(name, *args, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert isinstance(options, RunOptions) and seen["command"] == name
    assert {k: getattr(options, k) for k in expected} == expected
    assert options.cfg_options == ("a=1",)
    assert seen["out_dir"] == tmp_path


def test_demo_opens_its_run_with_its_threads_and_quiet(invoke, monkeypatch, tmp_path):
    seen = {}

    def run_context(command, options, **kwargs):
        seen.update(options=options, **kwargs)
        raise typer.Exit(0)

    monkeypatch.setattr("visctl.context.RunContext", run_context)
    assert invoke("demo", "--threads", "3", "-q", "-o", tmp_path).exit_code == 0
    assert (seen["options"].threads, seen["options"].quiet, seen["out_dir"]) == (3, True, tmp_path.resolve())
