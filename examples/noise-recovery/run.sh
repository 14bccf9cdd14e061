#!/usr/bin/env bash
# Does Stage 2 find flipped labels, and does an RM trained on what it keeps do better? (issue 16,
# docs/noise-recovery.md has the results.) Real pairs with reliable labels (arena-bench-v1: GPT-4
# scores 1-10, gap >= 2), a prompt-disjoint held-out set, a small clean gold set standing in for the
# human-verified pairs, and a silver set in which a known NOISE fraction of the labels is flipped.
#
#   bash examples/noise-recovery/run.sh [--out DIR] [--judge [NAME=]MODEL] [--base MODEL]
#
# split -> an untrained RM -> every sequence's backbone state computed once (the state cache) ->
# RMs on gold, noisy silver and clean silver -> Stage 2 on the noisy silver: score with the current
# RM (trained on the noisy silver, cross-fitted: each half scored by the RM of the other half) and
# the gold RM, route, judge the unconfident pairs, filter-consistent --recycle ->
# the same with one signal alone (gold RM, judges, current RM; the confident pairs are judged too,
# for the judges-only rule) -> an RM on each curated set -> held-out accuracies with 95% intervals
# -> precision and recall at finding the flipped pairs (OUT/results.md, OUT/results.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=examples/noise-recovery

PAIRS=${PAIRS:-examples/data/arena-bench-v1-score-pairs.jsonl.zst}
OUT=${OUT:-out/noise-recovery}
HELDOUT_PAIRS=${HELDOUT_PAIRS:-250}  # at least this many held-out pairs, whole questions
GOLD_PAIRS=${GOLD_PAIRS:-120}        # clean pairs standing in for the human-verified set
SILVER_PAIRS=${SILVER_PAIRS:-500}    # the pairs to curate
NOISE=${NOISE:-0.3}                  # fraction of the silver labels flipped
SEED=${SEED:-0}
MAX_LENGTH=${MAX_LENGTH:-256}
JOBS=${JOBS:-2}
BASE=${BASE:-}
JUDGES=()
TRAIN_FLAGS=${TRAIN_FLAGS:---train-layers 0 --lr 1e-3 --global-batch 16 --epochs 8 --schedule constant --eval-every 8}
JUDGE_FLAGS=${JUDGE_FLAGS:---both-orders --aggregate mean --max-chars 400}

while [ "$#" -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --judge) JUDGES+=("$2"); shift 2 ;;
    --base) BASE=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
# shellcheck source=examples/steps.sh
source examples/steps.sh
default_models
read -r -a train_flags <<< "$TRAIN_FLAGS"
read -r -a judge_flags <<< "$JUDGE_FLAGS"
settings_guard "pairs=$PAIRS heldout=$HELDOUT_PAIRS gold=$GOLD_PAIRS silver=$SILVER_PAIRS noise=$NOISE seed=$SEED
max_length=$MAX_LENGTH base=$BASE judges=${JUDGES[*]} train=$TRAIN_FLAGS judge=$JUDGE_FLAGS"
# Every RM here shares SmolLM2's frozen backbone: each sequence's last-layer state is computed once.
export SYNPREF_STATE_CACHE=${SYNPREF_STATE_CACHE:-$OUT/state-cache}
rm_flags=(--max-length "$MAX_LENGTH")

train() {  # NAME TRAIN: an RM on TRAIN, the checkpoint best on gold kept
  synpref train-rm -m "$OUT/rm-untrained" --train "$2" --gold "$OUT/gold.jsonl.zst" -o "$OUT/rm-$1" \
    --max-length "$MAX_LENGTH" "${train_flags[@]}"
}

warm_cache() {  # the backbone states of every sequence, in JOBS shards side by side
  synpref cat "$OUT"/{silver-noisy,gold,heldout}.jsonl.zst -o "$OUT/all.jsonl.zst"
  sharded "$OUT/all-untrained.jsonl.zst" synpref score -m "$OUT/rm-untrained" --name untrained "${rm_flags[@]}" \
    "$OUT/all.jsonl.zst"
}

stage2() {
  # The current RM's scores are cross-fitted: each half of the silver pairs is scored by an RM trained
  # on the other half, so no pair is judged by an RM that learned its (possibly flipped) label; in
  # the paper the current RM, from Stage 1, has not seen the Stage 2 pool either.
  local half
  for half in 0 1; do
    synpref score -m "$OUT/rm-noisy-half-$((1 - half))/best" --name rm "${rm_flags[@]}" \
      "$OUT/silver-half-$half.jsonl.zst" -o "$OUT/silver-half-$half-rm.jsonl.zst"
  done
  synpref cat "$OUT"/silver-half-{0,1}-rm.jsonl.zst \
    | synpref score -m "$OUT/rm-gold/best" --name gold "${rm_flags[@]}" \
    | synpref route --rm rm --confident "$OUT/confident.jsonl.zst" --unconfident "$OUT/unconfident.jsonl.zst"
  stats "$OUT"/{confident,unconfident}.jsonl.zst
}

judge() {  # INPUT OUTPUT
  sharded "$2" synpref annotate judge "${judge_models[@]}" "${judge_flags[@]}" "$1"
}

curate() {
  # the pipeline: the confident pairs skip the judges
  synpref cat "$OUT"/{confident,judged-unconfident}.jsonl.zst \
    | synpref filter-consistent --gold gold --rm rm --recycle --removed "$OUT/pipeline-removed.jsonl.zst" \
        -o "$OUT/pipeline-kept.jsonl.zst"
  # one signal alone, on every pair judged
  synpref cat "$OUT"/judged-{confident,unconfident}.jsonl.zst -o "$OUT/judged-all.jsonl.zst"
  local signal
  for signal in gold judges rm; do
    python "$here/noise.py" ablate --signal "$signal" "$OUT/judged-all.jsonl.zst" \
      -o "$OUT/$signal-only-kept.jsonl.zst" --removed "$OUT/$signal-only-removed.jsonl.zst"
  done
  stats "$OUT"/{pipeline,gold-only,judges-only,rm-only}-{kept,removed}.jsonl.zst
}

# chain NAME=RM... : score stdin with each RM in turn (a pipe: side by side), then evaluate
chain() {
  if [ "$#" -eq 0 ]; then
    synpref eval pairs --length-baseline --scored "$OUT/heldout-scored.jsonl.zst" --save "$OUT/report"
    return
  fi
  local spec=$1
  shift
  synpref score -m "$OUT/rm-${spec#*=}/best" --name "${spec%%=*}" --no-progress "${rm_flags[@]}" | chain "$@"
}

evaluate() {
  local models=(noisy=noisy curated=curated clean=clean gold-rm-only=gold-only judges-only=judges-only
                current-rm-only=rm-only gold=gold)
  chain "${models[@]}" < "$OUT/heldout.jsonl.zst" > "$OUT/report.txt"
  python "$here/noise.py" report "$OUT" --scored "$OUT/heldout-scored.jsonl.zst" \
    --models "$(printf '%s,' "${models[@]%%=*}")length-baseline" \
    --curated "curated (pipeline)=$OUT/pipeline-kept.jsonl.zst:$OUT/pipeline-removed.jsonl.zst" \
    --curated "gold RM only=$OUT/gold-only-kept.jsonl.zst:$OUT/gold-only-removed.jsonl.zst" \
    --curated "judges only=$OUT/judges-only-kept.jsonl.zst:$OUT/judges-only-removed.jsonl.zst" \
    --curated "current RM only=$OUT/rm-only-kept.jsonl.zst:$OUT/rm-only-removed.jsonl.zst" > "$OUT/results.md"
}

step split "held-out (whole questions), gold, clean and noisy silver" \
  python "$here/noise.py" split "$PAIRS" "$OUT" --heldout "$HELDOUT_PAIRS" --gold "$GOLD_PAIRS" \
  --silver "$SILVER_PAIRS" --noise "$NOISE" --seed "$SEED"
step rm-init "an untrained reward model" synpref rm init --from "$BASE" -o "$OUT/rm-untrained"
step cache "every sequence's backbone state, once (SYNPREF_STATE_CACHE)" warm_cache
later train-gold "the gold RM, on the gold pairs" train gold "$OUT/gold.jsonl.zst"
step train-noisy "an RM on the noisy silver pairs" train noisy "$OUT/silver-noisy.jsonl.zst"
settle
for half in 0 1; do
  [ -e "$OUT/silver-half-$half.jsonl.zst" ] ||
    synpref cat "$OUT/silver-noisy.jsonl.zst" --shard "$half/2" -o "$OUT/silver-half-$half.jsonl.zst"
done
later train-half-0 "the current RM for half 1, on half 0" train noisy-half-0 "$OUT/silver-half-0.jsonl.zst"
step train-half-1 "the current RM for half 0, on half 1" train noisy-half-1 "$OUT/silver-half-1.jsonl.zst"
settle
later train-clean "an RM on the clean silver pairs (the ceiling)" train clean "$OUT/silver-clean.jsonl.zst"
step stage2 "score the silver pairs (current RM cross-fitted, gold RM), route" stage2
settle
step judge-unconfident "judge the pairs the current RM is not confident about" \
  judge "$OUT/unconfident.jsonl.zst" "$OUT/judged-unconfident.jsonl.zst"
step judge-confident "judge the confident pairs too (for the judges-only ablation)" \
  judge "$OUT/confident.jsonl.zst" "$OUT/judged-confident.jsonl.zst"
step curate "filter-consistent --recycle, and each signal alone" curate
for set in curated:pipeline gold-only:gold-only judges-only:judges-only rm-only:rm-only; do
  later "train-${set%%:*}" "an RM on the ${set#*:} set" train "${set%%:*}" "$OUT/${set#*:}-kept.jsonl.zst"
  if [ "${#pending[@]}" -ge "$JOBS" ]; then settle; fi
done
settle
step evaluate "held-out accuracies, precision and recall" evaluate
echo
cat "$OUT/report.txt" "$OUT/results.md"
echo "results: $OUT/results.md, $OUT/results.json; report: $OUT/report; step times: $OUT/timings.tsv"
