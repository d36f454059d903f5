#!/usr/bin/env bash
# Regenerate the shell completion scripts from the CLI (tests/test_cli.py fails when they are stale).
set -euo pipefail
cd "$(dirname "$0")"
for shell in bash zsh fish; do
  _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION=1 visctl --show-completion "$shell" > "visctl.$shell"
done
