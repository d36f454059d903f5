"""The library's result base: frozen, saved as the CLI saves, shown in a notebook; the session's options."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from visctl.results import Figure, Result
from visctl.session import RunOptions, Session


@dataclass(frozen=True)
class _Squares(Result):
    command: ClassVar[str] = "squares"
    sides: tuple[int, ...] = ()

    def figures(self) -> list[Figure]:
        out = []
        for s in self.sides:
            img = np.zeros((s, s + 1, 3), np.uint8)
            img[..., 0] = 200  # red
            out.append(Figure(f"square_{s}.png", img, caption=f"<b>side</b> {s} & more"))
        return out


def test_a_result_is_frozen():
    r = _Squares(sides=(3,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.sides = (4,)  # type: ignore[misc]


def test_save_writes_the_figures_a_manifest_and_a_gallery(tmp_path):
    r = _Squares(params={"k": 1}, inputs=({"path": "a.png", "size": [3, 3]},), sides=(3, 5),
                 failures=(("bad.png", "cannot decode"),), notes=("a remark",))
    manifest_path = r.save(tmp_path / "out")
    m = json.loads(manifest_path.read_text())
    assert m["command"] == "squares" and m["params"]["k"] == 1 and m["status"] == "partial"
    assert [o["path"] for o in m["outputs"]] == ["square_3.png", "square_5.png"]
    assert [o["caption"] for o in m["outputs"]] == ["<b>side</b> 3 & more", "<b>side</b> 5 & more"]
    assert m["failures"] == [{"path": "bad.png", "error": "cannot decode"}] and "a remark" in m["notes"]
    assert m["inputs"][0]["path"] == "a.png"
    import cv2

    img = cv2.imread(str(tmp_path / "out" / "square_5.png"))[..., ::-1]
    assert img.shape == (5, 6, 3) and (img[..., 0] == 200).all() and (img[..., 1:] == 0).all()
    page = (tmp_path / "out" / "index.html").read_text()
    assert "&lt;b&gt;side&lt;/b&gt; 3" in page and "<b>side</b>" not in page


def test_notebook_display_is_the_figures_with_escaped_captions():
    import cv2

    r = _Squares(sides=(3, 4))
    png = r._repr_png_()
    first = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(first, r.figures()[0].image)
    page = r._repr_html_()
    assert page.count("<img") == 2 and "&lt;b&gt;side&lt;/b&gt; 4 &amp; more" in page and "<b>side</b>" not in page
    assert _Squares()._repr_png_() is None


def test_a_plain_session_prints_nothing_and_keeps_its_remarks(capsys):
    s = Session(RunOptions(device="cpu"))
    from visctl.errors import InputWarning

    s.note("checkpoint loaded")
    with pytest.warns(InputWarning, match="^skipping x.png: unreadable$"):  # a warning, not a printed line
        s.skip("x.png", "unreadable")
    with s.progress(3, "work") as advance:
        advance()

    with pytest.warns(InputWarning, match="careful") as said:
        s.warn("careful")
    assert said[0].filename == __file__  # the warning names the caller of Session.warn, through its reporter
    assert capsys.readouterr() == ("", "")
    assert s.notes == ["checkpoint loaded"] and s.failures[0].path == "x.png" and s.device == "cpu"


def test_a_session_leaves_torch_threads_alone_unless_told():
    code = ("import torch; torch.set_num_threads(1); from visctl.session import Session, RunOptions;"
            "Session().setup_torch(); a = torch.get_num_threads();"
            "Session(RunOptions(threads=2)).setup_torch(); print(a, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "2"]


def test_the_cli_context_holds_a_session_built_from_one_options_object(tmp_path):
    from visctl.context import RunContext

    opts = RunOptions(device="cpu", seed=3, cfg_options=("a=1",))
    ctx = RunContext("cam", opts, out_dir=tmp_path / "o")
    s = ctx.session
    assert type(s) is Session and s.options.seed == 3 and s.cfg_options == ["a=1"] and s.reporter is ctx.reporter
    assert s.threads is not None and s.threads >= 1  # the CLI pins torch's threads


def test_import_visctl_is_light_and_resolves_the_functions_on_use():
    code = ("import sys, visctl; assert 'torch' not in sys.modules, 'torch imported';"
            "opts = visctl.RunOptions(device='cpu'); assert 'torch' not in sys.modules;"
            "print(sorted(n for n in dir(visctl) if not n.startswith('_'))[:3])")
    subprocess.run([sys.executable, "-c", code], check=True)
    import visctl

    with pytest.raises(AttributeError):
        visctl.no_such_function  # noqa: B018
