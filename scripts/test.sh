#!/usr/bin/env bash
# One command: set up .venv with every optional backend, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh full
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest -q "$@"
