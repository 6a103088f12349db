#!/usr/bin/env bash
# Run a tiny instance of every kind of run into OUT: the demo (every row), each `reproduce`
# experiment (one seed), a two-stage chain, cache-targets, store-clips, and a direct distill +
# finetune pair. Two trees made on two commits compare with scripts/runs_fingerprint.py A B.
# Usage: scripts/no_run_changes.sh OUT [PART]   (PART: demo, reproduce, direct; default all)
set -euo pipefail
OUT=$(realpath -m "$1"); PART=${2:-all}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src"  # this checkout's code, whatever the venv was installed from
D=".venv/bin/python -m distinit.cli"
export OMP_NUM_THREADS=1
TINY=(size=tiny threads=1 figures=false "all=[model.width=8, data.num_test_clips=2, optim.epochs=1, optim.batch_size=4]"
      "teacher=[model.width=8]" "inflation_source=[model.width=8]" "scene_net=[model.width=8]")
mkdir -p "$OUT"
if [[ $PART == all || $PART == demo ]]; then
  $D demo out_dir="$OUT/demo/run" "${TINY[@]}" > "$OUT/demo.log" 2>&1
fi
if [[ $PART == all || $PART == reproduce ]]; then
  for e in frames loss entropy data teachers temperature flow modist cache auxskd; do
    $D reproduce $e out_dir="$OUT/rep/r" "${TINY[@]::2}" "${TINY[@]:3}" --seeds 0 --doc "" > "$OUT/rep-$e.log" 2>&1
  done
fi
if [[ $PART == all || $PART == direct ]]; then
  W="$OUT/direct/world"
  $D synth "$W" --size tiny --seed 0 --quiet > "$OUT/direct.log" 2>&1
  $D train-image configs/demo/teacher.yaml model.width=8 optim.epochs=1 optim.batch_size=8 threads=1 \
     data.images="$W/objects/train" data.images_test="$W/objects/test" \
     out_dir="$OUT/direct/teacher" >> "$OUT/direct.log" 2>&1
  T="$OUT/direct/teacher/teacher.pt"
  COMMON=(data.cache_dir="$OUT/direct/cache" threads=1 model.width=8 optim.epochs=1 optim.batch_size=4 data.num_test_clips=2)
  $D distill configs/demo/distill.yaml "${COMMON[@]}" data.videos="$W/corpus/videos" \
     "distill.teachers=[{spec: 'ckpt:$T'}]" out_dir="$OUT/direct/distill" >> "$OUT/direct.log" 2>&1
  $D finetune configs/demo/finetune.yaml "${COMMON[@]}" data.format=hmdb51 \
     data.video_root="$W/actions/videos" data.split_dir="$W/actions/splits" data.split=1 \
     model.init=checkpoint model.weights="$OUT/direct/distill/last.pt" \
     out_dir="$OUT/direct/finetune" >> "$OUT/direct.log" 2>&1
  $D cache-targets configs/demo/distill.yaml "${COMMON[@]}" data.videos="$W/corpus/videos" \
     "distill.teachers=[{spec: 'ckpt:$T'}]" distill.target_cache="$OUT/direct/targets" >> "$OUT/direct.log" 2>&1
  $D store-clips configs/demo/distill.yaml data.videos="$W/corpus/videos" data.cache_dir="$OUT/direct/store" >> "$OUT/direct.log" 2>&1
  cat > "$OUT/direct/chain.yaml" <<YAML
out_dir: $OUT/direct/chain
all: [data.cache_dir=$OUT/direct/cache, threads=1, model.width=8, optim.epochs=1, optim.batch_size=4, data.num_test_clips=2]
stages:
  - {name: auxskd, method: auxskd, config: configs/demo/auxskd.yaml, overrides: [data.videos=$W/corpus/videos]}
  - {name: finetune, method: finetune, config: configs/demo/finetune.yaml,
     overrides: [data.format=hmdb51, data.video_root=$W/actions/videos, data.split_dir=$W/actions/splits, data.split=1]}
YAML
  $D chain "$OUT/direct/chain.yaml" >> "$OUT/direct.log" 2>&1
fi
echo "done: $OUT"
