"""The bookkeeping of the noise-recovery experiment (run.sh): what the CLI has no command for.

    python noise.py split PAIRS OUT --heldout N --gold N --silver N --noise 0.3 --seed 0
    python noise.py ablate --signal gold|rm|judges JUDGED -o KEPT --removed REMOVED
    python noise.py report OUT --curated NAME=KEPT:REMOVED ... > results.md

`split` makes a prompt-disjoint held-out set and, from the other prompts, a clean gold set and a
silver set in which a known fraction of the labels is flipped (the truth goes to OUT/truth.json,
which nothing in the pipeline reads). `ablate` applies one signal alone, with the pipeline's
recycling: keep when it agrees, flip when it disagrees, remove on a tie or when it is missing.
`report` scores each curated set against the truth (precision and recall at finding the flipped
pairs) and the held-out accuracies of the RMs trained on them, with paired-bootstrap intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from synpref.eval.bootstrap import interval, resampled_means
from synpref.filter_consistent import AGREES, DISAGREES, flip, judge_votes, judges_state, model_state
from synpref.io.streams import read_json_records, write_records

RESAMPLES = 2000


def question(record: dict) -> str:
    """The prompt a pair answers: pairs of one question never straddle held-out and training."""
    return str((record.get("extra") or {}).get("question_id") or record["conversation"][0]["content"])


def split(args: argparse.Namespace) -> None:
    pairs = [r for r in read_json_records(args.pairs) if r["chosen"].strip() and r["rejected"].strip()]
    by_question: dict[str, list[dict]] = defaultdict(list)
    for record in pairs:
        by_question[question(record)].append(record)
    questions = sorted(by_question)
    rng = random.Random(args.seed)
    rng.shuffle(questions)
    heldout: list[dict] = []
    while len(heldout) < args.heldout:
        heldout += by_question[questions.pop()]
    train = [record for q in questions for record in by_question[q]]
    rng.shuffle(train)
    if len(train) < args.gold + args.silver:
        raise SystemExit(f"noise.py: {len(train)} training-side pairs, fewer than --gold + --silver")
    gold, silver = train[: args.gold], train[args.gold : args.gold + args.silver]
    flipped = set(rng.sample([r["id"] for r in silver], round(args.noise * len(silver))))
    noisy = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} if r["id"] in flipped else r for r in silver]
    os.makedirs(args.out, exist_ok=True)
    for name, records in {"heldout": heldout, "gold": gold, "silver-clean": silver, "silver-noisy": noisy}.items():
        write_records(records, os.path.join(args.out, f"{name}.jsonl.zst"))
    truth = {"flipped": sorted(flipped), "chosen": {r["id"]: r["chosen"] for r in silver},
             "heldout_questions": len({question(r) for r in heldout}), "noise": args.noise, "seed": args.seed}
    with open(os.path.join(args.out, "truth.json"), "w") as handle:
        json.dump(truth, handle)
    print(f"noise.py split: held-out {len(heldout)} pairs ({truth['heldout_questions']} questions), gold {len(gold)}, "
          f"silver {len(silver)} with {len(flipped)} flipped")


SIGNAL_STATE = {
    "gold": lambda record: model_state((record.get("scores", {}).get("gold") or {}).get("p")),
    "rm": lambda record: model_state((record.get("scores", {}).get("rm") or {}).get("p")),
    "judges": lambda record: judges_state(judge_votes(record.get("labels") or [])),
}


def ablate(args: argparse.Namespace) -> None:
    state_of = SIGNAL_STATE[args.signal]
    kept, removed = [], []
    for record in read_json_records(args.judged):
        state = state_of(record)
        reason = f"{args.signal}_only_{state}"
        if state == AGREES:
            kept.append(record)
        elif state == DISAGREES:
            kept.append(flip(record, reason, {args.signal: state}))
        else:
            removed.append({**record, "reason": reason})
    write_records(kept, args.output)
    write_records(removed, args.removed)
    print(f"noise.py ablate {args.signal}: kept {len(kept)} (recycled {sum('recycled' in r for r in kept)}), "
          f"removed {len(removed)}")


def detection(truth: dict, kept: Iterable[dict], removed: Iterable[dict]) -> dict:
    """Flagged = removed or recycled. Precision and recall of flagging the flipped pairs, and how
    many labels of the set that remains are wrong."""
    flipped = set(truth["flipped"])
    kept, removed = list(kept), list(removed)
    recycled = {r["id"] for r in kept if r.get("recycled")}
    flagged = recycled | {r["id"] for r in removed}
    wrong = sum(r["chosen"] != truth["chosen"][r["id"]] for r in kept)
    hits = len(flagged & flipped)
    return {
        "kept": len(kept), "removed": len(removed), "recycled": len(recycled),
        "flagged": len(flagged), "flipped_flagged": hits,
        "precision": hits / len(flagged) if flagged else float("nan"),
        "recall": hits / len(flipped) if flipped else float("nan"),
        "recycled_corrected": len(recycled & flipped), "recycled_wrongly": len(recycled - flipped),
        "wrong_labels_kept": wrong, "noise_kept": wrong / len(kept) if kept else float("nan"),
    }


def accuracies(scored: str, names: list[str], baseline: str) -> tuple[dict, dict]:
    """Held-out accuracy of each score name (or the length baseline) with a bootstrap interval, and
    each one's paired difference from BASELINE (the same resampled pairs for both)."""
    right: dict[str, list[float]] = {name: [] for name in names}
    for record in read_json_records(scored):
        for name in names:
            if name == "length-baseline":  # prefers the longer reply
                gap = len(record["chosen"]) - len(record["rejected"])
            else:
                gap = record["scores"][name]["chosen"] - record["scores"][name]["rejected"]
            right[name].append(1.0 if gap > 0 else 0.5 if gap == 0 else 0.0)
    rng = np.random.default_rng(0)
    table, differences = {}, {}
    for name in names:
        values = np.asarray(right[name])
        table[name] = {"accuracy": float(values.mean()), "ci": interval(resampled_means(values, RESAMPLES, rng)),
                       "pairs": int(values.size)}
        if name != baseline:
            delta = values - np.asarray(right[baseline])
            differences[name] = {"difference": float(delta.mean()),
                                 "ci": interval(resampled_means(delta, RESAMPLES, rng))}
    return table, differences


def report(args: argparse.Namespace) -> None:
    with open(os.path.join(args.out, "truth.json")) as handle:
        truth = json.load(handle)
    found = {}
    for spec in args.curated:
        name, _, paths = spec.partition("=")
        kept, _, removed = paths.partition(":")
        found[name] = detection(truth, read_json_records(kept),
                                read_json_records(removed) if os.path.exists(removed) else [])
    names = [n for n in args.models.split(",") if n]
    table, differences = accuracies(args.scored, names, args.baseline)
    results = {"truth": {k: v for k, v in truth.items() if k != "chosen"} | {"silver": len(truth["chosen"])},
               "detection": found, "accuracy": table, "difference_from_" + args.baseline: differences}
    with open(os.path.join(args.out, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    print(f"silver {len(truth['chosen'])} pairs, {len(truth['flipped'])} flipped ({truth['noise']:.0%}); "
          f"held-out {table[names[0]]['pairs']} pairs from {truth['heldout_questions']} questions\n")
    print("| curated set | kept | removed | recycled (of them flipped) | precision | recall | wrong labels kept |")
    print("|---|---|---|---|---|---|---|")
    for name, d in found.items():
        print(f"| {name} | {d['kept']} | {d['removed']} | {d['recycled']} ({d['recycled_corrected']}) "
              f"| {d['precision']:.3f} | {d['recall']:.3f} | {d['wrong_labels_kept']} ({d['noise_kept']:.1%}) |")
    print(f"\n| RM trained on | held-out accuracy [95% CI] | minus {args.baseline} [95% CI] |")
    print("|---|---|---|")
    for name in names:
        row, diff = table[name], differences.get(name)
        text = f"{diff['difference']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}]" if diff else "–"
        print(f"| {name} | {row['accuracy']:.3f} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}] | {text} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("split", help="held-out, gold, clean and noisy silver sets")
    s.add_argument("pairs")
    s.add_argument("out")
    s.add_argument("--heldout", type=int, default=250, help="at least this many held-out pairs (whole questions)")
    s.add_argument("--gold", type=int, default=120)
    s.add_argument("--silver", type=int, default=500)
    s.add_argument("--noise", type=float, default=0.3, help="fraction of silver labels flipped")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(run=split)
    a = commands.add_parser("ablate", help="one signal alone, with recycling")
    a.add_argument("judged")
    a.add_argument("--signal", choices=sorted(SIGNAL_STATE), required=True)
    a.add_argument("-o", "--output", required=True)
    a.add_argument("--removed", required=True)
    a.set_defaults(run=ablate)
    r = commands.add_parser("report", help="precision/recall and held-out accuracies (markdown on stdout)")
    r.add_argument("out")
    r.add_argument("--curated", action="append", default=[], help="NAME=KEPT:REMOVED")
    r.add_argument("--scored", required=True, help="held-out pairs with scores.NAME of every RM")
    r.add_argument("--models", required=True, help="score names, comma-separated, in table order")
    r.add_argument("--baseline", default="noisy")
    r.set_defaults(run=report)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
