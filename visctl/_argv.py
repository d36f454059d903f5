"""The seeds' argparse habits on a Typer command line: ``--target-layers a b`` as well as ``-t a,b -t c``.

The OpenMMLab tools declare their list options with ``nargs='+'`` (``--target-layers backbone.stage4 neck``,
``--target-category 238 281``, ``--class-idx 0 3``, ``--skip-type ToTensor Normalize``) and mmengine's
``DictAction`` takes ``--cfg-options a=1 b=2``. Click gives a repeatable option one word per occurrence, so
before Typer parses, every further word after such an option is turned into a repetition of it. A word ends
the list when it is an option, names an existing file or directory, matches a glob, or looks like a config
file, a checkpoint or a URL: the positional ``IMG... CONFIG [CHECKPOINT]`` are never taken as values.
Stdlib only: this runs before every command, ``--help`` and completion included.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Mapping
from pathlib import Path

# suffixes of the positional arguments (configs, checkpoints): words ending so never extend a list
_POSITIONAL_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".tar")


def ends_list(word: str, option: str) -> bool:
    """Whether ``word`` cannot be a further value of the multi-value ``option``."""
    if word.startswith("-") and not _is_number(word):
        return True
    if option in ("--cfg-options", "--cfg_options"):
        return "=" not in word  # DictAction: every value is key=value
    if "://" in word or word.lower().endswith(_POSITIONAL_SUFFIXES):
        return True
    try:
        if Path(word).exists():
            return True
    except OSError:  # a name too long for the file system is no path
        return False
    return glob.has_magic(word) and bool(glob.glob(word, recursive=True))


def expand(argv: list[str], multi: Iterable[str]) -> list[str]:
    """Repeat a multi-value option before each further word of its list (the seeds' ``nargs='+'``)."""
    multi = set(multi)
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        out.append(word)
        i += 1
        if word == "--":
            out.extend(argv[i:])
            break
        if word in multi and i < len(argv):
            out.append(argv[i])  # the first value is the option's own, whatever it looks like
            i += 1
            while i < len(argv) and not ends_list(argv[i], word):
                out += [word, argv[i]]
                i += 1
    return out


def normalize(argv: list[str], multi_by_command: Mapping[str, Iterable[str]]) -> list[str]:
    """``expand`` with the multi-value options of the subcommand named first in ``argv``."""
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            return argv[:i + 1] + expand(argv[i + 1:], multi_by_command.get(word, ()))
    return list(argv)


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True
