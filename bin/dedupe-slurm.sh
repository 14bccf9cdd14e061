#!/usr/bin/env bash
# Run `synpref dedupe` in cluster mode as SLURM array jobs that merge by files.
#
#   bin/dedupe-slurm.sh submit N WORK OUT INPUT...   submit the three passes (N-way arrays, chained;
#                                                     prints the filter job's id)
#   bin/dedupe-slurm.sh signatures WORK INPUT...      body of array task I: WORK/signatures-I-of-N.npz
#   bin/dedupe-slurm.sh clusters WORK                 body of the single merge job: WORK/decisions.npz
#   bin/dedupe-slurm.sh filter WORK OUT INPUT...      body of array task I: OUT/kept-I.jsonl.zst,
#                                                     OUT/removed-I.jsonl.zst, OUT/errors-I.jsonl.zst
#
# Array tasks find their shard in SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT (synpref reads them).
# Extra dedupe flags (--key, --threshold, --decontaminate FILE, ...) go in SYNPREF_DEDUPE_FLAGS; they
# must be the same for every signatures task. SBATCH_FLAGS is passed to every sbatch (partition,
# time, memory). SYNPREF is the synpref executable (default: synpref on PATH).
set -euo pipefail

SYNPREF=${SYNPREF:-synpref}
read -r -a FLAGS <<< "${SYNPREF_DEDUPE_FLAGS:-}"
read -r -a SBATCH_EXTRA <<< "${SBATCH_FLAGS:-}"

usage() { sed -n '2,14p' "$0" >&2; exit 2; }

step=${1:-}; [[ -n $step ]] || usage; shift

case $step in
  submit)
    [[ $# -ge 4 ]] || usage
    count=$1 work=$2 out=$3; shift 3
    mkdir -p "$work" "$out"
    self=$(readlink -f "$0")
    first=$(sbatch --parsable "${SBATCH_EXTRA[@]}" --array=0-$((count - 1)) --job-name=dedupe-sig \
      --output="$work/signatures-%a.log" "$self" signatures "$work" "$@")
    second=$(sbatch --parsable "${SBATCH_EXTRA[@]}" --dependency=afterok:"$first" --job-name=dedupe-clu \
      --output="$work/clusters.log" "$self" clusters "$work")
    third=$(sbatch --parsable "${SBATCH_EXTRA[@]}" --dependency=afterok:"$second" --array=0-$((count - 1)) \
      --job-name=dedupe-fil --output="$work/filter-%a.log" "$self" filter "$work" "$out" "$@")
    echo "submitted signatures $first, clusters $second, filter $third" >&2
    echo "$third"  # for a later --dependency=afterok
    ;;
  signatures)
    [[ $# -ge 2 ]] || usage
    work=$1; shift
    : "${SLURM_ARRAY_TASK_ID:?run inside a SLURM array task (or set SLURM_ARRAY_TASK_ID/COUNT)}"
    exec "$SYNPREF" dedupe signatures --work "$work" --on-error skip "${FLAGS[@]}" "$@"
    ;;
  clusters)
    [[ $# -eq 1 ]] || usage
    exec "$SYNPREF" dedupe clusters --work "$1"
    ;;
  filter)
    [[ $# -ge 3 ]] || usage
    work=$1 out=$2; shift 2
    : "${SLURM_ARRAY_TASK_ID:?run inside a SLURM array task (or set SLURM_ARRAY_TASK_ID/COUNT)}"
    task=$(printf '%05d' "$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))")
    exec "$SYNPREF" dedupe filter --work "$work" --on-error skip --errors "$out/errors-$task.jsonl.zst" \
      -o "$out/kept-$task.jsonl.zst" --removed "$out/removed-$task.jsonl.zst" "$@"
    ;;
  *) usage ;;
esac
