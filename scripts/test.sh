#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite: unit tests, doctests, the slow
# statistical checks and the warning-free Sphinx build (tests/test_docs.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
