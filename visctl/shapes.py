"""Synthetic shape scenes: deterministic images with known labels and boxes, for the demo models and tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

CLASSES = ("circle", "square", "triangle", "cross")


@dataclass
class Scene:
    """An RGB uint8 image with its objects: labels and boxes (x0, y0, x1, y1, pixels, exclusive end)."""

    image: Any
    labels: list[int]
    boxes: list[tuple[int, int, int, int]]

    def mask(self) -> Any:
        """(H, W) int64 class map: 0 background, ``label + 1`` on each object's pixels."""
        import numpy as np

        h, w = self.image.shape[:2]
        out = np.zeros((h, w), np.int64)
        for label, box in zip(self.labels, self.boxes):
            shape = np.zeros((h, w), np.uint8)
            draw_shape(shape, label, box, (255,))
            out[shape > 127] = label + 1
        return out


def _background(rng: np.random.Generator, h: int, w: int, clutter: bool = True) -> np.ndarray:
    import cv2
    import numpy as np

    base = rng.uniform(20, 90, size=3)
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * rng.uniform(-30, 30, size=3)
    img = np.clip(base + ramp + rng.normal(0, 8, size=(h, w, 3)), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 5)) if clutter else 0):  # clutter: thin lines the classifier must ignore
        p0 = tuple(int(v) for v in rng.integers(0, [w, h]))
        p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
        colour = tuple(int(v) for v in rng.integers(40, 140, size=3))
        cv2.line(img, p0, p1, colour, 1, cv2.LINE_AA)
    return img


def draw_shape(img: np.ndarray, label: int, box: tuple[int, int, int, int], colour: tuple[int, ...]) -> None:
    """Draw shape ``label`` filling ``box`` (x0, y0, x1, y1) in place."""
    import cv2
    import numpy as np

    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    kind = CLASSES[label]
    if kind == "circle":
        cv2.circle(img, ((x0 + x1) // 2, (y0 + y1) // 2), max(1, w // 2 - 1), colour, -1, cv2.LINE_AA)
    elif kind == "square":
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), colour, -1)
    elif kind == "triangle":
        pts = np.array([[x0 + w // 2, y0], [x0, y1 - 1], [x1 - 1, y1 - 1]], np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    else:  # cross
        t = max(2, w // 3)
        cv2.rectangle(img, (x0 + (w - t) // 2, y0), (x0 + (w + t) // 2 - 1, y1 - 1), colour, -1)
        cv2.rectangle(img, (x0, y0 + (h - t) // 2), (x1 - 1, y0 + (h + t) // 2 - 1), colour, -1)


def make_scene(seed: int, size: int | tuple[int, int] = 80, n_objects: int = 1, min_side: int = 14,
               max_side: int = 30, clutter: bool = True) -> Scene:
    """A deterministic scene: ``seed`` fixes everything; objects do not overlap; ``clutter`` adds thin
    random lines."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = (size, size) if isinstance(size, int) else size
    img = _background(rng, h, w, clutter)
    labels: list[int] = []
    boxes: list[tuple[int, int, int, int]] = []
    tries = 0
    while len(boxes) < n_objects and tries < 200 * n_objects:
        tries += 1
        side = int(rng.integers(min_side, max_side + 1))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        box = (x0, y0, x0 + side, y0 + side)
        if any(box[0] < b[2] + 2 and b[0] < box[2] + 2 and box[1] < b[3] + 2 and b[1] < box[3] + 2 for b in boxes):
            continue
        label = int(rng.integers(0, len(CLASSES)))
        colour = tuple(int(v) for v in rng.integers(150, 256, size=3))
        draw_shape(img, label, box, colour)
        labels.append(label)
        boxes.append(box)
    return Scene(image=img, labels=labels, boxes=boxes)


def write_scenes(folder: Any, seeds: range, size: int = 80, n_objects: int = 1) -> list[tuple[Any, Scene]]:
    """Write scenes as PNGs ``<class>/<seed>.png`` (an ImageFolder layout for one object); return them."""
    from pathlib import Path

    import cv2

    folder = Path(folder)
    out = []
    for seed in seeds:
        scene = make_scene(seed, size, n_objects)
        sub = folder / CLASSES[scene.labels[0]] if n_objects == 1 else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{seed:06d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        out.append((path, scene))
    return out


def write_coco(path: Any, scenes: list[tuple[Any, Scene]], root: Any = None) -> Any:
    """Write the scenes' objects as a COCO instances file (``bbox`` as [x, y, width, height]; ``file_name``
    relative to ``root``, else the file's name): the annotations ``visctl audit --annotations`` reads."""
    import json
    from pathlib import Path

    images: list[dict] = []
    annotations: list[dict] = []
    for i, (file, scene) in enumerate(scenes, 1):
        name = str(Path(file).relative_to(root)) if root is not None else Path(file).name
        h, w = scene.image.shape[:2]
        images.append(dict(id=i, file_name=name.replace("\\", "/"), height=h, width=w))
        for label, (x0, y0, x1, y1) in zip(scene.labels, scene.boxes):
            annotations.append(dict(id=len(annotations) + 1, image_id=i, category_id=label + 1, iscrowd=0,
                                    bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0)))
    doc = dict(images=images, annotations=annotations,
               categories=[dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)])
    Path(path).write_text(json.dumps(doc))
    return Path(path)
