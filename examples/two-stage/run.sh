#!/usr/bin/env bash
# The two-stage human-AI curation of Skywork-Reward-V2 (SPEC section 4), end to end, with the synpref
# CLI only, on the real pairs embedded in examples/data (examples/two-stage/README.md says which set
# plays which part). `make demo` runs it with the defaults below on 2 CPU cores in about 15 minutes.
#
#   bash examples/two-stage/run.sh [--iterations N] [--engine torch|vllm|openai] [--judge [NAME=]MODEL]...
#                                  [--base MODEL] [--out DIR]
#
# preprocess (dedupe + decontaminate) -> attributes -> Stage 1 (train on silver, select on gold,
# retrieve around the gold errors, judge with retrieved human examples, grow silver; N times) ->
# Stage 2 (score the pool with the best RM and the gold RM, route the confident pairs past the judge,
# judge the rest, filter-consistent --recycle) -> train the final RM on the curated set -> eval report.
#
# Every stream stays in OUT with its `synpref stats` beside it (NAME.stats.txt). Each step writes
# OUT/.done/STEP once its outputs are there (they appear atomically), so a re-run skips the finished
# steps; an interrupted score, annotate, retrieve or train-rm resumes by itself from the same -o.
# Sizes, models and flags are the variables below (environment or flags). On a GPU machine, e.g.:
#   JOBS=1 TRAIN_FLAGS="--lr 4e-6 --global-batch 256" bash examples/two-stage/run.sh --engine vllm \
#     --judge qwen=Qwen/Qwen2.5-7B-Instruct --base /models/Llama-3.1-8B-Instruct --iterations 8
set -euo pipefail
cd "$(dirname "$0")/../.."

DATA=${DATA:-examples/data}
OUT=${OUT:-out/two-stage}
POOL_PAIRS=${POOL_PAIRS:-160}        # unverified pool pairs (after preprocessing)
SEED_PAIRS=${SEED_PAIRS:-16}         # the seed silver set: GPT-4-labeled pairs
GOLD_PAIRS=${GOLD_PAIRS:-32}         # human-labeled pairs standing in for human-verified gold
HELDOUT_PAIRS=${HELDOUT_PAIRS:-80}   # human-labeled held-out pairs for the report
ITERATIONS=${ITERATIONS:-1}          # Stage 1 rounds (the paper: about 8)
K_MAX=${K_MAX:-2}                    # retrieval k for a gold pair the RM gets wrong (the paper: 8)
MAX_EXAMPLES=${MAX_EXAMPLES:-2}      # human examples in a judge prompt (the paper: up to 8)
MAX_LENGTH=${MAX_LENGTH:-256}        # reward-model tokens per pair
ATTRIBUTES=${ATTRIBUTES:-gold}       # which pairs get attributes: gold, or all (gold and pool)
ENGINE=${ENGINE:-torch}              # annotate engine: torch, vllm or openai (score and eval: vllm or torch)
JOBS=${JOBS:-2}                      # processes side by side, one thread each (1 on a GPU)
BASE=${BASE:-}                       # causal LM the reward models start from (default: SmolLM2-135M-Instruct)
JUDGES=()                            # judge models, [NAME=]MODEL (default: smollm2=the SmolLM2 GGUF)
TRAIN_FLAGS=${TRAIN_FLAGS:---train-layers 0 --lr 1e-3 --global-batch 16 --epochs 8 --schedule constant --eval-every 4}
JUDGE_FLAGS=${JUDGE_FLAGS:---both-orders --aggregate mean --max-chars 400 --example-chars 200}
ATTRIBUTE_FLAGS=${ATTRIBUTE_FLAGS:---max-tokens 12 --max-chars 300}

while [ "$#" -gt 0 ]; do
  case $1 in
    --iterations) ITERATIONS=$2; shift 2 ;;
    --engine) ENGINE=$2; shift 2 ;;
    --judge) JUDGES+=("$2"); shift 2 ;;
    --base) BASE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
# shellcheck source=examples/steps.sh
source examples/steps.sh
default_models
rm_engine=torch
[ "$ENGINE" = vllm ] && rm_engine=vllm
read -r -a train_flags <<< "$TRAIN_FLAGS"
read -r -a judge_flags <<< "$JUDGE_FLAGS"
read -r -a attribute_flags <<< "$ATTRIBUTE_FLAGS"
rm_flags=(--max-length "$MAX_LENGTH" --engine "$rm_engine")
settings_guard "data=$DATA pool=$POOL_PAIRS seed=$SEED_PAIRS gold=$GOLD_PAIRS heldout=$HELDOUT_PAIRS k_max=$K_MAX
examples=$MAX_EXAMPLES max_length=$MAX_LENGTH attributes=$ATTRIBUTES engine=$ENGINE base=$BASE judges=${JUDGES[*]}
train=$TRAIN_FLAGS judge=$JUDGE_FLAGS attribute=$ATTRIBUTE_FLAGS"
# The reward models all start from one backbone and (on CPU, --train-layers 0) keep it frozen: each
# sequence's last-layer state is computed once and every later score or training reads it.
export SYNPREF_STATE_CACHE=${SYNPREF_STATE_CACHE:-$OUT/state-cache}

# ---------------------------------------------------------------- data and preprocessing
split_data() {
  # hh-rlhf harmless-base test and PandaLM test carry human labels. Half of them (record k, k even)
  # gives the held-out and gold sets, the other half joins the unverified pool.
  synpref cat "$DATA"/{hh-harmless-base-test,pandalm-test}.jsonl.zst --shard 0/2 -o "$OUT/human.jsonl.zst"
  synpref cat "$OUT/human.jsonl.zst" --shard 0/2 --sample "$HELDOUT_PAIRS" --seed 1 -o "$OUT/heldout-raw.jsonl.zst"
  synpref cat "$OUT/human.jsonl.zst" --shard 1/2 --sample "$GOLD_PAIRS" --seed 2 -o "$OUT/gold-raw.jsonl.zst"
  synpref cat "$DATA"/{hh-harmless-base-test,pandalm-test}.jsonl.zst --shard 1/2 -o "$OUT/human-rest.jsonl.zst"
  synpref cat "$OUT/human-rest.jsonl.zst" "$DATA"/{llmbar,hhh-alignment}.jsonl.zst -o "$OUT/pool-raw.jsonl.zst"
  # GPT-4-judged pairs: the silver set Stage 1 starts from
  synpref cat "$DATA"/{mtbench-gpt4-pairs,arena-bench-v1-score-pairs}.jsonl.zst --sample "$SEED_PAIRS" --seed 3 \
    -o "$OUT/seed-raw.jsonl.zst"
  stats "$OUT"/{heldout,gold,pool,seed}-raw.jsonl.zst
}

preprocess() {
  # empty content, exact and near duplicates, and 13-gram overlap with the benchmark prompts:
  # Arena-Hard, EvalBiasBench and our own held-out and gold sets, which must not be trained on
  local benchmarks=(--decontaminate "$DATA/arena-hard-questions.jsonl.zst" --decontaminate "$DATA/evalbiasbench.jsonl.zst"
                    --decontaminate "$OUT/heldout-raw.jsonl.zst" --decontaminate "$OUT/gold-raw.jsonl.zst")
  synpref dedupe "$OUT/pool-raw.jsonl.zst" "${benchmarks[@]}" --removed "$OUT/pool-removed.jsonl.zst" \
    -o "$OUT/pool-clean.jsonl.zst"
  synpref dedupe "$OUT/seed-raw.jsonl.zst" "${benchmarks[@]}" --removed "$OUT/seed-removed.jsonl.zst" \
    -o "$OUT/seed.jsonl.zst"
  synpref dedupe "$OUT/gold-raw.jsonl.zst" --removed "$OUT/gold-removed.jsonl.zst" -o "$OUT/gold-clean.jsonl.zst"
  synpref dedupe "$OUT/heldout-raw.jsonl.zst" --removed "$OUT/heldout-removed.jsonl.zst" -o "$OUT/heldout.jsonl.zst"
  synpref cat "$OUT/pool-clean.jsonl.zst" --sample "$POOL_PAIRS" --seed 4 -o "$OUT/pool-sample.jsonl.zst"
  stats "$OUT"/{pool,seed,gold,heldout}-removed.jsonl.zst "$OUT"/{pool-sample,seed,heldout}.jsonl.zst
}

attributes() {
  sharded "$OUT/gold.jsonl.zst" synpref annotate attributes -m "${JUDGES[0]}" --engine "$ENGINE" \
    "${attribute_flags[@]}" "$OUT/gold-clean.jsonl.zst"
  if [ "$ATTRIBUTES" = all ]; then
    sharded "$OUT/pool.jsonl.zst" synpref annotate attributes -m "${JUDGES[0]}" --engine "$ENGINE" \
      "${attribute_flags[@]}" "$OUT/pool-sample.jsonl.zst"
  else
    cp "$OUT/pool-sample.jsonl.zst" "$OUT/pool.jsonl.zst"
    stats "$OUT/pool.jsonl.zst"
  fi
}

indexes() {
  # the retrieval indexes: embeddings of each pair's conversation and attributes
  synpref retrieve --pool "$OUT/pool.jsonl.zst" --index "$OUT/pool.idx"
  synpref retrieve --pool "$OUT/gold.jsonl.zst" --index "$OUT/gold.idx"
}

gold_rm() {
  # trained on every human-verified pair; selected on them too (there is nothing else human-verified)
  synpref train-rm -m "$OUT/rm-untrained" --train "$OUT/gold.jsonl.zst" --gold "$OUT/gold.jsonl.zst" \
    -o "$OUT/rm-gold" --max-length "$MAX_LENGTH" "${train_flags[@]}"
}

# ---------------------------------------------------------------- Stage 1, human-guided
stage1_train() {  # ITERATION: a reward model on the silver set, the checkpoint best on gold kept
  local it=$1 dir="$OUT/stage1/iter-$1"
  synpref train-rm -m "$OUT/rm-untrained" --train "$OUT/stage1/silver-$((it - 1)).jsonl.zst" \
    --gold "$OUT/gold.jsonl.zst" -o "$dir/rm" --max-length "$MAX_LENGTH" "${train_flags[@]}"
  sharded "$dir/gold-scored.jsonl.zst" synpref score -m "$dir/rm/best" --name rm "${rm_flags[@]}" "$OUT/gold.jsonl.zst"
}

stage1_retrieve() {  # ITERATION: pool pairs like the gold pairs the RM gets wrong (adaptive k), and
  # for each of them the most similar human-verified examples for the judge
  local dir="$OUT/stage1/iter-$1"
  synpref retrieve --index "$OUT/pool.idx" --queries "$dir/gold-scored.jsonl.zst" --rm rm --k-max "$K_MAX" \
    --emit pool -o "$dir/retrieved.jsonl.zst"
  synpref retrieve --index "$OUT/gold.idx" --queries "$dir/retrieved.jsonl.zst" --k-max "$MAX_EXAMPLES" \
    -o "$dir/to-judge.jsonl.zst"
  stats "$dir/retrieved.jsonl.zst"
}

judge() {  # INPUT OUTPUT: annotate judge with the human examples retrieval attached
  sharded "$2" synpref annotate judge "${judge_models[@]}" --engine "$ENGINE" --examples "$OUT/gold.jsonl.zst" \
    --max-examples "$MAX_EXAMPLES" "${judge_flags[@]}" "$1"
}

stage1_grow() {  # ITERATION: the judged pairs the gold RM confirms (reversed ones flipped) join silver
  local it=$1 dir="$OUT/stage1/iter-$1"
  sharded "$dir/judged-gold.jsonl.zst" synpref score -m "$OUT/rm-gold/best" --name gold "${rm_flags[@]}" \
    "$dir/judged.jsonl.zst"
  synpref filter-consistent --gold gold --recycle "$dir/judged-gold.jsonl.zst" \
    --removed "$dir/not-confirmed.jsonl.zst" -o "$dir/confirmed.jsonl.zst"
  synpref dedupe --no-near "$OUT/stage1/silver-$((it - 1)).jsonl.zst" "$dir/confirmed.jsonl.zst" \
    --removed "$dir/silver-duplicates.jsonl.zst" -o "$OUT/stage1/silver-$it.jsonl.zst"
  stats "$dir"/{confirmed,not-confirmed}.jsonl.zst "$OUT/stage1/silver-$it.jsonl.zst"
}

# ---------------------------------------------------------------- Stage 2, automatic
# The Stage 1 checkpoint most accurate on gold over all rounds (a later round wins a tie).
best_rm() {
  local it
  for (( it = ITERATIONS; it >= 1; it-- )); do
    printf '%s %s\n' "$(sed -n 's/^ *"gold_accuracy": \([0-9.e-]*\),*$/\1/p' "$OUT/stage1/iter-$it/rm/best/training.json")" \
      "$OUT/stage1/iter-$it/rm/best"
  done | sort -s -k1,1gr | awk 'NR == 1 { print $2 }'
}

stage2_route() {
  local best
  best=$(best_rm)
  echo "   the current best RM: $best"
  sharded "$OUT/stage2/pool-rm.jsonl.zst" synpref score -m "$best" --name rm "${rm_flags[@]}" "$OUT/pool.jsonl.zst"
  sharded "$OUT/stage2/pool-scored.jsonl.zst" synpref score -m "$OUT/rm-gold/best" --name gold "${rm_flags[@]}" \
    "$OUT/stage2/pool-rm.jsonl.zst"
  synpref route --rm rm "$OUT/stage2/pool-scored.jsonl.zst" --confident "$OUT/stage2/confident.jsonl.zst" \
    --unconfident "$OUT/stage2/unconfident.jsonl.zst"
  synpref retrieve --index "$OUT/gold.idx" --queries "$OUT/stage2/unconfident.jsonl.zst" --k-max "$MAX_EXAMPLES" \
    -o "$OUT/stage2/to-judge.jsonl.zst"
  stats "$OUT/stage2"/{confident,unconfident}.jsonl.zst
}

stage2_filter() {
  synpref cat "$OUT/stage2"/{confident,judged}.jsonl.zst \
    | synpref filter-consistent --gold gold --rm rm --recycle --removed "$OUT/stage2/removed.jsonl.zst" \
        -o "$OUT/stage2/kept.jsonl.zst"
  stats "$OUT/stage2"/{kept,removed}.jsonl.zst
  local confident unconfident kept removed
  confident=$(records "$OUT/stage2/confident.jsonl.zst") unconfident=$(records "$OUT/stage2/judged.jsonl.zst")
  kept=$(records "$OUT/stage2/kept.jsonl.zst") removed=$(records "$OUT/stage2/removed.jsonl.zst")
  echo "   conservation: confident $confident + judged $unconfident = kept $kept + removed $removed"
  [ $((confident + unconfident)) -eq $((kept + removed)) ]
}

curated_set() {
  # the final silver set and the pairs Stage 2 kept; a pair both hold counts once
  synpref dedupe --no-near "$OUT/stage1/silver-$ITERATIONS.jsonl.zst" "$OUT/stage2/kept.jsonl.zst" \
    --removed "$OUT/curated-duplicates.jsonl.zst" -o "$OUT/curated.jsonl.zst"
  synpref cat "$OUT/seed.jsonl.zst" "$OUT/pool.jsonl.zst" -o "$OUT/raw.jsonl.zst"
  stats "$OUT"/{curated,raw}.jsonl.zst
}

train_final() {  # NAME TRAIN
  synpref train-rm -m "$OUT/rm-untrained" --train "$2" --gold "$OUT/gold.jsonl.zst" -o "$OUT/rm-$1" \
    --max-length "$MAX_LENGTH" "${train_flags[@]}"
}

report() {
  # one pipe: three score stages and the evaluation, side by side as processes
  mkdir -p "$OUT/report"
  local quiet=(--no-progress "${rm_flags[@]}")
  synpref score -m "$OUT/rm-untrained" --name untrained "${rm_flags[@]}" "$OUT/heldout.jsonl.zst" \
    | synpref score -m "$OUT/rm-raw/best" --name raw-pool "${quiet[@]}" \
    | synpref score -m "$OUT/rm-curated/best" --name curated "${quiet[@]}" \
    | synpref eval pairs --length-baseline --scored "$OUT/heldout-scored.jsonl.zst" --save "$OUT/report" \
    > "$OUT/report.txt"
}

step data "split the embedded sets: held-out, gold, unverified pool, seed silver" split_data
step preprocess "dedupe and decontaminate (Arena-Hard, EvalBiasBench, held-out and gold prompts)" preprocess
step attributes "LLM attributes (task category, objectivity, controversiality, desired attributes, guideline)" attributes
later indexes "embedding indexes of the pool and the gold pairs" indexes
step rm-init "an untrained reward model: SmolLM2 (or --base) and a new head" \
  synpref rm init --from "$BASE" -o "$OUT/rm-untrained"
settle
later gold-rm "the gold RM: trained on the human-verified pairs" gold_rm
mkdir -p "$OUT/stage1" "$OUT/stage2"
[ -e "$OUT/stage1/silver-0.jsonl.zst" ] || cp "$OUT/seed.jsonl.zst" "$OUT/stage1/silver-0.jsonl.zst"
for (( it = 1; it <= ITERATIONS; it++ )); do
  step "stage1-$it-train" "Stage 1 round $it: train on silver, select on gold, score gold" stage1_train "$it"
  settle  # the gold RM (beside round 1's training)
  step "stage1-$it-retrieve" "Stage 1 round $it: retrieve around the gold errors (adaptive k, k_max $K_MAX)" \
    stage1_retrieve "$it"
  step "stage1-$it-judge" "Stage 1 round $it: judge the retrieved pairs with human examples" \
    judge "$OUT/stage1/iter-$it/to-judge.jsonl.zst" "$OUT/stage1/iter-$it/judged.jsonl.zst"
  step "stage1-$it-grow" "Stage 1 round $it: grow silver with the pairs the gold RM confirms" stage1_grow "$it"
done
step stage2-route "Stage 2: score the pool (best RM, gold RM), route the confident pairs past the judge" stage2_route
step stage2-judge "Stage 2: judge the unconfident pairs" \
  judge "$OUT/stage2/to-judge.jsonl.zst" "$OUT/stage2/judged.jsonl.zst"
step stage2-filter "Stage 2: filter-consistent --recycle" stage2_filter
step curated "the curated set (silver + Stage 2 kept) and the raw pool (seed + pool)" curated_set
later train-raw "train an RM on the raw pool" train_final raw "$OUT/raw.jsonl.zst"
step train-curated "train an RM on the curated set" train_final curated "$OUT/curated.jsonl.zst"
settle
step report "evaluate on the held-out human-labeled pairs" report
echo
cat "$OUT/report.txt"
echo "report: $OUT/report (report.md, report.json, PNG); step times: $OUT/timings.tsv; total $((SECONDS - started)) s"
