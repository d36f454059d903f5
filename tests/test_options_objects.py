"""One typed, frozen options object per command (visctl.options): its fields are the library's arguments and
the CLI's options of the same names, with the same defaults; the library's errors name the fields, and the CLI
says them as its flags through the one map its declarations make (visctl._options.FLAGS / cli_text)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import visctl.cli  # noqa: F401 - registers every command's flags
from visctl import _options, arguments
from visctl.errors import ArgumentError
from visctl.options import BY_COMMAND, CamOptions, FeatmapOptions, TsneOptions

#: what a function takes beside its options: its inputs and the shared run options
NOT_FIELDS = {"images", "model", "checkpoint", "config", "settings", "options", "session"}
#: fields the CLI spells its own way: featmap's --compare CONFIG2[,CHECKPOINT2] is one option for two fields
CLI_SPELLS_OWN = {("featmap", "compare_checkpoint")}


def _cli_defaults(command: str) -> dict[str, object]:
    group = visctl.cli.command()
    return {p.name: p.default for p in group.commands[command].params}  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", sorted(BY_COMMAND))
def test_the_fields_are_the_library_arguments_and_the_cli_options(command: str) -> None:
    cls = BY_COMMAND[command]
    fields = {f.name for f in dataclasses.fields(cls)}
    assert fields == set(arguments.TYPES[command]) - NOT_FIELDS
    flags = _options.FLAGS[command]
    for name in fields:
        if (command, name) not in CLI_SPELLS_OWN:
            assert name in flags, f"visctl {command} has no option for {cls.__name__}.{name}"


@pytest.mark.parametrize("command", sorted(BY_COMMAND))
def test_the_defaults_are_the_cli_defaults(command: str) -> None:
    """The CLI builds its options object from its own defaults: the same object as the library's defaults."""
    cls = BY_COMMAND[command]
    cli = _cli_defaults(command)
    given = {f.name: cli[f.name] for f in dataclasses.fields(cls) if f.name in cli}
    assert cls.of(given) == cls(), command


def test_a_field_is_checked_and_normalised_when_made() -> None:
    o = CamOptions(method="GradCAM,layercam", target_layers=["a", "b,c"], target_category=[3, "cat"], task="SEGMENTATION")
    assert o.method == ("GradCAM", "layercam") and o.target_layers == ("a", "b", "c")
    assert o.target_category == ("3", "cat") and o.task.value == "segmentation"
    assert FeatmapOptions(arrangement=[2, 3]).arrangement == (2, 3)
    assert TsneOptions(class_idx=[1, 2]).class_idx == (1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.topk = 3  # type: ignore[misc]
    for bad, said in [(dict(topk=0), "topk=0 is out of range"), (dict(alpha=2.0), "alpha=2.0"),
                      (dict(task="x"), "task='x' is not one of"), (dict(aug_smooth="no"), "aug_smooth='no'"),
                      (dict(target_layers="a,,b"), "target_layers='a,,b' has an empty")]:
        with pytest.raises(ArgumentError) as caught:
            CamOptions(**bad)
        assert said in caught.value.message, caught.value.message


def test_an_unknown_option_is_refused_with_the_nearest() -> None:
    with pytest.raises(ArgumentError) as caught:
        CamOptions.build(methd="layercam")
    assert "no option 'methd'" in caught.value.message and "method=" in (caught.value.hint or "")
    with pytest.raises(ArgumentError):
        CamOptions.build(FeatmapOptions())  # type: ignore[arg-type]
    assert CamOptions.build(CamOptions(topk=3), alpha=0.2) == CamOptions(topk=3, alpha=0.2)


def test_the_cli_says_a_field_as_its_flag() -> None:
    said = _options.cli_text("featmap", "arrangement=(1, 0) is out of range; give topk= or save_raw=True, "
                                        "image_format='x' and batch_size=0, not cfg.topk=1")
    assert said == ("--arrangement 1 0 is out of range; give --topk or --save-raw, --format x and --batch-size 0, "
                    "not cfg.topk=1")
    quoted = "visctl = dict(target_layers=['layer4'], input_size=224) or `topk=2`, not topk=0"
    assert _options.cli_text("cam", quoted) == "visctl = dict(target_layers=['layer4'], input_size=224) or `topk=2`, not --topk 0"
    assert _options.cli_text("audit", "fail_under='pointing=0.8' or 'a b'") == "--fail-under pointing=0.8 or 'a b'"
    assert _options.cli_text("cam", "nothing to name here") == "nothing to name here"


@pytest.mark.parametrize("command", sorted(BY_COMMAND))
def test_every_flag_in_the_map_is_a_flag_of_the_command(command: str) -> None:
    group = visctl.cli.command()
    opts = {o for p in group.commands[command].params for o in p.opts}  # type: ignore[attr-defined]
    assert set(_options.FLAGS[command].values()) <= opts


def test_the_library_takes_the_options_object_or_keywords() -> None:
    from visctl.library import EXPORTS

    for command in BY_COMMAND:
        module, attr = EXPORTS[command]
        function = getattr(__import__(f"visctl.library.{module}", fromlist=[attr]), attr)
        params = inspect.signature(function).parameters
        assert "settings" in params, f"visctl.{command} takes no settings="
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), command


def test_a_url_or_a_checkpoint_keeps_its_spelling() -> None:
    """A file field becomes a Path, but a URL stays whole (a Path merges https://'s two slashes), and a checkpoint
    field keeps the spelling the manifest records (./ckpt.pth)."""
    from pathlib import Path

    from visctl.options import AuditOptions, ReconOptions

    assert ReconOptions(mask_file="m.npy").mask_file == Path("m.npy")
    assert AuditOptions(annotations="https://host/a.json").annotations == "https://host/a.json"
    assert AuditOptions(compare="https://host/b.pth").compare == "https://host/b.pth"
    assert FeatmapOptions(compare_checkpoint="./ckpt.pth").compare_checkpoint == "./ckpt.pth"


def test_an_error_in_a_run_is_said_with_the_flags_on_stderr_and_in_the_manifest(tmp_path, capsys) -> None:
    """The library's field names become the command's flags once, before the manifest records the error: the
    manifest and stderr say the same line."""
    import json

    import typer

    from visctl.context import RunContext
    from visctl.session import RunOptions

    with pytest.raises(typer.Exit) as done:
        with RunContext("featmap", RunOptions(device="cpu"), out_dir=tmp_path / "o") as ctx:
            ctx.open_writer({})
            raise ArgumentError("arrangement=(1, 0) is out of range", hint="give topk= or leave it out")
    assert done.value.exit_code == 2
    err = capsys.readouterr().err
    assert "error: --arrangement 1 0 is out of range" in err and "hint: give --topk or leave it out" in err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["status"] == "error" and manifest["error"] == "--arrangement 1 0 is out of range"


def test_options_are_frozen_all_the_way_down() -> None:
    from visctl.options import AuditOptions, DatasetOptions, Options

    bounds = AuditOptions(fail_under="pointing=0.8").fail_under
    assert bounds is not None and dict(bounds) == {"pointing": 0.8}
    with pytest.raises(TypeError):
        bounds["pointing"] = 0.1  # type: ignore[index]
    assert CamOptions(target_box=[1, 2, 3, 4]).target_box == (1, 2, 3, 4)
    for base in (Options, DatasetOptions):
        with pytest.raises(TypeError, match="base class"):
            base()


def test_the_shared_run_options_are_checked_when_made() -> None:
    """threads=0 or seed=-1 would fail deep in torch or numpy, max_pixels=0 would skip every image in silence."""
    from visctl.session import RunOptions

    for bad, said in [(dict(threads=0), "threads=0 is out of range"), (dict(seed=-1), "seed=-1 is out of range"),
                      (dict(max_pixels=0), "max_pixels=0 is out of range"), (dict(quiet="no"), "quiet='no'"),
                      (dict(cfg_options="a=1"), "cfg_options='a=1'"), (dict(device=""), "device=''")]:
        with pytest.raises(ArgumentError) as caught:
            RunOptions(**bad)
        assert said in caught.value.message and caught.value.hint
    assert RunOptions(cfg_options=["a=1"]).cfg_options == ("a=1",)


def test_a_list_field_given_one_value_is_a_list_of_one_and_a_bound_above_low_says_so() -> None:
    from visctl.options import AuditOptions, PipelineOptions

    assert TsneOptions(class_idx=3).class_idx == (3,)
    with pytest.raises(ArgumentError) as caught:
        PipelineOptions(rescale_factor=0)
    assert caught.value.hint == "give a number above 0"
    with pytest.raises(ArgumentError) as caught:
        AuditOptions(top_percent=0)
    assert caught.value.hint == "give a number above 0, at most 100"


@pytest.mark.parametrize("args", [
    ["audit", "{cfg}", "--data", ""], ["audit", "{cfg}", "--annotations", ""], ["audit", "{cfg}", "--region", ""],
    ["recon", "{img}", "{mae}", "--mask-file", ""], ["cam", "{img}", "{cfg}", "--target-mask", ""],
])
def test_an_empty_file_option_is_refused_not_read_as_the_current_folder(invoke, image_file, tmp_path, args) -> None:
    from conftest import DEMO_CFG, ROOT, assert_one_error

    mae = ROOT / "examples" / "demo_mae" / "config.py"
    argv = [{"{cfg}": str(DEMO_CFG), "{img}": str(image_file), "{mae}": str(mae)}.get(a, a) for a in args]
    result = invoke(*argv, "-o", tmp_path / "o")
    flag = args[args.index("") - 1]
    assert_one_error(result, f"{flag} '' is not a")
    assert not (tmp_path / "o").exists()


def test_two_output_options_naming_one_file_are_refused(invoke, tmp_path) -> None:
    from conftest import ROOT, assert_one_error

    cfg = ROOT / "tests" / "configs" / "mmpretrain" / "resnet50_8xb32-coslr-warmup_in1k.py"
    same = tmp_path / "out" / "a.png"
    result = invoke("lr", str(cfg), "-d", "600", "-s", str(same), "--csv", str(same))
    assert_one_error(result, "--save-path and --csv name the same file")
    assert not (tmp_path / "out").exists()


def test_a_message_with_lists_and_off_switches_is_said_as_a_shell_takes_it() -> None:
    """A list is said as the words a shell takes (quoted where the shell would read them otherwise), a field
    set False as its negative flag, and an elided list (``[...]``) as ``...``."""
    said = _options.cli_text("featmap", "cfg_options=['a.b=1', 'c.scale=(224,224)'] and overlaid=False; "
                                        "cfg_options=[...] or cfg_options=['k.x=[1,2]']")
    assert said == "--cfg-options a.b=1 'c.scale=(224,224)' and --no-overlaid; --cfg-options ... or --cfg-options 'k.x=[1,2]'"
    assert _options.OFF["featmap"]["overlaid"] == "--no-overlaid"
    assert "save_raw" not in _options.OFF["cam"]  # a flag without a negative: save_raw=False stays as written
    assert _options.cli_text("cam", "save_raw=False and topk=2") == "save_raw=False and --topk 2"
    assert _options.cli_text("featmap", "out/alpha=0.3/manifest.json, alpha=0.3/x.png; alpha=0.3") == \
        "out/alpha=0.3/manifest.json, alpha=0.3/x.png; --alpha 0.3"  # a path keeps its name


def test_an_error_a_warning_and_a_note_name_fields_in_the_library_and_flags_on_the_command_line(
        invoke, image_file, tmp_path) -> None:
    """The same mistakes, through the library and the CLI: the library says the field, the CLI its flag, on
    stderr and in the manifest alike (errors raised before a run starts, warnings, notes, skipped inputs)."""
    import json
    import warnings

    from conftest import DEMO_CFG, assert_one_error

    import visctl
    from visctl.errors import ConfigError, DeviceError, InputWarning
    from visctl.session import RunOptions

    with pytest.raises(ConfigError, match=r"^cfg_options=\['nokey'\]: expects key=value$"):
        visctl.featmap(image_file, str(DEMO_CFG), options=RunOptions(device="cpu", cfg_options=("nokey",)))
    assert_one_error(invoke("featmap", image_file, DEMO_CFG, "--cfg-options", "nokey", "-o", tmp_path / "f0"),
                     "--cfg-options nokey: expects key=value")
    with pytest.raises(DeviceError, match=r"^device='cuda:x': not a device name"):
        visctl.featmap(image_file, str(DEMO_CFG), options=RunOptions(device="cuda:x"))
    assert_one_error(invoke("featmap", image_file, DEMO_CFG, "--device", "cuda:x", "-o", tmp_path / "f1"),
                     "--device cuda:x: not a device name")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        visctl.featmap(image_file, str(DEMO_CFG), channel_reduction="squeeze_mean", topk=3, alpha=0.3,
                       overlaid=False, options=RunOptions(device="cpu"))
    said = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert any(m.startswith("topk=3 has no effect: it applies to channel_reduction='none' only") for m in said), said
    assert any("alpha=0.3 has no effect" in m and "overlaid=False draws" in m for m in said), said
    result = invoke("featmap", image_file, DEMO_CFG, "--channel-reduction", "squeeze_mean", "--topk", "3",
                    "--alpha", "0.3", "--no-overlaid", "-o", tmp_path / "f2")
    assert result.exit_code == 0, result.output
    assert "warning: --topk 3 has no effect: it applies to --channel-reduction none only" in result.stderr
    assert "warning: --alpha 0.3 has no effect" in result.stderr and "--no-overlaid draws" in result.stderr

    import typer

    from visctl.context import RunContext

    with pytest.raises(typer.Exit) as done:  # exit 1: an input was skipped
        with RunContext("featmap", RunOptions(device="cpu"), out_dir=tmp_path / "f3") as ctx:
            ctx.open_writer({})
            ctx.session.note("topk=3 lowered to 2")
            ctx.session.skip(tmp_path / "bad.png", "raise max_pixels= to read it")
            ctx.finish()
    assert done.value.exit_code == 1
    manifest = json.loads((tmp_path / "f3" / "manifest.json").read_text())
    assert "--topk 3 lowered to 2" in manifest["notes"]
    assert manifest["failures"][0]["error"] == "raise --max-pixels to read it"


def test_the_merge_metric_and_the_starting_layout_are_choices() -> None:
    from visctl.choices import MergeMetric, TsneInit
    from visctl.options import SliceOptions

    assert SliceOptions(merge_metric="IOS").merge_metric is MergeMetric.ios
    assert SliceOptions().merge_metric is None and TsneOptions().init is TsneInit.pca
    assert type(TsneOptions(init="random").as_dict()["init"]) is str  # as the manifest writes it, not the Enum
    with pytest.raises(ArgumentError, match="merge_metric='dice'"):
        SliceOptions(merge_metric="dice")
    with pytest.raises(ArgumentError, match="init='spectral'"):
        TsneOptions(init="spectral")


def test_an_options_object_given_in_a_files_place_is_pointed_at_settings() -> None:
    """``visctl.cam(img, cfg, visctl.CamOptions(...))`` puts the options where the checkpoint goes: the error
    says where they go; a config command's missing file does not offer a model name it cannot use."""
    import visctl
    from visctl.errors import ConfigError

    with pytest.raises(ArgumentError, match=r"checkpoint=<CamOptions> is not a file name") as err:
        visctl.cam("x.png", "cfg.py", visctl.CamOptions(topk=2))
    assert err.value.hint == "pass the options as settings=CamOptions(...)"
    with pytest.raises(ConfigError, match="config file not found: nope.py") as err:
        visctl.lr("nope.py")
    assert "model name" not in err.value.hint.split("(")[0] and "a config file" in err.value.hint


def test_the_users_own_words_config_reprs_and_quotes_are_never_read_as_fields(invoke, image_file, tmp_path,
                                                                                monkeypatch) -> None:
    """A file or folder named like an option (``topk=3.png``, ``-o alpha=0.3``), a pipeline step's repr and a
    quoted value are said as they are, on stderr and in the manifest; the fields around them still become flags."""
    import json

    from conftest import DEMO_CFG

    monkeypatch.chdir(tmp_path)
    (tmp_path / "topk=3.png").write_text("not an image")
    result = invoke("featmap", "topk=3.png", image_file, DEMO_CFG, "--channel-reduction", "squeeze_mean",
                    "--topk", "3", "-o", "alpha=0.3")
    assert result.exit_code == 1, result.output
    assert "warning: skipping topk=3.png: cannot decode topk=3.png as an image" in result.stderr
    assert "warning: --topk 3 has no effect" in result.stderr and "alpha=0.3/manifest.json" in result.stderr
    manifest = json.loads((tmp_path / "alpha=0.3" / "manifest.json").read_text())
    assert manifest["failures"][0]["path"] == "topk=3.png"
    assert manifest["failures"][0]["error"].startswith("cannot decode topk=3.png as an image")
    said = _options.cli_text("featmap", "pipeline step Resize(scale=(0, 0), backend=pillow): topk=2; "
                                        "{'x': 'alpha=0.3'}")
    assert said == "pipeline step Resize(scale=(0, 0), backend=pillow): --topk 2; {'x': 'alpha=0.3'}"
    assert _options.cli_text("audit", "fail_under= names border twice ('border=0.5' and 'border=0.6')") == \
        "--fail-under names border twice ('border=0.5' and 'border=0.6')"


def test_an_out_dir_that_a_file_option_overrides_says_so(invoke, image_file, tmp_path) -> None:
    """``--save-path sp/c.png -o out`` writes into sp/ (the file's folder): -o is said to have no effect, and
    nothing is made under out/; where -o is honoured (recon's --out-file) nothing is said."""
    from conftest import DEMO_CFG

    result = invoke("cam", image_file, DEMO_CFG, "--save-path", tmp_path / "sp" / "c.png", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"warning: -o/--out-dir {tmp_path / 'out'} has no effect: this run writes to {tmp_path / 'sp'}" \
        in result.stderr
    assert (tmp_path / "sp" / "manifest.json").is_file() and not (tmp_path / "out").exists()
    mae = DEMO_CFG.parent.parent / "demo_mae" / "config.py"
    result = invoke("recon", image_file, mae, "--out-file", tmp_path / "r.png", "-o", tmp_path / "r")
    assert result.exit_code == 0 and "has no effect" not in result.stderr, result.output
    assert (tmp_path / "r.png").is_file() and (tmp_path / "r" / "manifest.json").is_file()
