"""The HTML pages visctl writes: a run's gallery, the output root's index of runs, the t-SNE scatter.

All three share one page shell (:func:`page`): self-contained (inline style and script, relative links, no
server, no external assets), every name from a manifest or from data escaped as text.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

# the style every page starts from; each page adds its own rules after it
BASE_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}"
              "h1{font-size:1.3rem} .meta{color:#555;font-size:.9rem} code{font-size:.85rem}"
              ".grid{display:flex;flex-wrap:wrap;gap:1rem}"
              "figure{margin:0;background:#fff;border:1px solid #ddd;padding:.5rem}"
              "figure img{height:auto;display:block} figcaption{font-size:.85rem;margin-top:.3rem}")


def _text(value: Any) -> str:
    """Any value from a manifest or from data as HTML-escaped text (quotes included, for attributes too)."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _href(path: Any) -> str:
    """A file path as an escaped relative URL: percent-encoded, so a name with ``#``, ``?``, ``%`` or ``:``
    links to the file and can never become a ``javascript:`` or other URL scheme."""
    from urllib.parse import quote

    return html.escape(quote(str(path).replace(os.sep, "/")), quote=True)


def _script_json(value: Any) -> str:
    """JSON to embed in a ``<script>``: ``<``, ``>`` and ``&`` escaped so no string can close the script."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(title: str, body: str, style: str = "", script: str = "") -> str:
    """The one page shell: ``title`` is escaped here; ``body``, ``style`` and ``script`` are the caller's
    markup, in which every data value must already be escaped (:func:`_text`, :func:`_href`, :func:`_script_json`)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_text(title)}</title>\n'
            # the mark by which visctl knows its own page (it never replaces an index.html it did not write)
            '<meta name="generator" content="visctl">\n'
            f"<style>{BASE_STYLE}\n{style}</style></head><body>\n{body}\n"
            + (f"<script>\n{script}\n</script>\n" if script else "") + "</body></html>\n")


# ---- a run's gallery -----------------------------------------------------------------------------------

_RUN_STYLE = ("figure{max-width:520px} figure img{max-width:500px} .fail{color:#a00}"
              " input{margin:.5rem 0;padding:.3rem;width:20rem}")
_RUN_SCRIPT = """function f(){var q=document.getElementById('q').value.toLowerCase();
document.querySelectorAll('figure').forEach(function(e){
e.style.display=e.dataset.caption.indexOf(q)>=0?'':'none';});}"""


def render_index(manifest: dict[str, Any]) -> str:
    """A self-contained gallery page for one run (relative links, no server, no external assets)."""
    esc = _text
    figures = []
    for out in manifest["outputs"]:
        if out["kind"] != "image":
            continue
        cap = str(out.get("caption") or out["path"])
        figures.append(f'<figure data-caption="{esc(cap.lower())}"><a href="{_href(out["path"])}">'
                       f'<img src="{_href(out["path"])}" alt="{esc(cap)}" loading="lazy"></a>'
                       f"<figcaption>{esc(cap)}</figcaption></figure>")
    links = "".join(f'<li><a href="{_href(o["path"])}">{esc(o["path"])}</a> {esc(o.get("caption") or "")}</li>'
                    for o in manifest["outputs"] if o["kind"] == "page")
    if links:
        figures.insert(0, f"<ul>{links}</ul>")
    fails = "".join(f'<li class="fail">{esc(f["path"])}: {esc(f["error"])}</li>' for f in manifest["failures"])
    notes = "".join(f"<li>{esc(n)}</li>" for n in manifest["notes"])
    params = ", ".join(f"{k}={v}" for k, v in manifest["params"].items() if v not in (None, False, [], ""))
    body = "\n".join([
        f"<h1>visctl {esc(manifest['command'])}</h1>",
        f'<p class="meta">status: <b>{esc(manifest["status"])}</b> &middot; {len(figures)} images &middot; '
        f'{len(manifest["failures"])} failures &middot; {manifest["timings"].get("total_s", "?")}s</p>',
        f'<p class="meta"><code>{esc(params)}</code></p>',
        f"<ul class='meta'>{notes}</ul>" if notes else "",
        '<input id="q" placeholder="filter by caption" oninput="f()">',
        '<div class="grid">', *figures, "</div>",
        f"<h2>Failures</h2><ul>{fails}</ul>" if fails else ""])
    return page(f"visctl {manifest['command']}", body, _RUN_STYLE, _RUN_SCRIPT)


# ---- the output root's index of runs -------------------------------------------------------------------

_ROOT_STYLE = (".grid{gap:.6rem} figure{padding:.3rem;max-width:340px} figure img{max-width:330px;max-height:240px}"
               " figcaption{font-size:.8rem} .meta{font-size:.85rem}")
_ROOT_SCRIPT = """function f(){var v=document.getElementById('cmd').value;
document.querySelectorAll('section').forEach(function(s){
s.style.display=(!v||s.dataset.command===v)?'':'none';});}"""


def index_manifest(path: Path) -> dict[str, Any] | None:
    """A run's manifest.json as the root index needs it, or None when it is not one visctl could have written.

    Unreadable or invalid JSON, a document that is not an object, a missing or mistyped ``command``,
    ``outputs`` or ``params``: None. Output entries without a string ``path`` are dropped.
    """
    try:
        doc = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError):  # ValueError covers JSONDecodeError and bad UTF-8
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("command"), str):
        return None
    outputs, params = doc.get("outputs", []), doc.get("params", {})
    if not isinstance(outputs, list) or not isinstance(params, dict):
        return None
    failures = doc.get("failures", [])
    return dict(doc, command=doc["command"], params=params, status=str(doc.get("status", "?")),
                outputs=[o for o in outputs if isinstance(o, dict) and isinstance(o.get("path"), str)],
                failures=failures if isinstance(failures, list) else [])


def render_root_index(root: Path) -> str:
    """The page over every run directory under ``root`` (each holding a manifest.json): each run's images
    with their parameters, interactive pages linked, filterable by command."""
    sections = []
    commands = []
    esc = _text
    for manifest_path in sorted(Path(root).glob("*/manifest.json")):
        doc = index_manifest(manifest_path)
        if doc is None:  # another tool's file, a run being written, a damaged file: not ours to list
            continue
        run = manifest_path.parent.name
        commands.append(doc["command"])
        figs = "".join(
            f'<figure><a href="{_href(run)}/{_href(o["path"])}"><img src="{_href(run)}/{_href(o["path"])}" '
            f'alt="{esc(o.get("caption") or o["path"])}" loading="lazy"></a>'
            f'<figcaption>{esc(o.get("caption") or "")}</figcaption></figure>'
            for o in doc["outputs"] if o.get("kind") == "image")
        pages = "".join(f'<li><a href="{_href(run)}/{_href(o["path"])}">{esc(o.get("caption") or o["path"])}</a></li>'
                        for o in doc["outputs"] if o.get("kind") == "page")
        params = ", ".join(f"{k}={v}" for k, v in doc["params"].items()
                           if v not in (None, False, [], "") and k not in ("inputs", "steps"))
        sections.append(
            f'<section data-command="{esc(doc["command"])}"><h2><a href="{_href(run)}/index.html">'
            f'{esc(doc["command"])}</a> <small>{esc(doc["status"])}, {len(doc["outputs"])} outputs, '
            f'{len(doc["failures"])} failures</small></h2><p class="meta"><code>{esc(params)}</code></p>'
            f'<ul>{pages}</ul><div class="grid">{figs}</div></section>')
    options = "".join(f'<option value="{esc(c)}">{esc(c)}</option>' for c in sorted(set(commands)))
    body = ("<h1>visctl runs</h1><label>command <select id='cmd' onchange='f()'><option value=''>all</option>"
            f"{options}</select></label>\n" + "\n".join(sections))
    return page("visctl runs", body, _ROOT_STYLE, _ROOT_SCRIPT)


def write_root_index(root: Path) -> Path:
    """Write :func:`render_root_index` to ``root/index.html`` (atomically); returns its path."""
    from visctl.output.files import atomic_write
    from visctl.output.manifest import INDEX, check_record_files

    target = Path(root) / INDEX
    check_record_files(Path(root), manifest=False)  # another tool's index.html there is never replaced
    atomic_write(target, render_root_index(Path(root)).encode())
    return target


# ---- the t-SNE scatter ---------------------------------------------------------------------------------

_SCATTER_STYLE = """body{margin:1rem} svg{border:1px solid #ccc;background:#fff}
circle{opacity:.85} circle:hover{stroke:#000;stroke-width:2}
#tip{position:fixed;display:none;background:#fff;border:1px solid #888;padding:4px;font-size:12px;pointer-events:none}
#tip img{display:block;width:96px;image-rendering:pixelated} .lg span{margin-right:1em}
.lg i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:5px}"""
# the tip is built with DOM calls: names and classes are set as text, never parsed as HTML
_SCATTER_SCRIPT = """var tip=document.getElementById('tip');
function add(tag,text){var e=document.createElement(tag);
if(text!==undefined){e.textContent=text;}tip.appendChild(e);return e;}
document.querySelectorAll('circle').forEach(function(c){
c.addEventListener('mousemove',function(e){var i=+c.dataset.i;
tip.replaceChildren();if(T[i]){add('img').src=T[i];}add('b',c.dataset.c);add('br');
tip.appendChild(document.createTextNode(c.dataset.n));
tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+12)+'px';tip.style.display='block';});
c.addEventListener('mouseleave',function(){tip.style.display='none';});});"""


def scatter_html(coords: Any, labels: Any, class_names: list[str], names: list[str], thumbs: list[str] | None,
                 title: str, colors: list[tuple[float, float, float]]) -> str:
    """A self-contained interactive scatter (SVG + a few lines of JS): hover a point to see its image,
    class and file; no server, no external scripts."""
    import numpy as np

    from visctl.classes import label

    xy = np.asarray(coords, dtype=np.float64)
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    norm = (xy - lo) / span * 760 + 20
    hexes = ["#{:02x}{:02x}{:02x}".format(*(int(c * 255) for c in col)) for col in colors]
    points = []
    for i, ((x, y), lab) in enumerate(zip(norm, labels)):
        lab = int(lab)
        cls = label(class_names, lab)
        points.append(f'<circle cx="{x:.1f}" cy="{800 - y:.1f}" r="4" fill="{hexes[lab % len(hexes)]}" '
                      f'data-i="{i}" data-c="{_text(cls)}" data-n="{_text(names[i])}"></circle>')
    legend = "".join(f'<span><i style="background:{hexes[c % len(hexes)]}"></i>{_text(n)}</span>'
                     for c, n in enumerate(class_names) if c in set(int(v) for v in labels))
    # only data: URIs of our own PNG thumbnails; anything else would not be an image
    thumbs_js = _script_json([t if isinstance(t, str) and t.startswith("data:image/png;base64,") else ""
                              for t in thumbs or []])
    body = (f'<h1 style="font-size:1.1rem">{_text(title)}</h1><div class="lg">{legend}</div>\n'
            f'<svg width="800" height="800" viewBox="0 0 800 800">{"".join(points)}</svg><div id="tip"></div>')
    return page(title, body, _SCATTER_STYLE, f"var T={thumbs_js};" + _SCATTER_SCRIPT)
