"""Print the command lines of the seed documents (../shared/seeds/*.txt) as tests/seeds/seed_lines.txt holds them.

A command starts at a line beginning with ``python`` inside a code block and goes on over lines that end in a
backslash, and over lines that begin with ``--`` (the docs break some lines without one; the intent is one
command). Synopses with ``${PLACEHOLDERS}`` or ``[--optional]`` brackets are not runnable and are left out:
README's flag tables cover their flags.
"""

from __future__ import annotations

import sys
from pathlib import Path


def commands(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("python ") and ".py" in line:
            start, parts = i + 1, [line.rstrip("\\").strip()]
            while (lines[i].rstrip().endswith("\\") or (i + 1 < len(lines) and lines[i + 1].strip().startswith("--"))) \
                    and i + 1 < len(lines) and lines[i + 1].strip() and not lines[i + 1].strip().startswith(("#", "`")):
                i += 1
                parts.append(lines[i].strip().rstrip("\\").strip())
            cmd = " ".join(p for p in parts if p)
            if "${" not in cmd and "[--" not in cmd:
                found.append((start, " ".join(cmd.split())))
        i += 1
    return found


def main(folder: str) -> None:
    for path in sorted(Path(folder).glob("[0-9]*.txt")):
        for line, cmd in commands(path):
            print(f"{path.name}:{line}\t{cmd}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[3] / "shared" / "seeds"))
