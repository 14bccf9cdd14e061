"""The benchmark registry, and the glue between loaders, reward functions, cached rewards and scorers
shared by every benchmark command."""

from __future__ import annotations

import contextlib
import inspect
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from synpref.eval import judgebench, ppe, rewardbench, rewardbench2, rmb, rmbench
from synpref.eval.common import (
    BenchmarkError,
    Example,
    Rewards,
    align_rewards,
    load_rewards,
    model_name,
    save_rewards,
)
from synpref.eval.pairs import LENGTH_BASELINE, RewardFn, evaluate_pairs
from synpref.eval.report import Report
from synpref.io import RecordWriter


@dataclass(frozen=True)
class Benchmark:
    """One published benchmark: its subcommand name, the --help title and layout/rule text, the
    loader of its files and its official scorer.

    `load(paths, **options)` returns the examples; a loader that also takes `notes` appends to that
    list what it left out, and those notes end the report. `score(examples, rewards, resamples, seed)`
    returns the report.
    """

    name: str
    title: str
    layout: str  # the --data layout and the official rule with its source, for --help
    load: Callable[..., list[Example]]
    score: Callable[..., Report]

    def examples(self, paths: Iterable[str], notes: list[str], **options: Any) -> list[Example]:
        if "notes" in inspect.signature(self.load).parameters:
            options["notes"] = notes
        return self.load(list(paths), **options)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark(
        "rewardbench", "RewardBench v1: Chat, Chat Hard, Safety, Reasoning (and Prior Sets).",
        "--data: the `filtered` split (prompt, chosen, rejected, subset, id; parquet/JSON/JSONL). Rule "
        "(allenai/reward-bench): a pair is right when r(chosen) > r(rejected), a tie is wrong (run_rm.py); a "
        "section is the mean of its subsets weighted by EXAMPLE_COUNTS, in which math-prm counts 984 (447 pairs, "
        "upweighted to equal the six code subsets) (utils.py calculate_scores_per_section); the score is the "
        "weighted mean of the sections (weight 2 each) and Prior Sets (weight 1, the mean of anthropic_helpful, "
        "anthropic_hhh, shp, summarize) when --prior is given, else the plain mean of the sections "
        "(analysis/get_benchmark_results.py).",
        rewardbench.load, rewardbench.score,
    ),
    Benchmark(
        "rewardbench2", "RewardBench 2: Factuality, Precise IF, Math, Safety, Focus, Ties.",
        "--data: the test split (id, prompt, chosen list, rejected list, num_correct, subset). Rule "
        "(allenai/reward-bench scripts/run_v2.py): best-of-N, where a k-way tie at the top is worth 1/k "
        "(utils.py reroll_and_score_dataset); Ties = 0.3 tied accuracy + 0.3 reference accuracy + 0.2 "
        "correctness-preferred + 0.2 correctness-preferred-hard + 0.01 margin (utils.py process_single_model); "
        "the score is the unweighted mean of the domains (the leaderboard convention).",
        rewardbench2.load, rewardbench2.score,
    ),
    Benchmark(
        "rmbench", "RM-Bench: the 3x3 style matrix, easy / normal / hard accuracy per domain.",
        "--data: total_dataset.json or the *_filtered.json files (id, prompt, chosen[3], rejected[3], domain). "
        "Rule (THU-KEG/RM-Bench scripts/utils.py compute_accuracy): M[i][j] = share of prompts with chosen "
        "style i scored above rejected style j (a tie is a miss; styles concise, detailed, markdown); hard = "
        "upper triangle, normal = diagonal, easy = lower triangle; a domain is the mean of its 9 cells "
        "(safety-refuse and safety-response pooled); overall = mean of the domains.",
        rmbench.load, rmbench.score,
    ),
    Benchmark(
        "judgebench", "JudgeBench: Knowledge, Reasoning, Math, Coding.",
        "--data: data/dataset=judgebench,response_model=*.jsonl (pair_id, source, question, response_A, "
        "response_B, label). Rule (ScalerLab/JudgeBench utils/judges.py, utils/metrics.py): decision A>B iff "
        "r(A) > r(B), a tie decides B>A; one game per pair; accuracy pooled over pairs, and per category.",
        judgebench.load, judgebench.score,
    ),
    Benchmark(
        "rmb", "RMB: Helpfulness and Harmlessness, pairwise and best-of-N.",
        "--data: RMB_dataset/ (Pairwise_set items with chosen/reject, BoN_set items with bon_best/loser_list). "
        "Rule: pairwise right when r(chosen) > r(reject) (eval/scripts/my_run_rm.py); best-of-N right when "
        "bon_best beats every loser strictly (the paper; ties lose); Overall = mean of the four accuracies.",
        rmb.load, rmb.score,
    ),
    Benchmark(
        "ppe", "PPE: human-preference accuracy and correctness best-of-K curves.",
        "--data: PPE human-preference rows (prompt, response_1, response_2, winner) and/or correctness rows "
        "(prompt, response_1..response_32, scores). Rules from the PPE paper (the official scoring code was not "
        "available to verify): human preference accuracy with reward ties 1/2 and label ties left out; best-of-K "
        "= correctness of the top-reward response among the first K (tied tops share), K = 1, 2, 4 ... 32; "
        "within-prompt pairwise accuracy; pooled ROC-AUC.",
        ppe.load, ppe.score,
    ),
)}


@dataclass
class ScoringOptions:
    engine: str = "torch"
    batch_tokens: int | None = None
    max_length: int | None = None
    cached: str | None = None  # --scores: rewards saved by an earlier run
    save: str | None = None  # --save-scores
    length_baseline: bool = False
    notes: list[str] = field(default_factory=list)
    state_cache: str | None = None  # --state-cache


def reward_functions(specs: list[str], options: ScoringOptions, known: set[str] | None) -> dict[str, RewardFn | None]:
    """NAME=DIR / DIR -> a reward function; a bare NAME already in the cached rewards needs no model
    (`known` None: any bare NAME is accepted, to be found as scores.NAME in a pair stream)."""
    from synpref.eval.engine import reward_function

    out: dict[str, RewardFn | None] = {}
    for spec in specs:
        name, path = model_name(spec)
        if name in out:
            raise BenchmarkError(f"model name {name!r} given twice (name them: -m NAME=DIR)")
        if os.path.exists(path):
            out[name] = reward_function(path, options.engine, options.batch_tokens, options.max_length,
                                        options.state_cache)
        elif known is None or name in known:
            out[name] = None
        else:
            raise BenchmarkError(f"-m {spec}: no such model directory or file, and no cached scores named {name!r}")
    return out


def rewards_for(examples: list[Example], models: dict[str, RewardFn | None], options: ScoringOptions,
                benchmark: str, cached: Rewards | None = None) -> Rewards:
    """Cached rewards where they cover every example, else score every response with the model."""
    cached = cached or {}
    rewards: Rewards = {}
    for name, function in models.items():
        aligned = align_rewards(cached.get(name, {}), examples)  # type: ignore[arg-type]
        if aligned is not None:
            rewards[name] = aligned
            continue
        if function is None:
            raise BenchmarkError(f"cached scores for {name!r} do not cover every {benchmark} example; "
                                 f"give its model directory: -m {name}=DIR")
        groups = [(e.conversation, e.responses) for e in examples]
        rewards[name] = [[float(x) for x in result.rewards] for result in function(groups)]
    if options.save:
        save_rewards(options.save, benchmark, examples, rewards)
    if options.length_baseline:
        rewards[LENGTH_BASELINE] = [[float(len(r)) for r in e.responses] for e in examples]
    return rewards


def evaluate(benchmark: str, examples: list[Example], specs: list[str], options: ScoringOptions,
             resamples: int, seed: int) -> Report:
    if not examples:
        raise BenchmarkError(f"no {benchmark} examples in the given --data")
    cached = load_rewards(options.cached, benchmark) if options.cached else {}
    models = reward_functions(specs, options, set(cached))
    if not models and not options.length_baseline:
        models = dict.fromkeys(cached)
        if not models:
            raise BenchmarkError("nothing to evaluate: give -m MODEL, --scores PATH or --length-baseline")
    rewards = rewards_for(examples, models, options, benchmark, cached)
    report = BENCHMARKS[benchmark].score(examples, rewards, resamples, seed)
    report.notes += options.notes
    if options.length_baseline:
        report.notes.append(f"{LENGTH_BASELINE}: rewards = reply length in characters (a sanity row)")
    return report


def run_benchmark(benchmark: str, data: Iterable[str], specs: list[str], options: ScoringOptions, resamples: int,
                  seed: int, **load_options: Any) -> Report:
    """Load a benchmark's --data files and evaluate the models on them with its official rule."""
    examples = BENCHMARKS[benchmark].examples(data, options.notes, **load_options)
    return evaluate(benchmark, examples, specs, options, resamples, seed)


def evaluate_pair_stream(records: Iterable[Any], functions: dict[str, RewardFn | None], by: str,
                         length_baseline: bool, resamples: int, seed: int, counts: Counter | None,
                         scored: str | None = None) -> Report:
    """Pairwise accuracy over a pair stream; with `scored`, the pairs with their new scores are written
    there (atomically: the file appears only when the whole stream was evaluated)."""
    with RecordWriter(scored) if scored else contextlib.nullcontext() as writer:
        return evaluate_pairs(records, functions, by, length_baseline, resamples, seed, counts,
                              writer.write if writer else None)
