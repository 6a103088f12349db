#!/usr/bin/env bash
# The demo's first-run wall time on a fresh clone (set-up and world included) and the full
# Table 1's time per seed, measured in one run on one machine (docs/RESULTS.md quotes it).
# Usage: scripts/time_first_run.sh [WORK_DIR] [SEEDS]   (defaults: a temporary folder, 0,1,2)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d)}
SEEDS=${2:-0,1,2}
rm -rf "$WORK/clone"
git clone -q "$REPO" "$WORK/clone"
cd "$WORK/clone"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; commit $(git rev-parse --short HEAD)"
start=$(date +%s)
bash scripts/demo.sh out_dir=runs/demo > "$WORK/demo.log" 2>&1
demo=$(( $(date +%s) - start ))
echo "demo first run (bash scripts/demo.sh, fresh clone, set-up and world included): ${demo} s"
start=$(date +%s)
.venv/bin/distinit reproduce table1 out_dir=runs/reproduce --seeds "$SEEDS" \
    --doc "$WORK/table1.md" > "$WORK/table1.log" 2>&1
table=$(( $(date +%s) - start ))
echo "distinit reproduce table1 --seeds $SEEDS: ${table} s"
grep -o "[0-9.]* min for the whole command" "$WORK/table1.md" || true
echo "logs and the table1 section: $WORK"
