#!/usr/bin/env bash
# Regenerate the shell completion scripts from the CLI (tests/test_cli.py fails when they are stale).
set -euo pipefail
cd "$(dirname "$0")"
for shell in bash zsh fish; do
  _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION=1 visctl --show-completion "$shell" > "visctl.$shell"
done

# the README's help block (tests/test_cli.py checks it too)
python - <<'PY'
import os, pathlib, re, subprocess
help_text = subprocess.run(["visctl", "--help"], capture_output=True, text=True, check=True,
                           env={**os.environ, "COLUMNS": "100"}).stdout.rstrip()
readme = pathlib.Path("../README.md")
block = f"<!-- help:start -->\n```text\n$ visctl --help\n{help_text}\n```\n<!-- help:end -->"
readme.write_text(re.sub(r"<!-- help:start -->.*?<!-- help:end -->", lambda _: block, readme.read_text(), flags=re.S))
PY
