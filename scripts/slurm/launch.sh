#!/usr/bin/env bash
# One node's part of a distinit job: the torchrun line that joins this node to the others, or
# the plain command on the first node for commands that run as one process. distinit.sbatch
# runs it through srun, one task per node; it runs the same by hand on one machine.
#
# Usage: scripts/slurm/launch.sh COMMAND [CONFIG.yaml] [key=value ...]   (as `distinit COMMAND`)
#
#   pretrain, distill, finetune, train-image   torchrun, with `--resume auto` added: a requeued
#                                              job continues its run, a first one starts it
#   store-clips, cache-targets                 torchrun; they continue by themselves
#   flow                                       torchrun, one process per node (each runs its
#                                              own --workers); it continues by itself
#   any other (chain, demo, ...)               one process, on the first node only
#
# Environment (distinit.sbatch sets DISTINIT_NNODES and DISTINIT_RDZV_* from Slurm):
#   DISTINIT_NNODES         nodes (default: $SLURM_NNODES, else 1)
#   GPUS_PER_NODE           processes per node (default: $SLURM_GPUS_ON_NODE, else 1)
#   DISTINIT_RDZV_HOST      the c10d rendezvous host and port (default: 127.0.0.1 and 29500)
#   DISTINIT_RDZV_PORT
#   DISTINIT_RDZV_ID        the rendezvous id (default: $SLURM_JOB_ID, else distinit)
#   DISTINIT_PYTHON         the Python that has distinit and torch (default: the repository's
#                           .venv/bin/python, else python3)
#   DISTINIT_STOP_TIMEOUT   seconds torchrun lets its workers finish a step and write a
#                           checkpoint after SIGTERM before it kills them (default 100;
#                           torchrun's own default is 30)
#   DISTINIT_STAGE_TO       a folder on this node's local disk (e.g. $TMPDIR/distinit-cache):
#                           pretrain, distill, finetune and train-image copy the run's
#                           data.cache_dir there once per node and read it from there
#                           (data.cache_dir=DISTINIT_STAGE_TO is added)
#   DISTINIT_SLURM_DRYRUN=1 print the command line instead of running it (and copy nothing)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() {
    echo "launch.sh: error: $*" >&2
    exit 2
}

[ $# -ge 1 ] || die "usage: launch.sh COMMAND [CONFIG.yaml] [key=value ...]"
command=$1
args=("$@")

python=${DISTINIT_PYTHON:-}
if [ -z "$python" ]; then
    python=python3
    [ -x "$repo/.venv/bin/python" ] && python=$repo/.venv/bin/python
fi

case "$command" in
    pretrain | distill | finetune | train-image) mode=torchrun resume=1 stage=1 ;;
    store-clips | cache-targets) mode=torchrun resume=0 stage=0 ;;
    flow) mode=torchrun resume=0 stage=0 per_node=1 ;;
    *) mode=single resume=0 stage=0 ;;
esac

if [ "$resume" = 1 ]; then
    for arg in "${args[@]:1}"; do
        case "$arg" in
            --overwrite)
                die "--overwrite in a job that is requeued would delete the run again at every" \
                    "requeue; delete the run first (or choose another out_dir=), then submit" \
                    "without --overwrite" ;;
            --resume | --resume=*) resume=0 ;;  # said already
        esac
    done
fi

# Node-local staging: the clip store read from local disk instead of the shared file system.
# Build it first on the shared one (`distinit store-clips`): this only copies it, once per node
# (again when the shared folder holds a store the copy lacks).
stage() {
    local from=$1 to=$2 mark=$2/.distinit-staged store
    local stale=""
    [ -f "$mark" ] && [ "$(cat "$mark")" = "$from" ] || stale=1
    for store in "$from"/*/; do
        [ -d "$store" ] && [ ! -d "$to/$(basename "$store")" ] && stale=1
    done
    [ -n "$stale" ] || return 0
    echo "launch.sh: copying $from to $to on $(hostname)" >&2
    mkdir -p "$to"
    rm -f "$mark"
    cp -a "$from/." "$to/"
    printf '%s\n' "$from" > "$mark"  # written last: a copy cut short is made again
}
if [ -n "${DISTINIT_STAGE_TO:-}" ] && [ "$stage" = 1 ]; then
    from=$("$python" "$here/cache_dir.py" "${args[@]}") || exit 2
    [ -n "$from" ] || die "DISTINIT_STAGE_TO is set but the run has no data.cache_dir to copy"
    [ -d "$from" ] || die "data.cache_dir $from does not exist; build its clip store first" \
                          "(distinit store-clips with the same config), then submit again"
    [ -n "${DISTINIT_SLURM_DRYRUN:-}" ] || stage "$from" "$DISTINIT_STAGE_TO"
    args+=("data.cache_dir=$DISTINIT_STAGE_TO")
fi
if [ "$resume" = 1 ]; then
    args+=(--resume auto)
fi

if [ "$mode" = torchrun ]; then
    line=("$python" -m torch.distributed.run
          "--nnodes=${DISTINIT_NNODES:-${SLURM_NNODES:-1}}"
          "--nproc-per-node=${per_node:-${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}}"
          --rdzv-backend=c10d
          "--rdzv-endpoint=${DISTINIT_RDZV_HOST:-127.0.0.1}:${DISTINIT_RDZV_PORT:-29500}"
          "--rdzv-id=${DISTINIT_RDZV_ID:-${SLURM_JOB_ID:-distinit}}"
          -m distinit.cli "${args[@]}")
    # What torchrun waits after SIGTERM (older releases ignore it and wait 30 s).
    export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${DISTINIT_STOP_TIMEOUT:-100}
else
    if [ "${SLURM_NODEID:-0}" != 0 ]; then
        exit 0  # a one-process command runs on the first node; the others have nothing to do
    fi
    line=("$python" -m distinit.cli "${args[@]}")
fi

if [ -n "${DISTINIT_SLURM_DRYRUN:-}" ]; then
    printf '%q ' "${line[@]}"
    echo
    exit 0
fi
exec "${line[@]}"
