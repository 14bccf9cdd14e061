#!/usr/bin/env bash
#SBATCH --job-name=synpref-curate
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=%x-%A_%a.out
# Stage 2 of the two-stage curation (SPEC section 4) on a SLURM cluster: the bin/ scripts chained
# with `sbatch --dependency=afterok:JOBID`, so one command submits the whole run and every job starts
# once the jobs it reads from have succeeded.
#
#   bin/curate.sh submit WORK POOL...     # POOL: pair files or directories of shards
#
#   dedupe      bin/dedupe-slurm.sh: signatures (SHARDS tasks) -> clusters -> filter: WORK/clean/kept-I
#   gold-rm     bin/train-rm.sbatch: the gold RM, trained on every human-verified pair (GOLD)
#   gold-index  curate.sh index: the retrieval index of GOLD, the judges' examples
#   score-rm    bin/score-slurm.sh: each clean shard with the current best RM (RM) as scores.rm
#   score-gold  bin/score-slurm.sh: the same with the gold RM as scores.gold: WORK/scored/
#   route       curate.sh route: p > 0.5 to WORK/confident/, the rest with retrieved examples to WORK/to-judge/
#   judge       bin/annotate-slurm.sh: a vLLM server per task and `annotate judge`: WORK/judged/
#   filter      curate.sh filter: filter-consistent --recycle: WORK/curated/kept/ and WORK/curated/removed/
#   train       bin/train-rm.sbatch: the final RM on WORK/curated/kept/ (multi-node torchrun)
#   eval        bin/eval-slurm.sh: the current and the curated RM on SUITE: WORK/eval/
#
# Settings, from the environment (the submitting shell's environment reaches every job):
#   RM (required): the current best reward model, Stage 1's best checkpoint; BASE_RM (required): the
#   model the gold and final RMs start from (`synpref rm init`); GOLD (required): the human-verified
#   pairs; JUDGE (required): the judge model `vllm serve` loads; SUITE: a bin/eval-slurm.sh suite file
#   (default: `pairs HELDOUT`, HELDOUT being held-out pairs); SHARDS (64); JUDGE_TASKS (8);
#   BENCHMARKS: benchmark prompt files to decontaminate against; MAX_EXAMPLES (8); TRAIN_FLAGS,
#   JUDGE_FLAGS, SCORE_FLAGS: extra flags of train-rm, annotate judge and score; SBATCH_FLAGS: flags
#   of every sbatch (partition, account); GPU_SBATCH (--gpus-per-node=1): scoring jobs; CPU_SBATCH:
#   route, filter and index jobs. Each job skips outputs that exist, so after a failure the same
#   submit redoes only what is missing.
set -euo pipefail

SHARDS=${SHARDS:-64}
JUDGE_TASKS=${JUDGE_TASKS:-8}
MAX_EXAMPLES=${MAX_EXAMPLES:-8}
SYNPREF=${SYNPREF:-synpref}
read -r -a BENCH <<< "${BENCHMARKS:-}"
read -r -a SBATCH_EXTRA <<< "${SBATCH_FLAGS:-}"
read -r -a GPU <<< "${GPU_SBATCH:---gpus-per-node=1}"
read -r -a CPU <<< "${CPU_SBATCH:-}"
read -r -a TRAIN <<< "${TRAIN_FLAGS:-}"
read -r -a JUDGE_EXTRA <<< "${JUDGE_FLAGS:-}"
read -r -a SCORE_EXTRA <<< "${SCORE_FLAGS:-}"

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/^#SBATCH/' "$0" >&2; exit 2; }  # the header
step=${1:-}; [[ -n $step ]] || usage; shift

# The file of array task I: every per-shard stream is named like dedupe's kept-I.jsonl.zst.
shard_file() { printf '%s/kept-%05d.jsonl.zst' "$1" "$(( ${SLURM_ARRAY_TASK_ID:?run as a SLURM array task} - ${SLURM_ARRAY_TASK_MIN:-0} ))"; }

case $step in
  submit)
    [[ $# -ge 2 ]] || usage
    work=$1; shift
    : "${RM:?set RM to the current best reward model}" "${BASE_RM:?set BASE_RM}" "${GOLD:?set GOLD}" "${JUDGE:?set JUDGE}"
    bin=$(dirname "$(readlink -f "$0")")
    self="$bin/curate.sh"
    last=$((SHARDS - 1))
    mkdir -p "$work/logs"
    if [[ -z ${SUITE:-} ]]; then
      SUITE="$work/suite.txt"
      echo "pairs ${HELDOUT:?set SUITE or HELDOUT}" > "$SUITE"
    fi
    printf 'current=%s\ncurated=%s\n' "$RM" "$work/rm-curated/best" > "$work/checkpoints.txt"
    submit() { sbatch --parsable "${SBATCH_EXTRA[@]}" "$@"; }
    export SHARD_PATTERN='kept-*.jsonl.zst'  # score-slurm.sh: the kept shards of WORK/clean, not removed-I

    decontaminate=()
    for file in "${BENCH[@]}"; do decontaminate+=(--decontaminate "$file"); done
    dedupe=$(SYNPREF_DEDUPE_FLAGS="${decontaminate[*]}" "$bin/dedupe-slurm.sh" submit "$SHARDS" \
      "$work/dedupe" "$work/clean" "$@")
    gold_rm=$(submit --job-name=gold-rm --output="$work/logs/gold-rm-%j.out" \
      "$bin/train-rm.sbatch" "$BASE_RM" "$GOLD" "$GOLD" "$work/rm-gold" "${TRAIN[@]}")
    gold_index=$(submit "${CPU[@]}" --job-name=gold-index --output="$work/logs/gold-index-%j.out" \
      "$self" index "$work")
    score_rm=$(submit "${GPU[@]}" --dependency=afterok:"$dedupe" \
      --array=0-"$last" --job-name=score-rm --output="$work/logs/score-rm-%a.out" \
      "$bin/score-slurm.sh" "$RM" "$work/clean" "$work/scored-rm" --name rm "${SCORE_EXTRA[@]}")
    score_gold=$(submit "${GPU[@]}" --dependency=afterok:"$score_rm:$gold_rm" --array=0-"$last" \
      --job-name=score-gold --output="$work/logs/score-gold-%a.out" \
      "$bin/score-slurm.sh" "$work/rm-gold/best" "$work/scored-rm" "$work/scored" --name gold "${SCORE_EXTRA[@]}")
    route=$(submit "${CPU[@]}" --dependency=afterok:"$score_gold:$gold_index" --array=0-"$last" \
      --job-name=route --output="$work/logs/route-%a.out" "$self" route "$work")
    judge=$(submit --dependency=afterok:"$route" --array=0-$((JUDGE_TASKS - 1)) --job-name=judge \
      --output="$work/logs/judge-%a.out" "$bin/annotate-slurm.sh" "$JUDGE" "$work/to-judge" "$work/judged" \
      --examples "$GOLD" --max-examples "$MAX_EXAMPLES" "${JUDGE_EXTRA[@]}")
    filter=$(submit "${CPU[@]}" --dependency=afterok:"$judge" --array=0-"$last" --job-name=filter \
      --output="$work/logs/filter-%a.out" "$self" filter "$work")
    train=$(submit --dependency=afterok:"$filter" --job-name=train-curated --output="$work/logs/train-%j.out" \
      "$bin/train-rm.sbatch" "$BASE_RM" "$work/curated/kept" "$GOLD" "$work/rm-curated" "${TRAIN[@]}")
    evaluation=$("$bin/eval-slurm.sh" submit "$work/checkpoints.txt" "$SUITE" "$work/eval" "${SBATCH_EXTRA[@]}" \
      "${GPU[@]}" --dependency=afterok:"$train")
    echo "curate: dedupe $dedupe, gold-rm $gold_rm, gold-index $gold_index, score-rm $score_rm," \
      "score-gold $score_gold, route $route, judge $judge, filter $filter, train $train, eval merge $evaluation" >&2
    echo "$evaluation"
    ;;
  index)
    [[ $# -eq 1 ]] || usage
    exec "$SYNPREF" retrieve --pool "${GOLD:?set GOLD}" --index "$1/gold.idx"
    ;;
  route)
    [[ $# -eq 1 ]] || usage
    work=$1 name=$(basename "$(shard_file .)")
    mkdir -p "$work"/{confident,unconfident,to-judge}
    [[ -e $work/to-judge/$name ]] && { echo "curate: $work/to-judge/$name exists, skipping" >&2; exit 0; }
    # The shard is a whole file: the array variables must not shard it again.
    env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT -u SLURM_ARRAY_TASK_MIN \
      "$SYNPREF" route --rm rm "$work/scored/$name" --confident "$work/confident/$name" \
      --unconfident "$work/unconfident/$name"
    env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT -u SLURM_ARRAY_TASK_MIN \
      "$SYNPREF" retrieve --index "$work/gold.idx" --queries "$work/unconfident/$name" --k-max "$MAX_EXAMPLES" \
      -o "$work/to-judge/$name"
    ;;
  filter)
    [[ $# -eq 1 ]] || usage
    work=$1 name=$(basename "$(shard_file .)")
    mkdir -p "$work/curated"/{kept,removed}
    [[ -e $work/curated/kept/$name ]] && { echo "curate: $work/curated/kept/$name exists, skipping" >&2; exit 0; }
    # Task I takes shard I/SHARDS of the confident and the judged pairs together (synpref reads the
    # array variables); --removed is written only when something is removed.
    "$SYNPREF" filter-consistent --gold gold --rm rm --recycle "$work/confident" "$work/judged" \
      --removed "$work/curated/removed/$name" -o "$work/curated/kept/$name"
    ;;
  *) usage ;;
esac
