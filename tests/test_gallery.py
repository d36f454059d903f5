"""The gallery in a real browser, `visctl demo`, --show, completion installation and the CI example."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, chromium_driver


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "visctl", "demo", "-o", str(root), "--images", "8"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return root, out


def test_demo_runs_every_command_and_prints_one_gallery(demo_root):
    import json

    root, out = demo_root
    assert out.stdout.strip() == str(root / "index.html")
    for command in ("cam", "featmap", "tsne", "pipeline", "browse", "lr", "boxam", "slice", "recon"):
        manifest = json.loads((root / command / "manifest.json").read_text())
        assert manifest["status"] == "ok" and manifest["outputs"], command
        assert f'href="{command}/index.html"' in (root / "index.html").read_text()


def test_gallery_pages_load_in_headless_chromium(demo_root):

    root, _ = demo_root
    driver = chromium_driver(logs=True)
    try:
        pages = [root / "index.html"] + sorted(root.glob("*/index.html")) + sorted(root.glob("tsne/tsne_*.html"))
        for page in pages:
            driver.get(page.as_uri())
            driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
            broken = driver.execute_script(
                "return Array.from(document.images).filter(function(i){"
                "i.loading='eager'; return !(i.complete && i.naturalWidth > 0);}).map(function(i){return i.src;})")
            if broken:  # lazy images may still be loading: give them a moment
                import time

                time.sleep(1.0)
                broken = driver.execute_script(
                    "return Array.from(document.images).filter(function(i){return !(i.complete && "
                    "i.naturalWidth > 0);}).map(function(i){return i.src;})")
            assert not broken, (page, broken)
            errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert not errors, (page, errors)
        # the root page filters by command, and the t-SNE page shows an image on hover
        driver.get((root / "index.html").as_uri())
        driver.execute_script("var s=document.getElementById('cmd'); s.value='cam'; s.onchange();")
        shown = driver.execute_script("return Array.from(document.querySelectorAll('section'))"
                                      ".filter(function(s){return s.style.display!=='none';}).length")
        cam_runs = driver.execute_script("return document.querySelectorAll('section[data-command=\"cam\"]').length")
        assert shown == cam_runs >= 3  # the demo's cam, cam --score and cam on the segmenter; nothing else
        driver.get(next(root.glob("tsne/tsne_*.html")).as_uri())
        driver.execute_script("var c=document.querySelector('circle'); var r=c.getBoundingClientRect();"
                              "c.dispatchEvent(new MouseEvent('mousemove',{clientX:r.x,clientY:r.y,bubbles:true}));")
        tip = driver.execute_script("return document.getElementById('tip').innerHTML")
        assert "<img" in tip and "<b>" in tip
    finally:
        driver.quit()


def test_show_without_display_warns_and_saves(invoke, image_file, tmp_path, monkeypatch):
    from conftest import DEMO_CFG

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = invoke("cam", image_file, DEMO_CFG, "--show", "-o", tmp_path)
    assert result.exit_code == 0
    assert "no display" in result.stderr and list(tmp_path.glob("*.png"))


def test_show_keyboard_navigation():
    from visctl.show import Navigator

    nav = Navigator(3)
    assert [nav.key(k) for k in ("right", "right", "left", " ")] == [1, 2, 1, 2]
    nav.key("right")
    assert nav.done
    nav = Navigator(3)
    nav.key("q")
    assert nav.done


def test_install_completion_for_bash(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash", "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    out = subprocess.run(["visctl", "--install-completion", "bash"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "completion" in (tmp_path / ".bashrc").read_text()


def test_completion_of_enums_and_backends():
    def complete(words: str, cword: int) -> list[str]:
        env = {**os.environ, "_VISCTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        return subprocess.run(["visctl"], capture_output=True, text=True, env=env).stdout.split()

    assert complete("visctl featmap --channel-reduction p", 3) == ["pixel_wise_max"]
    assert complete("visctl cam --backend te", 3) == ["tensorboard"]
    assert "boxam" in complete("visctl b", 1) and "browse" in complete("visctl b", 1)
    assert "--patch-overlap-ratio" in complete("visctl slice --patch", 2)


def test_ci_example_script_documents_exit_codes_and_runs(tmp_path):
    script = ROOT / "examples" / "ci" / "visctl-ci.sh"
    text = script.read_text()
    for code in ("0", "1", "2"):
        assert f"exit status {code}" in text or f"{code}:" in text
    workflow = (ROOT / "examples" / "ci" / "github-actions.yml").read_text()
    assert "upload-artifact" in workflow and "visctl-ci.sh" in workflow
    from visctl.shapes import write_scenes

    write_scenes(tmp_path / "imgs", range(100_000, 100_003))
    (tmp_path / "imgs" / "broken.png").write_bytes(b"nope")
    env = {**os.environ, "OUT": str(tmp_path / "artifacts")}
    run = subprocess.run(["bash", str(script), str(tmp_path / "imgs"), str(ROOT / "examples/demo_classifier/config.py")],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 1, run.stderr  # one input failed, the rest finished
    assert (tmp_path / "artifacts" / "cam" / "manifest.json").is_file()
    assert Path(tmp_path / "artifacts" / "featmap" / "index.html").is_file()


def test_default_output_root_gets_an_index_linking_the_runs(invoke, image_file, tmp_path, monkeypatch):
    from conftest import DEMO_CFG

    monkeypatch.chdir(tmp_path)
    assert invoke("cam", image_file, DEMO_CFG).exit_code == 0
    assert invoke("featmap", image_file, DEMO_CFG).exit_code == 0
    root = (tmp_path / "visctl-out" / "index.html").read_text()
    assert 'href="cam/index.html"' in root and 'href="featmap/index.html"' in root


def test_show_opens_windows_on_a_display(tmp_path):
    """Under Xvfb (installed by the test where missing) --show opens the window and steps through every
    output by itself with --show-interval."""
    import time

    if not shutil.which("Xvfb") and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "xvfb"], check=False, capture_output=True)
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed and cannot be installed here")
    try:
        import tkinter  # noqa: F401
    except ImportError:
        pytest.skip("this Python has no tkinter for matplotlib's window")
    from visctl.shapes import write_scenes

    write_scenes(tmp_path / "data", range(8))
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"train_dataloader = dict(dataset=dict(type='ImageFolder', root='{tmp_path / 'data'}', "
                   "pipeline=[dict(type='Resize', scale=(48, 48))]))\n")
    display = f":{90 + os.getpid() % 9}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1024x768x24"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        env = {**os.environ, "DISPLAY": display, "MPLBACKEND": "Agg"}
        out = subprocess.run(["visctl", "browse", str(cfg), "--number", "8", "--rows", "2", "--cols", "2", "--show",
                              "--show-interval", "0.2", "-o", str(tmp_path / "out")], capture_output=True, text=True,
                             env=env, timeout=120)
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    assert "no display" not in out.stderr and "cannot open a window" not in out.stderr
    assert len(list((tmp_path / "out").glob("browse_*.png"))) == 2
