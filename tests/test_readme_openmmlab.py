"""The install page's OpenMMLab section (docs/install.md): every command line names a visctl command and flags that
command has."""

from __future__ import annotations

import re
import shlex

from conftest import ROOT


def _section_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "install.md").read_text()
    start = text.index("## The OpenMMLab packages' own configs")
    end = text.find("\n## ", start + 10)
    blocks = re.findall(r"```bash\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.startswith("visctl ")]


def test_the_openmmlab_sections_command_lines_use_real_flags(invoke):
    commands = _section_commands()
    assert len(commands) >= 12 and {c[1] for c in commands} >= {"cam", "featmap", "boxam", "slice", "tsne", "recon",
                                                                "lr", "browse"}
    helps: dict[str, str] = {}
    for words in commands:
        name = words[1]
        if name not in helps:
            result = invoke(name, "--help")
            assert result.exit_code == 0, result.output
            helps[name] = result.stdout
        for flag in (w.split("=")[0] for w in words[2:] if w.startswith("-") and not w.lstrip("-").isdigit()):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[name]), f"visctl {name} has no {flag}"
