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
    check_unique_ids,
    coverage_gap,
    load_rewards,
    model_name,
    save_rewards,
)
from synpref.eval.pairs import LENGTH_BASELINE, RewardFn, evaluate_pairs
from synpref.eval.report import Report
from synpref.io import RecordWriter


@dataclass(frozen=True)
class Benchmark:
    """One published benchmark: its subcommand name, the --help title and layout/rule text, how its
    examples are named in a scores file, the loader of its files and its official scorer.

    `load(paths, **options)` returns the examples; a loader that also takes `notes` appends to that
    list what it left out, and those notes end the report. `score(examples, rewards, resamples, seed,
    **options)` returns the report. A benchmark's own CLI options go to whichever of the two names them.
    """

    name: str
    title: str
    layout: str  # the --data layout and the official rule with its source, for --help
    scores: str  # the example ids and the order of the rewards in a --scores file, for --help
    load: Callable[..., list[Example]]
    score: Callable[..., Report]

    def split_options(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(loader options, scorer options): each option goes to the function with a parameter of its name."""
        loads, scores = inspect.signature(self.load).parameters, inspect.signature(self.score).parameters
        unknown = sorted(set(options) - set(loads) - set(scores))
        if unknown:
            raise TypeError(f"{self.name}: no loader or scorer option {', '.join(unknown)}")
        return ({k: v for k, v in options.items() if k in loads}, {k: v for k, v in options.items() if k in scores})

    def examples(self, paths: Iterable[str], notes: list[str], **options: Any) -> list[Example]:
        if "notes" in inspect.signature(self.load).parameters:
            options["notes"] = notes
        return self.load(list(paths), **options)


SCORES_FILE = (
    "Scores file (--save-scores writes it, --scores reads it): JSON Lines, zstd unless the name ends in .jsonl "
    "(plain) or .gz (gzip), read back in any format synpref reads; one row per model and example: {\"benchmark\": SUBCOMMAND, \"model\": "
    "NAME, \"id\": EXAMPLE_ID, \"rewards\": [one number per response]}. Rows of other benchmarks are skipped, "
    "and a file with none for this one is an error. Without -m every model in the file is reported (and "
    "--length-baseline adds its column); -m NAME reports NAME only; -m NAME=DIR scores with the model when the "
    "file does not cover every example. The length baseline is never saved (it is recomputed from --data), so "
    "--save-scores needs -m or --scores."
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark(
        "rewardbench", "RewardBench v1: Chat, Chat Hard, Safety, Reasoning (and Prior Sets).",
        "--data: the `filtered` split (prompt, chosen, rejected, subset, id; parquet/JSON/JSONL). Rule "
        "(allenai/reward-bench, as released in the rewardbench package 0.1.3 and later and on the leaderboard): "
        "a pair is right when r(chosen) > r(rejected), a tie is wrong (scripts/run_rm.py); a section is the mean "
        "of its subsets weighted by EXAMPLE_COUNTS (rewardbench/constants.py: math-prm counts 984, 447 pairs "
        "upweighted to equal the six code subsets; xstest-should-refuse 154, xstest-should-respond 250, the data's "
        "counts since the commit 'Mirror change from leaderboard') (utils.py calculate_scores_per_section); the "
        "score is the weighted mean of the sections (weight 2 each) and Prior Sets (weight 1, the mean of "
        "anthropic_helpful, anthropic_hhh, shp, summarize) when --prior is given, else the plain mean of the "
        "sections (analysis/get_benchmark_results.py).",
        "Example ids: the row's `id` (42 -> '42'), or its 0-based position among the --data rows when it has none; "
        "--prior rows are SUBSET-LINE (shp-17: line 17 of the shp file). Rewards: [chosen, rejected].",
        rewardbench.load, rewardbench.score,
    ),
    Benchmark(
        "rewardbench2", "RewardBench 2: Factuality, Precise IF, Math, Safety, Focus, Ties.",
        "--data: the test split (id, prompt, chosen list, rejected list, num_correct, subset). Rule "
        "(allenai/reward-bench scripts/run_v2.py): best-of-N, where a k-way tie at the top is worth 1/k "
        "(utils.py reroll_and_score_dataset); Ties = 0.3 tied accuracy + 0.3 reference accuracy + 0.2 "
        "correctness-preferred + 0.2 correctness-preferred-hard + 0.01 margin (utils.py process_single_model "
        f"as of upstream {rewardbench2.TIES_VERSION}, after the 0.1.4 release, which differs only in the margin "
        "term when all correct answers of a prompt score the same); 'ref:N' and 'tied:N' rows pair up by the "
        "integer N, as upstream parses them ('ref:1' and 'tied:01' are one prompt); the score is the unweighted "
        "mean of the domains (the leaderboard convention).",
        "Example ids: the row's `id` ('1045', 'ref:17', 'tied:17'). Rewards: [chosen..., rejected...], the "
        "num_correct chosen responses first, each list in the row's order.",
        rewardbench2.load, rewardbench2.score,
    ),
    Benchmark(
        "rmbench", "RM-Bench: the 3x3 style matrix, easy / normal / hard accuracy per domain.",
        "--data: total_dataset.json or the *_filtered.json files (id, prompt, chosen[3], rejected[3], domain). "
        "Rule (THU-KEG/RM-Bench scripts/utils.py compute_accuracy): M[i][j] = share of prompts with chosen "
        "style i scored above rejected style j (a tie is a miss; styles concise, detailed, markdown); hard = "
        "upper triangle, normal = diagonal, easy = lower triangle; a domain is the mean of its 9 cells "
        "(safety-refuse and safety-response pooled); overall = mean of the domains (a note names any of chat, "
        "math, code, safety missing from --data).",
        "Example ids: the row's `id`, or its 0-based position among the --data rows when it has none. Rewards: "
        "[chosen concise, chosen detailed, chosen markdown, rejected concise, rejected detailed, rejected markdown].",
        rmbench.load, rmbench.score,
    ),
    Benchmark(
        "judgebench", "JudgeBench: Knowledge, Reasoning, Math, Coding, per response model.",
        "--data: data/dataset=judgebench,response_model=*.jsonl (pair_id, source, question, response_model, "
        "response_A, response_B, label). Rule (ScalerLab/JudgeBench run_judge.py, utils/metrics.py "
        "compute_final_metrics, utils/judges.py): a game decides A>B iff r(A) > r(B), else B>A. By default both "
        "orders are played, as run_judge.py does unless --single_game is given and as the published reward-model "
        "outputs were scored: the (B, A) verdict is flipped back, each verdict equal to the label counts +1 and "
        "each against it -1, and a pair is right iff the sum is > 0; for a reward model that is r(right) > "
        "r(wrong), a tie counts wrong. --single-game scores the (A, B) game alone (run_judge.py --single_game): "
        "a tie decides B>A, so it counts right when the label is B>A. Accuracy per response model (the official "
        "code scores one response-model file at a time; GPT-4o and Claude response sets are never pooled), "
        "overall and per category (by source prefix).",
        "Example ids: the row's `pair_id`. Rewards: [response_A, response_B].",
        judgebench.load, judgebench.score,
    ),
    Benchmark(
        "rmb", "RMB: Helpfulness and Harmlessness, pairwise and best-of-N.",
        "--data: RMB_dataset/ (Pairwise_set items with chosen/reject, BoN_set items with bon_best/loser_list). "
        "Rule: pairwise right when r(chosen) > r(reject) (eval/scripts/my_run_rm.py); best-of-N right when "
        "bon_best beats every loser strictly (the paper; ties lose); Overall = mean of the four accuracies.",
        "Example ids: Pairwise-PAIR_UID and BoN-BON_UID. Rewards: [chosen, reject], or [bon_best, then loser_list "
        "in its order].",
        rmb.load, rmb.score,
    ),
    Benchmark(
        "ppe", "PPE: human-preference accuracy and correctness best-of-K curves.",
        "--data: PPE human-preference rows (prompt, response_1, response_2, winner) and/or correctness rows "
        "(prompt, response_1..response_32, scores). Rules from the PPE paper (the official scoring code was not "
        "available to verify): human preference accuracy with reward ties 1/2 and label ties left out; best-of-K "
        "= correctness of the top-reward response among the first K (tied tops share), K = 1, 2, 4 ... 32; "
        "within-prompt pairwise accuracy; pooled ROC-AUC.",
        "Example ids: QUESTION_ID-LINE for human-preference rows and SET-QUESTION_ID-MODEL_NAME-LINE for correctness "
        "rows (QUESTION_ID: the file name without its suffixes followed by -LINE when the row has no "
        "question_id; LINE: the row's line in its file). Rewards: [response_1, response_2, ...].",
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
            cached = f" (--scores has {', '.join(map(repr, sorted(known)))})" if known else ""
            raise BenchmarkError(f"-m {spec}: no such model directory or file, and no cached scores named "
                                 f"{name!r}{cached}")
    return out


def rewards_for(examples: list[Example], models: dict[str, RewardFn | None], options: ScoringOptions,
                benchmark: str, cached: Rewards | None = None) -> Rewards:
    """Cached rewards where they cover every example, else score every response with the model."""
    cached = cached or {}
    rewards: Rewards = {}
    for name, function in models.items():
        saved: dict[str, list[float]] = cached.get(name, {})  # type: ignore[assignment]
        gap = coverage_gap(saved, examples)
        if gap is None:
            rewards[name] = [saved[e.id] for e in examples]
            continue
        if function is None:
            raise BenchmarkError(f"--scores {options.cached}: the rewards of {name!r} do not cover every "
                                 f"{benchmark} example: {gap}; give its model directory (-m {name}=DIR) or the "
                                 "--data the scores were saved from")
        groups = [(e.conversation, e.responses) for e in examples]
        rewards[name] = [[float(x) for x in result.rewards] for result in function(groups)]
    if options.save:
        save_rewards(options.save, benchmark, examples, rewards)
    if options.length_baseline:
        rewards[LENGTH_BASELINE] = [[float(len(r)) for r in e.responses] for e in examples]
    return rewards


def check_request(specs: list[str], options: ScoringOptions) -> None:
    """Refuse, before any data is read, a run with nothing to report or nothing to save."""
    if not specs and not options.cached and not options.length_baseline:
        raise BenchmarkError("nothing to evaluate: give -m MODEL, --scores PATH or --length-baseline")
    if options.save and not specs and not options.cached:
        raise BenchmarkError("--save-scores saves model rewards and the length baseline is never saved (it is "
                             "recomputed from --data on every run): give -m MODEL or --scores PATH to save")


def evaluate(benchmark: str, examples: list[Example], specs: list[str], options: ScoringOptions,
             resamples: int, seed: int, cached: Rewards | None = None, **score_options: Any) -> Report:
    """Every model of `specs` (none: every model of `cached`) and the length baseline on the examples."""
    if not examples:
        raise BenchmarkError(f"no {benchmark} examples in the given --data")
    cached = cached or {}
    if options.cached or options.save:
        check_unique_ids(examples, benchmark)
    models = reward_functions(specs, options, set(cached)) if specs else dict.fromkeys(cached)
    rewards = rewards_for(examples, models, options, benchmark, cached)
    report = BENCHMARKS[benchmark].score(examples, rewards, resamples, seed, **score_options)
    report.notes += options.notes
    if options.length_baseline:
        report.notes.append(f"{LENGTH_BASELINE}: rewards = reply length in characters (a sanity row)")
    return report


def run_benchmark(benchmark: str, data: Iterable[str], specs: list[str], options: ScoringOptions, resamples: int,
                  seed: int, **benchmark_options: Any) -> Report:
    """Load a benchmark's --data files and evaluate the models on them with its official rule."""
    check_request(specs, options)
    cached = load_rewards(options.cached, benchmark) if options.cached else {}
    load_options, score_options = BENCHMARKS[benchmark].split_options(benchmark_options)
    examples = BENCHMARKS[benchmark].examples(data, options.notes, **load_options)
    return evaluate(benchmark, examples, specs, options, resamples, seed, cached, **score_options)


def evaluate_pair_stream(records: Iterable[Any], functions: dict[str, RewardFn | None], by: str,
                         length_baseline: bool, resamples: int, seed: int, counts: Counter | None,
                         scored: str | None = None) -> Report:
    """Pairwise accuracy over a pair stream; with `scored`, the pairs with their new scores are written
    there (atomically: the file appears only when the whole stream was evaluated)."""
    with RecordWriter(scored) if scored else contextlib.nullcontext() as writer:
        return evaluate_pairs(records, functions, by, length_baseline, resamples, seed, counts,
                              writer.write if writer else None)
