#!/usr/bin/env bash
# Score a directory of shards with a reward model as a SLURM array job: task i scores shard file i.
#
#   sbatch --array=0-$(( $(ls shards/*.jsonl.zst | wc -l) - 1 )) --gres=gpu:1 \
#       bin/score-slurm.sh MODEL_DIR SHARD_DIR OUT_DIR [extra `synpref score` flags...]
#
# Each task writes OUT_DIR/<shard name> atomically. A preempted or requeued task resumes where it
# stopped (synpref score keeps OUT.resume.jsonl); a finished shard is skipped, so resubmitting the
# same array after failures only redoes what is missing. Run without SLURM to score every shard in turn.
# SHARD_PATTERN (e.g. 'kept-*.jsonl.zst') picks the shard files among the folder's streams.
set -euo pipefail

if [ "$#" -lt 3 ]; then
    sed -n '2,10p' "$0" >&2
    exit 2
fi
model=$1 shards=$2 out=$3
shift 3
mkdir -p "$out"
mapfile -t files < <(find "$shards" -maxdepth 1 -type f \( -name '*.jsonl.zst' -o -name '*.jsonl' -o -name '*.jsonl.gz' -o -name '*.parquet' \) \
    -name "${SHARD_PATTERN:-*}" | sort)
if [ "${#files[@]}" -eq 0 ]; then
    echo "score-slurm: no shard files in $shards" >&2
    exit 1
fi

score_one() {
    local file=$1 target
    shift
    target="$out/$(basename "$file")"
    target="${target%.jsonl}"; target="${target%.jsonl.gz}"; target="${target%.parquet}"
    target="${target%.jsonl.zst}.jsonl.zst"
    if [ -e "$target" ]; then
        echo "score-slurm: $target exists, skipping" >&2
        return 0
    fi
    # SLURM array variables must not shard the shard again: each task owns a whole file.
    env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT -u SLURM_ARRAY_TASK_MIN \
        synpref score -m "$model" "$file" -o "$target" "$@"
}

if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    index=$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0} ))
    if [ "$index" -ge "${#files[@]}" ]; then
        echo "score-slurm: task $index has no shard (${#files[@]} files)" >&2
        exit 0
    fi
    score_one "${files[$index]}" "$@"
else
    for file in "${files[@]}"; do
        score_one "$file" "$@"
    done
fi
