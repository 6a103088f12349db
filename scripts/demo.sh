#!/usr/bin/env bash
# One command: set up .venv and run the demo on the built-in synthetic world.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh plots
exec .venv/bin/distinit demo "$@"
