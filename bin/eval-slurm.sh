#!/usr/bin/env bash
# Evaluate a list of reward-model checkpoints on a benchmark suite as a SLURM array, then merge the
# per-checkpoint reports into one side-by-side report per benchmark.
#
#   bin/eval-slurm.sh submit CHECKPOINTS SUITE OUT [sbatch options...]   # array of tasks + a merge job
#   bin/eval-slurm.sh task   CHECKPOINTS SUITE OUT   # one array task: checkpoint number SLURM_ARRAY_TASK_ID
#   bin/eval-slurm.sh merge  CHECKPOINTS SUITE OUT   # join OUT/<entry>/<name>/report.json per suite entry
#
# CHECKPOINTS: one reward model per line, `[NAME=]PATH` (NAME defaults to the directory name; a bare
#   NAME that is not a path reads scores.NAME already in a pair stream). Blank lines and #comments skipped.
# SUITE: one `synpref eval` subcommand per line with its arguments, e.g.
#   pairs /data/held-out.jsonl.zst --by source
#   rewardbench --data /data/reward-bench/filtered.parquet
#   rmbench --data /data/rm-bench/total_dataset.json
# Task k writes OUT/<NN-subcommand>/<NAME>/{report.json,report.md,*.png} (and rewards.jsonl.zst for the
# benchmark commands), so a re-run after preemption redoes only the missing reports.
# Environment: SYNPREF (default: synpref), EVAL_ARGS (extra flags for every eval run, e.g. --engine vllm).
set -euo pipefail

usage() { sed -n '2,20p' "$0" >&2; exit 2; }
[[ $# -ge 4 ]] || usage
mode=$1 checkpoints=$2 suite=$3 out=$4
shift 4
synpref=${SYNPREF:-synpref}
read -r -a eval_args <<< "${EVAL_ARGS:-}"

entries() { grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$1"; }
mapfile -t models < <(entries "$checkpoints")
mapfile -t benches < <(entries "$suite")
[[ ${#models[@]} -gt 0 ]] || { echo "eval-slurm: no checkpoints in $checkpoints" >&2; exit 2; }
[[ ${#benches[@]} -gt 0 ]] || { echo "eval-slurm: no suite entries in $suite" >&2; exit 2; }

name_of() {  # NAME=PATH -> NAME; PATH -> its last component
    local spec=$1
    if [[ $spec == *=* && ! -e $spec ]]; then echo "${spec%%=*}"; else basename "${spec%/}"; fi
}
entry_dir() { printf '%s/%02d-%s' "$out" "$1" "$(awk '{print $1}' <<<"${benches[$1]}")"; }

case $mode in
submit)
    mkdir -p "$out/logs"
    job=$(sbatch --parsable --array=0-$(( ${#models[@]} - 1 )) --output="$out/logs/eval-%A_%a.log" "$@" \
          --wrap="$(printf '%q ' "$0" task "$checkpoints" "$suite" "$out")")
    sbatch --parsable --dependency=afterok:"$job" --output="$out/logs/merge-%j.log" \
          --wrap="$(printf '%q ' "$0" merge "$checkpoints" "$suite" "$out")"
    echo "eval-slurm: array job $job (${#models[@]} checkpoints x ${#benches[@]} benchmarks)" >&2
    ;;
task)
    index=$(( ${SLURM_ARRAY_TASK_ID:?task mode needs SLURM_ARRAY_TASK_ID} - ${SLURM_ARRAY_TASK_MIN:-0} ))
    (( index >= 0 && index < ${#models[@]} )) || { echo "eval-slurm: no checkpoint number $index" >&2; exit 2; }
    spec=${models[$index]}
    name=$(name_of "$spec")
    for i in "${!benches[@]}"; do
        dir="$(entry_dir "$i")/$name"
        [[ -s $dir/report.json ]] && { echo "eval-slurm: $dir done, skipped" >&2; continue; }
        read -r -a words <<<"${benches[$i]}"
        command=${words[0]}
        extra=()
        [[ $command != pairs ]] && extra=(--save-scores "$dir.rewards.jsonl.zst")
        # The pair stream's --shard would split the data, not the models: keep the whole input per task.
        env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT -u SLURM_ARRAY_TASK_MIN \
            "$synpref" eval "${words[@]}" -m "$name=${spec#*=}" "${extra[@]}" "${eval_args[@]}" \
            --save "$dir.partial" > /dev/null
        rm -rf "$dir" && mv "$dir.partial" "$dir"
    done
    ;;
merge)
    for i in "${!benches[@]}"; do
        dir=$(entry_dir "$i")
        reports=()
        for spec in "${models[@]}"; do
            report="$dir/$(name_of "$spec")/report.json"
            [[ -s $report ]] && reports+=("$report") || echo "eval-slurm: missing $report" >&2
        done
        [[ ${#reports[@]} -gt 0 ]] || continue
        mkdir -p "$dir/merged"
        "$synpref" eval merge "${reports[@]}" --save "$dir/merged" | tee "$dir/merged/report.txt"
    done
    ;;
*) usage ;;
esac
