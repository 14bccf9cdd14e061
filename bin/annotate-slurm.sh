#!/usr/bin/env bash
#SBATCH --job-name=synpref-annotate
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
#SBATCH --output=%x-%A_%a.out
# LLM annotation as a SLURM array job, one vLLM server per task: task I of N starts `vllm serve MODEL`
# on its node, waits for the server's /health, runs `synpref annotate TASK --engine openai` against it
# on shard I/N of INPUT into OUT_DIR/annotated-I-of-N.jsonl.zst, and stops the server however it ends.
#
#   sbatch --array=0-7 bin/annotate-slurm.sh MODEL INPUT OUT_DIR [extra `synpref annotate` flags...]
#
# Settings, from the environment: ANNOTATE_TASK (judge; or attributes, verify), PORT (8000 + task
# index, so tasks sharing a node do not collide), VLLM_ARGS (extra `vllm serve` flags, e.g.
# "--tensor-parallel-size 4 --max-model-len 8192"; ask for that many GPUs), HEALTH_TIMEOUT (1800 s:
# the model's download and load), VLLM and SYNPREF (the executables). Preemption: SLURM sends SIGTERM
# 120 s before the end; annotate stops, the requeued task resumes its shard from the same -o, and a
# shard whose output exists is skipped. Without SLURM it annotates the whole input as one task.
set -euo pipefail

ANNOTATE_TASK=${ANNOTATE_TASK:-judge}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-1800}
VLLM=${VLLM:-vllm}
SYNPREF=${SYNPREF:-synpref}
read -r -a VLLM_EXTRA <<< "${VLLM_ARGS:-}"

if [ "$#" -lt 3 ]; then
    sed -n '11,22p' "$0" >&2
    exit 2
fi
model=$1 input=$2 out=$3
shift 3

if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    index=$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0} ))
    count=${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_COUNT is not set}
else
    index=0 count=1
fi
port=${PORT:-$(( 8000 + index % 1000 ))}
target="$out/annotated-$index-of-$count.jsonl.zst"
log="$out/vllm-$index-of-$count.log"
mkdir -p "$out"
if [ -e "$target" ]; then
    echo "annotate-slurm: $target exists, skipping" >&2
    exit 0
fi

server='' annotate=''
# shellcheck disable=SC2329  # both functions run from the traps below
stop_server() {
    [ -n "$server" ] || return 0
    kill -TERM -- "-$server" 2>/dev/null || return 0  # the whole group: vLLM's engine processes too
    for _ in $(seq 60); do
        kill -0 -- "-$server" 2>/dev/null || return 0
        sleep 1
    done
    kill -KILL -- "-$server" 2>/dev/null || true
}
# shellcheck disable=SC2329
on_signal() {
    # forward to annotate so it stops cleanly; the wait below then returns and EXIT stops the server
    if [ -n "$annotate" ]; then kill -TERM "$annotate" 2>/dev/null || true; else exit 143; fi
}
trap stop_server EXIT
trap on_signal TERM INT

# setsid: the server leads its own process group, so stop_server reaches every process it started
setsid "$VLLM" serve "$model" --host 127.0.0.1 --port "$port" "${VLLM_EXTRA[@]}" > "$log" 2>&1 &
server=$!
echo "annotate-slurm: task $index/$count: vllm serve $model on port $port (log: $log)" >&2
deadline=$(( SECONDS + HEALTH_TIMEOUT ))
until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
    if ! kill -0 "$server" 2>/dev/null; then
        echo "annotate-slurm: vllm exited before it was healthy; the end of $log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "annotate-slurm: no healthy server on port $port after ${HEALTH_TIMEOUT}s (see $log)" >&2
        exit 1
    fi
    sleep 5
done
echo "annotate-slurm: server healthy after ${SECONDS}s" >&2

# The shard is explicit, so the array variables are not read a second time.
env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT -u SLURM_ARRAY_TASK_MIN \
    "$SYNPREF" annotate "$ANNOTATE_TASK" "$input" --engine openai --base-url "http://127.0.0.1:$port/v1" \
    -m "$model" --shard "$index/$count" -o "$target" "$@" &
annotate=$!
while kill -0 "$annotate" 2>/dev/null; do
    wait "$annotate" || true  # returns early when a trapped signal arrives: annotate is still stopping
done
status=0
wait "$annotate" || status=$?  # annotate's own exit status
exit "$status"
