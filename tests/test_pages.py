"""The three HTML pages (run gallery, root index, t-SNE scatter) share one page shell; moved names stay importable."""

from __future__ import annotations

import json

import numpy as np

from visctl import gallery

HOSTILE = '</title><script>window.__pwned=1</script>'


def _manifest(command: str = "cam") -> dict:
    return dict(command=command, status="ok", outputs=[dict(path="a b#.png", kind="image", caption=HOSTILE)],
                failures=[], notes=[HOSTILE], params=dict(method=HOSTILE), timings=dict(total_s=1.0))


def _pages(tmp_path) -> dict[str, str]:
    run = tmp_path / "cam"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(_manifest()))
    return {
        "run": gallery.render_index(_manifest()),
        "root": gallery.render_root_index(tmp_path),
        "scatter": gallery.scatter_html(np.array([[0.0, 1.0], [1.0, 0.0]]), [0, 1], ["a", HOSTILE], ["x", HOSTILE],
                                        None, HOSTILE, [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]),
    }


def test_every_page_is_the_one_shell_with_its_data_escaped(tmp_path):
    for name, text in _pages(tmp_path).items():
        head = text[:text.index("<style>")]
        assert head.startswith('<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>'), name
        assert gallery.BASE_STYLE in text and text.endswith("</body></html>\n"), name
        assert text.count("<script>") == 1 and "__pwned=1</script>" not in text, name  # only the page's own script
        assert "<title>" in head and "</title><script>" not in head, name


def test_write_root_index_writes_the_rendered_page(tmp_path):
    pages = _pages(tmp_path)
    path = gallery.write_root_index(tmp_path)
    assert path == tmp_path / "index.html" and path.read_text() == pages["root"]
    assert 'href="cam/index.html"' in pages["root"] and 'src="cam/a%20b%23.png"' in pages["root"]

