"""``--show``: the outputs in a window, one at a time, where a display exists."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def show_images(paths: list[Path], warn: Callable[[str], Any], interval: float | None = None) -> None:
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
