"""Outputs: stable file names, atomic writes, manifest.json and the index.html gallery."""

from __future__ import annotations

import html
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
INDEX = "index.html"


#: what visctl writes images as (OpenCV's encoders for these are always built)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def check_output_file(path: Path | None, option: str, suffixes: Iterable[str] | None = IMAGE_SUFFIXES) -> None:
    """Refuse an output file option that cannot be written, before any work: a directory, a name whose suffix
    names no format visctl writes there (``suffixes``; None: any), a parent that is a file.
    """
    from visctl.errors import InputError

    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory, not a file name",
                         hint=f"give a file name, e.g. {path / ('NAME' + next(iter(suffixes or ()), ''))}; "
                         "-o/--out-dir names the folder of a run")
    suffixes = tuple(suffixes) if suffixes is not None else None
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: visctl cannot write "
                         f"{'a ' + path.suffix + ' file' if path.suffix else 'a file without a suffix'} here",
                         hint=f"end the name in one of {', '.join(suffixes)}")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{option} {path}: {parent} is a file, not a folder",
                                 hint="choose a path under an existing folder, or one that can be created")
            break


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259): NaN and infinities, which ``json.dumps`` writes as bare ``NaN``/``Infinity``
    that other parsers refuse, become null; anything else unknown is written as its ``str``."""
    return json.dumps(_finite(obj), indent=indent, default=str, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalars and arrays
        return _finite(obj.tolist())
    return obj


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


def input_stems(paths: Iterable[Path]) -> dict[Path, str]:
    """A stable, collision-free stem per input: its path relative to the inputs' common folder.

    ``a/cat.jpg`` and ``b/cat.jpg`` become ``a__cat`` and ``b__cat``; a single input keeps its stem.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        return {}
    absolute = [p.resolve() for p in paths]
    common = Path(os.path.commonpath([str(a.parent) for a in absolute]))
    stems: dict[Path, str] = {}
    used: dict[str, int] = {}
    for p, a in zip(paths, absolute):
        rel = a.relative_to(common).with_suffix("")
        stem = "__".join(_slug(part) for part in rel.parts)
        if a.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            stem += f"_{a.suffix.lower().lstrip('.')}"
        n = used.get(stem, 0)
        used[stem] = n + 1
        stems[p] = stem if n == 0 else f"{stem}_{n}"
    return stems


def versions() -> dict[str, str]:
    """Versions of the packages that shape the results, for the manifest."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("visctl", "torch", "torchvision", "grad-cam", "mmengine-lite", "mmengine", "timm",
                "opencv-python-headless", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class OutputWriter:
    """Writes a run's files under one directory and keeps the manifest true at every moment it is saved."""

    def __init__(self, out_dir: Path, command: str, params: dict[str, Any], started: float | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.command = command
        self.started = started or time.time()
        self.manifest: dict[str, Any] = {
            "command": command,
            "params": params,
            "inputs": [],
            "outputs": [],
            "failures": [],
            "notes": [],
            "status": "running",
            "versions": versions(),
            "timings": {},
        }

    def path(self, name: str) -> Path:
        """The absolute path of a run file."""
        return self.out_dir / name

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Atomically write a file of the run (not recorded as an output)."""
        target = self.path(name)
        atomic_write(target, data)
        return target

    def add_output(self, path: Path, kind: str, caption: str = "", **info: Any) -> None:
        """Record a written file in the manifest (paths relative to the run directory when inside it)."""
        try:
            rel = str(Path(path).resolve().relative_to(self.out_dir.resolve()))
        except ValueError:
            rel = str(Path(path).resolve())
        self.manifest["outputs"].append(dict(path=rel, kind=kind, caption=caption, **info))

    def save_image(self, name: str, rgb: Any, caption: str = "", target: Path | None = None, **info: Any) -> Path:
        """Encode and atomically write an RGB image; record it."""
        import cv2

        target = Path(target) if target is not None else self.path(name)
        ok, buf = cv2.imencode(target.suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"cannot encode {target.suffix}")
        atomic_write(target, buf.tobytes())
        self.add_output(target, "image", caption, **info)
        return target

    def save_array(self, name: str, array: Any, caption: str = "", **info: Any) -> Path:
        """Atomically write a .npy array; record it."""
        import io

        import numpy as np

        buf = io.BytesIO()
        np.save(buf, array)
        target = self.write_bytes(name, buf.getvalue())
        self.add_output(target, "array", caption, **info)
        return target

    def add_input(self, path: Path | str, **info: Any) -> None:
        """Record an input that was processed."""
        self.manifest["inputs"].append(dict(path=str(path), **info))

    def fail(self, path: Path | str, message: str) -> None:
        """Record an input that was skipped, and why."""
        self.manifest["failures"].append(dict(path=str(path), error=message))

    def note(self, message: str) -> None:
        """Record a remark about the run (the chosen default layer, a checkpoint summary, ...)."""
        self.manifest["notes"].append(message)

    def finish(self, status: str) -> Path:
        """Write manifest.json and index.html with the final status."""
        self.manifest["status"] = status
        self.manifest["timings"]["total_s"] = round(time.time() - self.started, 3)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        data = to_json(self.manifest).encode()
        atomic_write(self.path(MANIFEST), data)
        atomic_write(self.path(INDEX), render_index(self.manifest).encode())
        return self.path(MANIFEST)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}}
h1{{font-size:1.3rem}} .meta{{color:#555;font-size:.9rem}}
.grid{{display:flex;flex-wrap:wrap;gap:1rem}}
figure{{margin:0;background:#fff;border:1px solid #ddd;padding:.5rem;max-width:520px}}
figure img{{max-width:500px;height:auto;display:block}} figcaption{{font-size:.85rem;margin-top:.3rem}}
.fail{{color:#a00}} code{{font-size:.85rem}} input{{margin:.5rem 0;padding:.3rem;width:20rem}}
</style></head><body>
<h1>visctl {command}</h1>
<p class="meta">status: <b>{status}</b> &middot; {n_out} images &middot; {n_fail} failures &middot; {total}s</p>
<p class="meta"><code>{params}</code></p>
{notes}
<input id="q" placeholder="filter by caption" oninput="f()">
<div class="grid">
{figures}
</div>
{failures}
<script>
function f(){{var q=document.getElementById('q').value.toLowerCase();
document.querySelectorAll('figure').forEach(function(e){{
e.style.display=e.dataset.caption.indexOf(q)>=0?'':'none';}});}}
</script>
</body></html>
"""


def render_index(manifest: dict[str, Any]) -> str:
    """A self-contained gallery page for one run (relative links, no server, no external assets)."""
    esc = html.escape
    figures = []
    for out in manifest["outputs"]:
        if out["kind"] != "image":
            continue
        cap = out.get("caption") or out["path"]
        figures.append(f'<figure data-caption="{esc(cap.lower())}"><a href="{esc(out["path"])}">'
                       f'<img src="{esc(out["path"])}" alt="{esc(cap)}" loading="lazy"></a>'
                       f"<figcaption>{esc(cap)}</figcaption></figure>")
    links = "".join(f'<li><a href="{esc(o["path"])}">{esc(o["path"])}</a> {esc(o.get("caption") or "")}</li>'
                    for o in manifest["outputs"] if o["kind"] == "page")
    if links:
        figures.insert(0, f"<ul>{links}</ul>")
    fails = "".join(f'<li class="fail">{esc(f["path"])}: {esc(f["error"])}</li>' for f in manifest["failures"])
    notes = "".join(f"<li>{esc(n)}</li>" for n in manifest["notes"])
    params = ", ".join(f"{k}={v}" for k, v in manifest["params"].items() if v not in (None, False, [], ""))
    return _PAGE.format(
        title=esc(f"visctl {manifest['command']}"), command=esc(manifest["command"]),
        status=esc(manifest["status"]), n_out=len(figures), n_fail=len(manifest["failures"]),
        total=manifest["timings"].get("total_s", "?"), params=esc(params),
        notes=f"<ul class='meta'>{notes}</ul>" if notes else "",
        figures="\n".join(figures), failures=f"<h2>Failures</h2><ul>{fails}</ul>" if fails else "")


class Navigator:
    """Which output is on screen: right/space/n go forward, left/p/backspace go back, q/escape quit."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.index = 0
        self.done = count == 0

    def key(self, key: str) -> int:
        """Apply a key press; returns the index to show (``done`` set when the user quits or runs past)."""
        if key in ("right", " ", "n", "enter", "down", "pagedown"):
            if self.index + 1 >= self.count:
                self.done = True
            else:
                self.index += 1
        elif key in ("left", "p", "backspace", "up", "pageup"):
            self.index = max(0, self.index - 1)
        elif key in ("q", "escape"):
            self.done = True
        return self.index


def has_display() -> bool:
    """Whether a window can be opened (an X11/Wayland display on Linux; assumed elsewhere)."""
    import sys

    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show_images(paths: list[Path], warn: Any, interval: float | None = None) -> None:
    """Show the outputs in a window, one at a time, with keyboard navigation (right/space: next, left:
    previous, q: quit; with ``interval``, advance by itself). Without a display, say so: the files are saved."""
    if not paths:
        return
    if not has_display():
        warn("--show: no display here (DISPLAY is unset); the images are saved instead")
        return
    import matplotlib

    try:
        import matplotlib.pyplot as plt

        if matplotlib.get_backend().lower() in ("agg", "pdf", "svg", "ps"):
            plt.switch_backend("TkAgg")
    except Exception as exc:  # no GUI toolkit installed
        warn(f"--show: cannot open a window ({exc}); the images are saved instead")
        return
    import cv2

    nav = Navigator(len(paths))
    fig = plt.figure("visctl")
    ax = fig.add_subplot()

    def draw() -> None:
        ax.clear()
        img = cv2.imread(str(paths[nav.index]))
        if img is not None:
            ax.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        ax.set_axis_off()
        ax.set_title(f"{nav.index + 1}/{len(paths)}  {Path(paths[nav.index]).name}   (right: next, left: back, q: quit)",
                     fontsize="small")
        fig.canvas.draw_idle()

    def on_key(event: Any) -> None:
        nav.key(event.key or "")
        if nav.done:
            plt.close(fig)
        else:
            draw()

    fig.canvas.mpl_connect("key_press_event", on_key)
    draw()
    if interval:
        while not nav.done and plt.fignum_exists(fig.number):
            plt.pause(interval)
            on_key(type("E", (), {"key": "right"})())
    else:
        plt.show()


def write_root_index(root: Path) -> Path:
    """An index.html over every run directory under ``root`` (each holding a manifest.json): each run's
    images with their parameters, interactive pages linked, filterable by command."""
    root = Path(root)
    sections = []
    commands = []
    for manifest_path in sorted(root.glob("*/manifest.json")):
        doc = json.loads(manifest_path.read_text())
        run = manifest_path.parent.name
        commands.append(doc["command"])
        esc = html.escape
        figs = "".join(
            f'<figure><a href="{esc(run)}/{esc(o["path"])}"><img src="{esc(run)}/{esc(o["path"])}" '
            f'alt="{esc(o.get("caption") or o["path"])}" loading="lazy"></a>'
            f'<figcaption>{esc(o.get("caption") or "")}</figcaption></figure>'
            for o in doc["outputs"] if o["kind"] == "image")
        pages = "".join(f'<li><a href="{esc(run)}/{esc(o["path"])}">{esc(o.get("caption") or o["path"])}</a></li>'
                        for o in doc["outputs"] if o["kind"] == "page")
        params = ", ".join(f"{k}={v}" for k, v in doc["params"].items()
                           if v not in (None, False, [], "") and k not in ("inputs", "steps"))
        sections.append(
            f'<section data-command="{esc(doc["command"])}"><h2><a href="{esc(run)}/index.html">'
            f'{esc(doc["command"])}</a> <small>{esc(doc["status"])}, {len(doc["outputs"])} outputs, '
            f'{len(doc["failures"])} failures</small></h2><p class="meta"><code>{esc(params)}</code></p>'
            f'<ul>{pages}</ul><div class="grid">{figs}</div></section>')
    options = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in sorted(set(commands)))
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>visctl runs</title><style>"
            "body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa}"
            ".grid{display:flex;flex-wrap:wrap;gap:.6rem} figure{margin:0;background:#fff;border:1px solid #ddd;"
            "padding:.3rem;max-width:340px} figure img{max-width:330px;max-height:240px;display:block}"
            "figcaption{font-size:.8rem} .meta{color:#555;font-size:.85rem}</style></head><body>"
            "<h1>visctl runs</h1><label>command <select id='cmd' onchange='f()'><option value=''>all</option>"
            f"{options}</select></label>" + "\n".join(sections) +
            "<script>function f(){var v=document.getElementById('cmd').value;"
            "document.querySelectorAll('section').forEach(function(s){"
            "s.style.display=(!v||s.dataset.command===v)?'':'none';});}</script></body></html>")
    atomic_write(root / INDEX, page.encode())
    return root / INDEX


BACKENDS = ("local", "tensorboard", "wandb")


def check_backend(name: str) -> None:
    """Fail before any work when a vis backend's package is missing."""
    from visctl.errors import VisctlError

    if name not in BACKENDS:
        raise VisctlError(f"unknown --backend {name!r}", hint=f"use one of {', '.join(BACKENDS)}")
    needs = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name)
    if needs:
        import importlib.util

        if importlib.util.find_spec(needs) is None:
            raise VisctlError(f"--backend {name} needs the {needs} package",
                              hint=f'pip install "visctl[{name}]" (or pip install {needs})')


def push_to_backend(name: str, out_dir: Path, images: list[tuple[str, Path]], command: str) -> Path:
    """Log the run's images through an mmengine vis backend (LocalVisBackend, TensorboardVisBackend or
    WandbVisBackend, offline unless wandb is configured); returns the backend's save directory."""
    import uuid

    import cv2
    from mmengine.visualization import Visualizer

    kind = {"local": "LocalVisBackend", "tensorboard": "TensorboardVisBackend", "wandb": "WandbVisBackend"}[name]
    backend: dict[str, Any] = dict(type=kind)
    if name == "wandb":
        if not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
            os.environ["WANDB_MODE"] = "offline"  # never upload unless the user set wandb up
        backend["init_kwargs"] = dict(project="visctl", name=command, dir=str(out_dir))
    save_dir = Path(out_dir) / "vis_data"
    vis = Visualizer.get_instance(f"visctl-{uuid.uuid4().hex}", vis_backends=[backend], save_dir=str(save_dir))
    for step, (tag, path) in enumerate(images):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            vis.add_image(tag, cv2.cvtColor(img, cv2.COLOR_BGR2RGB), step=step)
    vis.close()
    return save_dir


def scatter_html(coords: Any, labels: Any, class_names: list[str], names: list[str], thumbs: list[str] | None,
                 title: str, colors: list[tuple[float, float, float]]) -> str:
    """A self-contained interactive scatter (SVG + a few lines of JS): hover a point to see its image,
    class and file; no server, no external scripts."""
    import numpy as np

    xy = np.asarray(coords, dtype=np.float64)
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    norm = (xy - lo) / span * 760 + 20
    hexes = ["#{:02x}{:02x}{:02x}".format(*(int(c * 255) for c in col)) for col in colors]
    points = []
    for i, ((x, y), lab) in enumerate(zip(norm, labels)):
        lab = int(lab)
        cls = class_names[lab] if 0 <= lab < len(class_names) else str(lab)
        points.append(f'<circle cx="{x:.1f}" cy="{800 - y:.1f}" r="4" fill="{hexes[lab % len(hexes)]}" '
                      f'data-i="{i}" data-c="{html.escape(cls)}" data-n="{html.escape(names[i])}"></circle>')
    legend = "".join(f'<span><i style="background:{hexes[c % len(hexes)]}"></i>{html.escape(n)}</span>'
                     for c, n in enumerate(class_names) if c in set(int(v) for v in labels))
    thumbs_js = json.dumps(thumbs or [])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1rem}} svg{{border:1px solid #ccc;background:#fff}}
circle{{opacity:.85}} circle:hover{{stroke:#000;stroke-width:2}}
#tip{{position:fixed;display:none;background:#fff;border:1px solid #888;padding:4px;font-size:12px;pointer-events:none}}
#tip img{{display:block;width:96px;image-rendering:pixelated}} .lg span{{margin-right:1em}}
.lg i{{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:5px}}</style></head><body>
<h1 style="font-size:1.1rem">{html.escape(title)}</h1><div class="lg">{legend}</div>
<svg width="800" height="800" viewBox="0 0 800 800">{''.join(points)}</svg><div id="tip"></div>
<script>
var T={thumbs_js};var tip=document.getElementById('tip');
document.querySelectorAll('circle').forEach(function(c){{
c.addEventListener('mousemove',function(e){{var i=+c.dataset.i;
tip.innerHTML=(T[i]?'<img src="'+T[i]+'">':'')+'<b>'+c.dataset.c+'</b><br>'+c.dataset.n;
tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+12)+'px';tip.style.display='block';}});
c.addEventListener('mouseleave',function(){{tip.style.display='none';}});}});
</script></body></html>
"""
