"""`synpref filter-consistent` and `synpref route`: the documented decision table, judge aggregation,
recycling (once, and a no-op the second time), conservation through the real CLI, bad input, and
the design card's pipe with two real SmolLM2 reward models."""

from __future__ import annotations

import copy
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from synpref.cli import cli
from synpref.filter_consistent import (
    GOLD_STATES,
    JUDGE_STATES,
    REASONS,
    RM_STATES,
    ConsistencyConfig,
    decision_table,
    filter_consistent_records,
    judge_votes,
    judges_state,
    model_state,
    resolve_signal,
)
from synpref.io import read_json_records, write_records
from synpref.models.reward import sigmoid
from synpref.route import route_records

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "curation.md"
ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}

# a p and a judge label list for each state (the labels of other annotators must not count)
P_OF = {"agrees": 0.9, "disagrees": 0.1, "tie": 0.5}
LABELS_OF = {"agrees": [{"by": "llm:a", "prefers": "chosen", "confidence": 0.8}],
             "disagrees": [{"by": "llm:a", "prefers": "rejected"}],
             "tie": [{"by": "llm:a", "prefers": "tie"}],
             "unsure": [{"by": "llm:a", "prefers": "unsure"}],
             "missing": []}


def _real_pairs(name: str, count: int) -> list[dict]:
    return list(read_json_records(str(REPO / "examples" / "data" / f"{name}.jsonl.zst")))[:count]


def _documented_table() -> dict[tuple[str, str, str], tuple[str, str, str]]:
    """(gold, judges, rm) -> (reason, outcome without --recycle, with --recycle), read from the docs."""
    rows = re.findall(r"^\| (\w+) \| (\w+) \| (\w+) \| `(\w+)` \| (\w+) \| (\w+) \|$", DOCS.read_text(), re.M)
    table = {(g, j, r): (reason, plain, recycled) for g, j, r, reason, plain, recycled in rows}
    assert len(table) == len(rows), "a combination is documented twice"
    return table


def _pair_with(base: dict, gold: str, judges: str, rm: str) -> dict:
    record = copy.deepcopy(base)
    record["scores"] = {}
    for name, state in (("gold", gold), ("rm", rm)):
        if state != "missing":
            p = P_OF[state]
            record["scores"][name] = {"chosen": 0.0, "rejected": 0.0, "p": p}
    record["labels"] = [{"by": "human:ann", "prefers": "rejected"}, *copy.deepcopy(LABELS_OF[judges])]
    return record


# -- the decision table -------------------------------------------------------------------------------

def test_docs_table_covers_every_combination_and_matches_the_code():
    table = _documented_table()
    assert set(table) == {(g, j, r) for g in GOLD_STATES for j in JUDGE_STATES for r in RM_STATES}
    assert len(table) == 80
    for gold, judges, rm, rule in decision_table():
        reason, plain, recycled = table[(gold, judges, rm)]
        assert rule.reason == reason, (gold, judges, rm)
        assert plain == ("kept" if rule.keep else "removed")
        assert recycled == ("recycled" if rule.reversed else plain)
    assert {reason for reason, _, _ in table.values()} == set(REASONS)  # every reason is reachable
    assert all(f"`{reason}`" in DOCS.read_text() for reason in REASONS)


@pytest.mark.parametrize("recycle", [False, True])
def test_every_combination_of_real_signals_gets_its_documented_reason(recycle):
    """Records carrying each combination of signals (p values, judge labels beside a human label)
    go through the library to the outcome and reason the docs give."""
    table = _documented_table()
    base = _real_pairs("hhh-alignment", 1)[0]
    combos = sorted(table)
    records = [{**_pair_with(base, *combo), "id": f"c{i}"} for i, combo in enumerate(combos)]
    config = ConsistencyConfig("gold", "rm", recycle=recycle, missing_gold="remove")
    kept, removed, counts = filter_consistent_records(records, config)
    outcome = {r["id"]: ("recycled" if r.get("recycled") else "kept", None) for r in kept}
    outcome.update({r["id"]: ("removed", r["reason"]) for r in removed})
    assert len(outcome) == len(records) == len(kept) + len(removed)
    for i, combo in enumerate(combos):
        reason, plain, recycled = table[combo]
        assert outcome[f"c{i}"][0] == (recycled if recycle else plain), combo
        if outcome[f"c{i}"][1] is not None:
            assert outcome[f"c{i}"][1] == reason, combo
    expected: Counter[str] = Counter()
    for reason, plain, recycled in table.values():
        expected[f"{'removed' if (recycled if recycle else plain) == 'removed' else 'kept'}_{reason}"] += 1
    assert {key: n for key, n in counts.items() if key.startswith(("kept_", "removed_"))} == expected
    assert counts["recycled"] == (sum(v[2] == "recycled" for v in table.values()) if recycle else 0)


def test_the_paper_rule_on_random_signals():
    """Kept exactly when gold p > t and (the judges' majority is chosen or rm p > t): the rule written
    out independently, on random p values, thresholds and judge panels."""
    rng = random.Random(7)
    base = _real_pairs("evalbiasbench", 1)[0]
    for threshold in (0.5, 0.7):
        records, expected = [], {}
        for i in range(300):
            gold_p, rm_p = round(rng.random(), 2), round(rng.random(), 2)
            votes = [rng.choice(["chosen", "rejected", "tie", "unsure"]) for _ in range(rng.randint(0, 3))]
            record = {**copy.deepcopy(base), "id": f"r{i}", "scores": {"gold": {"p": gold_p}, "rm": {"p": rm_p}},
                      "labels": [{"by": f"llm:j{k}", "prefers": v} for k, v in enumerate(votes)]}
            decided = [v for v in votes if v != "unsure"]
            judges_chosen = bool(decided) and decided.count("chosen") > max(decided.count("rejected"),
                                                                             decided.count("tie"))
            expected[f"r{i}"] = gold_p > threshold and (judges_chosen or rm_p > threshold)
            records.append(record)
        kept, removed, _ = filter_consistent_records(records, ConsistencyConfig("gold", "rm", threshold=threshold))
        assert {r["id"] for r in kept} == {i for i, keep in expected.items() if keep}
        assert {r["id"] for r in removed} == {i for i, keep in expected.items() if not keep}
        assert 0 < len(kept) < len(records)


def test_model_states_at_the_threshold():
    assert [model_state(p) for p in (0.51, 0.5, 0.49, None)] == ["agrees", "tie", "disagrees", "missing"]
    assert [model_state(p, 0.7) for p in (0.71, 0.7, 0.5, 0.3, 0.29)] == [
        "agrees", "tie", "tie", "tie", "disagrees"]
    assert model_state(sigmoid(1e-9 - 0.0)) == "agrees" and model_state(sigmoid(0.0)) == "tie"


@pytest.mark.parametrize(("labels", "state"), [
    ([("llm:a", "chosen"), ("llm:b", "chosen"), ("llm:c", "rejected")], "agrees"),
    ([("llm:a", "rejected"), ("llm:b", "tie"), ("llm:c", "rejected")], "disagrees"),
    ([("llm:a", "chosen"), ("llm:b", "rejected")], "unsure"),  # a split between judges
    ([("llm:a", "tie"), ("llm:b", "tie"), ("llm:c", "chosen")], "tie"),
    ([("llm:a", "unsure"), ("llm:b", "rejected")], "disagrees"),  # unsure judges do not vote
    ([("llm:a", "unsure"), ("llm:b", "unsure")], "unsure"),
    # self-consistency: llm:a's three samples say rejected, outvoting its one chosen
    ([("llm:a", "rejected"), ("llm:a", "chosen"), ("llm:a", "rejected")], "disagrees"),
    ([("llm:a", "rejected"), ("llm:a", "chosen"), ("llm:b", "chosen")], "agrees"),  # a splits: unsure
    ([("human:x", "rejected"), ("rm:y", "rejected")], "missing"),  # not judges
    ([], "missing"),
    # a joint label of annotate judge stands for its judges, which are not counted again
    ([("llm:a", "chosen"), ("llm:b", "rejected"), ("llm:c", "rejected"), ("llm:a+b+c", "chosen")], "agrees"),
])
def test_judge_aggregation(labels, state):
    assert judges_state(judge_votes([{"by": by, "prefers": p} for by, p in labels])) == state


def test_judges_prefix_selects_the_judges():
    labels = [{"by": "llm:gpt-4", "prefers": "chosen"}, {"by": "llm:qwen", "prefers": "rejected"}]
    assert judge_votes(labels) == {"llm:gpt-4": "chosen", "llm:qwen": "rejected"}
    assert judges_state(judge_votes(labels, ("llm:qwen",))) == "disagrees"
    joint = {"by": "llm:x+y", "prefers": "rejected", "meta": {"judges": ["llm:x", "llm:y"]}}
    assert judge_votes([joint, {"by": "llm:x", "prefers": "chosen"}]) == {"llm:x+y": "rejected"}


def test_missing_gold_is_an_error_or_removed_by_policy(tmp_path, runner):
    pairs = _real_pairs("hhh-alignment", 3)
    pairs[0]["scores"] = {"gold": {"chosen": 1.0, "rejected": 0.0, "p": 0.9}, "rm": {"p": 0.8}}
    path = tmp_path / "pairs.jsonl"
    write_records(pairs, str(path))
    failed = runner.invoke(cli, ["filter-consistent", "--gold", "gold", str(path)])
    assert failed.exit_code == 1 and f"{path}:2: field 'scores.gold': missing" in failed.output
    assert "Traceback" not in failed.output
    result = runner.invoke(cli, ["filter-consistent", "--gold", "gold", "--missing-gold", "remove", str(path),
                                 "-o", str(tmp_path / "kept.jsonl"), "--removed", str(tmp_path / "removed.jsonl")])
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_json_records(str(tmp_path / "kept.jsonl"))] == [pairs[0]["id"]]
    removed = list(read_json_records(str(tmp_path / "removed.jsonl")))
    assert [(r["id"], r["reason"]) for r in removed] == [(p["id"], "gold_missing") for p in pairs[1:]]
    assert "current RM: scores.rm" in result.output


# -- recycling ----------------------------------------------------------------------------------------

def test_recycling_flips_exactly_once_and_twice_is_a_no_op():
    pairs = _real_pairs("llmbar", 6)
    reversed_pairs = []
    for i, pair in enumerate(pairs):
        pair["scores"] = {"gold": {"chosen": -1.0, "rejected": 1.0, "p": sigmoid(-2.0)},
                          "rm": {"chosen": 0.5, "rejected": 0.0, "p": sigmoid(0.5)} if i % 3 == 0 else
                          {"chosen": 0.0, "rejected": 0.5, "p": sigmoid(-0.5)},
                          "other": {"chosen": 0.2, "rejected": 0.1, "p": sigmoid(0.1)}}
        pair["labels"] = [{"by": "llm:a", "prefers": "rejected" if i % 2 else "unsure"},
                          {"by": "human:x", "prefers": "rejected"}]
        if i == 5:
            pair["flipped"] = True
        if i % 3 and i % 2:  # gold, rm and judges all reversed
            reversed_pairs.append(pair["id"])
    config = ConsistencyConfig("gold", "rm", recycle=True)
    kept, removed, counts = filter_consistent_records(copy.deepcopy(pairs), config)
    assert sorted(r["id"] for r in kept) == sorted(reversed_pairs) and len(reversed_pairs) == 2
    assert counts["recycled"] == 2 and counts["kept_reversed_gold_judges_rm"] == 2
    assert len(kept) + len(removed) == len(pairs)
    by_id = {p["id"]: p for p in pairs}
    for record in kept:
        before = by_id[record["id"]]
        assert (record["chosen"], record["rejected"]) == (before["rejected"], before["chosen"])
        assert record["flipped"] is (not before.get("flipped", False))
        for name, entry in record["scores"].items():
            old = before["scores"][name]
            assert (entry["chosen"], entry["rejected"]) == (old["rejected"], old["chosen"])
            assert entry["p"] == pytest.approx(1 - old["p"]) == pytest.approx(sigmoid(entry["chosen"] - entry["rejected"]))
        assert [label["prefers"] for label in record["labels"]] == ["chosen", "chosen"]
        [entry] = record["recycled"]
        assert entry["reason"] == "reversed_gold_judges_rm" and entry["prior_label"] == "rejected"
        assert entry["prior_flipped"] is before.get("flipped", False)
        assert entry["signals"]["gold"]["p"] == before["scores"]["gold"]["p"]
    assert {r["id"]: r["reason"] for r in removed} == {
        p["id"]: "gold_disagrees" for p in pairs if p["id"] not in reversed_pairs}
    again, removed_again, counts_again = filter_consistent_records(copy.deepcopy(kept), config)
    assert again == kept and removed_again == [] and counts_again["recycled"] == 0
    assert counts_again["kept_agree_gold_judges_rm"] == 2
    without, removed_without, _ = filter_consistent_records(copy.deepcopy(pairs), ConsistencyConfig("gold", "rm"))
    assert without == [] and sorted(r["id"] for r in removed_without if r["reason"].startswith("reversed")) == sorted(
        reversed_pairs)


# -- conservation through the real CLI ------------------------------------------------------------------

def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = os.path.dirname(sys.executable)
    env = {**ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def signalled(tmp_path_factory) -> tuple[Path, list[dict]]:
    """240 real pairs of two sources with seeded gold/rm scores and judge panels."""
    rng = random.Random(3)
    pairs = _real_pairs("pandalm-test", 120) + _real_pairs("hh-harmless-base-test", 120)
    for pair in pairs:
        gap_gold, gap_rm = rng.gauss(0.5, 1.5), rng.gauss(0.3, 1.5)
        pair["scores"] = {"gold": {"chosen": gap_gold, "rejected": 0.0, "p": sigmoid(gap_gold)},
                          "rm": {"chosen": gap_rm, "rejected": 0.0, "p": sigmoid(gap_rm)}}
        if rng.random() < 0.6:
            pair["labels"] = [{"by": f"llm:j{k}", "prefers": rng.choice(["chosen", "chosen", "rejected", "unsure"])}
                              for k in range(rng.randint(1, 3))]
    path = tmp_path_factory.mktemp("signals") / "scored.jsonl.zst"
    write_records(pairs, str(path))
    return path, pairs


def test_cli_pipe_conserves_every_pair_and_recycling_again_changes_nothing(signalled, tmp_path):
    path, pairs = signalled
    first = _run(f"synpref cat {path} | synpref filter-consistent --gold gold --rm rm --recycle "
                 "--removed removed.jsonl.zst > kept.jsonl.zst", tmp_path)
    assert first.returncode == 0, first.stderr
    kept = list(read_json_records(str(tmp_path / "kept.jsonl.zst")))
    removed = list(read_json_records(str(tmp_path / "removed.jsonl.zst")))
    assert sorted(r["id"] for r in kept + removed) == sorted(p["id"] for p in pairs)
    recycled = [r for r in kept if r.get("recycled")]
    assert kept and removed and recycled
    summary = first.stderr
    assert f"read {len(pairs)}" in summary and f"kept {len(kept)}," in summary and f"recycled {len(recycled)}" in summary
    for source in {p["source"] for p in pairs}:
        expected_kept = sum(r["source"] == source for r in kept)
        expected_recycled = sum(r["source"] == source for r in recycled)
        expected_removed = sum(r["source"] == source for r in removed)
        assert (f"  {source}: kept {expected_kept} (recycled {expected_recycled}), removed {expected_removed}"
                in summary)
    for reason in {r["reason"] for r in removed}:
        assert f"removed_{reason} {sum(r['reason'] == reason for r in removed)}" in summary
    originals = {p["id"]: p for p in pairs}
    assert all(r == originals[r["id"]] for r in kept if not r.get("recycled"))  # passed through unchanged
    second = _run("synpref filter-consistent --gold gold --rm rm --recycle kept.jsonl.zst -o again.jsonl.zst", tmp_path)
    assert second.returncode == 0, second.stderr  # nothing removed: no --removed needed
    assert list(read_json_records(str(tmp_path / "again.jsonl.zst"))) == kept
    assert "recycled" not in second.stderr.split("\n")[0]


def test_cli_route_then_filter_conserves_every_pair(signalled, tmp_path):
    path, pairs = signalled
    result = _run(f"synpref route --rm rm --unconfident unsure.jsonl.zst {path} "
                  "| synpref filter-consistent --gold gold --removed removed.jsonl.zst > kept.jsonl.zst", tmp_path)
    assert result.returncode == 0, result.stderr
    unsure = list(read_json_records(str(tmp_path / "unsure.jsonl.zst")))
    assert unsure and all(r["scores"]["rm"]["p"] <= 0.5 for r in unsure)
    kept = list(read_json_records(str(tmp_path / "kept.jsonl.zst")))
    removed = list(read_json_records(str(tmp_path / "removed.jsonl.zst")))
    confident_ids = sorted(r["id"] for r in kept + removed)
    assert sorted(confident_ids + [r["id"] for r in unsure]) == sorted(p["id"] for p in pairs)
    assert f"confident {len(confident_ids)}, read {len(pairs)}, unconfident {len(unsure)}" in result.stderr
    # the confident side has rm agreeing: the gold decides alone, and rm is found without --rm
    assert all(r["scores"]["gold"]["p"] > 0.5 for r in kept) and "current RM: scores.rm" in result.stderr
    assert {r["reason"] for r in removed} <= {"gold_disagrees", "gold_tie"}


def test_route_splits_by_threshold_and_keeps_records_unchanged(signalled):
    _, pairs = signalled
    for threshold in (0.5, 0.8):
        confident, unconfident, counts = route_records(copy.deepcopy(pairs), "rm", threshold)
        assert [r for r in pairs if r["scores"]["rm"]["p"] > threshold] == confident
        assert [r for r in pairs if r["scores"]["rm"]["p"] <= threshold] == unconfident
        assert counts["confident"] + counts["unconfident"] == counts["read"] == len(pairs)
    with pytest.raises(ValueError, match="threshold"):
        route_records(pairs, "rm", 0.3)


def test_route_creates_both_outputs_even_when_one_side_is_empty(runner, tmp_path):
    pairs = _real_pairs("mtbench-gpt4-pairs", 4)
    for pair in pairs:
        pair["scores"] = {"rm": {"chosen": 2.0, "rejected": 0.0, "p": sigmoid(2.0)}}
    write_records(pairs, str(tmp_path / "in.jsonl"))
    result = runner.invoke(cli, ["route", "--rm", "rm", str(tmp_path / "in.jsonl"), "--confident",
                                 str(tmp_path / "c.jsonl"), "--unconfident", str(tmp_path / "u.jsonl")])
    assert result.exit_code == 0, result.output
    assert list(read_json_records(str(tmp_path / "c.jsonl"))) == pairs
    assert (tmp_path / "u.jsonl").exists() and list(read_json_records(str(tmp_path / "u.jsonl"))) == []


# -- bad input ----------------------------------------------------------------------------------------

BAD = [
    ({"scores": [1, 2]}, "scores"),
    ({"scores": {"gold": 0.9}}, "scores.gold"),
    ({"scores": {"gold": {"chosen": 1.0, "rejected": 0.0}}}, "scores.gold.p"),
    ({"scores": {"gold": {"p": "high"}}}, "scores.gold.p"),
    ({"scores": {"gold": {"p": 1.5}}}, "scores.gold.p"),
    ({"scores": {"gold": {"p": 0.9, "chosen": "1.0"}}}, "scores.gold.chosen"),
    ({"scores": {"gold": {"p": 0.9}, "rm": {"p": None}}}, "scores.rm.p"),
    ({"labels": {"by": "llm:a"}}, "labels"),
    ({"labels": ["chosen"]}, "labels[0]"),
    ({"labels": [{"prefers": "chosen"}]}, "labels[0].by"),
    ({"labels": [{"by": "human:x", "prefers": "chosen"}, {"by": "llm:a", "prefers": "maybe"}]}, "labels[1].prefers"),
    ({"labels": [{"by": "llm:a", "prefers": "chosen", "confidence": 2}]}, "labels[0].confidence"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_malformed_signals_name_the_field(runner, tmp_path, change, field):
    good, bad = _real_pairs("evalbiasbench", 2)
    good["scores"] = {"gold": {"p": 0.9}, "rm": {"p": 0.8}}
    bad["scores"] = {"gold": {"p": 0.9}}
    bad.update(change)
    path = tmp_path / "pairs.jsonl"
    write_records([good, bad], str(path))
    failed = runner.invoke(cli, ["filter-consistent", "--gold", "gold", "--rm", "rm", str(path)])
    assert failed.exit_code == 1 and f"{path}:2: field '{field}'" in failed.output, failed.output
    assert failed.exception is None or isinstance(failed.exception, SystemExit)
    errors = tmp_path / "errors.jsonl"
    skipped = runner.invoke(cli, ["filter-consistent", "--gold", "gold", "--rm", "rm", str(path), "--on-error", "skip",
                                  "--errors", str(errors), "-o", str(tmp_path / "kept.jsonl")])
    assert skipped.exit_code == 0, skipped.output
    assert [(e["line"], e["field"]) for e in read_json_records(str(errors))] == [(2, field)]
    assert [r["id"] for r in read_json_records(str(tmp_path / "kept.jsonl"))] == [good["id"]]


def test_route_bad_input_names_the_field(runner, tmp_path):
    good, missing, broken = _real_pairs("evalbiasbench", 3)
    good["scores"] = {"rm": {"p": 0.9}}
    broken["scores"] = {"rm": {"p": "0.9"}}
    for record, field in ((missing, "scores.rm"), (broken, "scores.rm.p")):
        path = tmp_path / "in.jsonl"
        write_records([good, record], str(path))
        result = runner.invoke(cli, ["route", "--rm", "rm", str(path), "--unconfident", str(tmp_path / "u.jsonl")])
        assert result.exit_code == 1 and f"{path}:2: field '{field}'" in result.output, result.output
        assert not (tmp_path / "u.jsonl").exists()  # atomic: a failed run leaves no output


def test_cli_usage_errors(runner, tmp_path):
    pairs = _real_pairs("hhh-alignment", 2)
    for pair, p in zip(pairs, (0.9, 0.1), strict=True):
        pair["scores"] = {"gold": {"p": p}, "rm": {"p": 0.9}, "rm2": {"p": 0.2}}
    path = tmp_path / "pairs.jsonl"
    write_records(pairs, str(path))
    needs_removed = runner.invoke(cli, ["filter-consistent", "--gold", "gold", "--rm", "rm", str(path)])
    assert needs_removed.exit_code == 2 and "--removed PATH" in needs_removed.output
    ambiguous = runner.invoke(cli, ["filter-consistent", "--gold", "gold", str(path)])
    assert ambiguous.exit_code == 1 and "field 'scores': holds several scores besides the gold's (rm, rm2)" in (
        ambiguous.output)
    same = runner.invoke(cli, ["filter-consistent", "--gold", "rm", "--rm", "rm", str(path)])
    assert same.exit_code == 2 and "same signal" in same.output
    (tmp_path / "not-a-model").mkdir()
    not_model = runner.invoke(cli, ["filter-consistent", "--gold", str(tmp_path / "not-a-model"), str(path)])
    assert not_model.exit_code == 2 and "not a reward model (no config.json)" in not_model.output
    threshold = runner.invoke(cli, ["filter-consistent", "--gold", "gold", "--threshold", "0.4", str(path)])
    assert threshold.exit_code == 2 and "--threshold" in threshold.output
    assert resolve_signal("gold") == ("gold", None)


# -- the design card's pipe with two real reward models ----------------------------------------------------

def _reseeded_copy(model_dir: Path, out: Path, seed: int) -> None:
    """MODEL_DIR with its scalar head redrawn from SEED as `synpref rm init --seed` draws it (N(0,
    initializer_range) from a generator seeded with SEED: the same tensors as `synpref rm init --from
    MODEL_DIR --seed SEED` writes), the other files linked. Writing the tensors directly takes ~2 s
    where `rm init` (load, build, save) took ~15 s on the shared 2-core machine."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir()
    for name in os.listdir(model_dir):
        if name != "model.safetensors":
            (out / name).symlink_to(model_dir / name)
    tensors = load_file(model_dir / "model.safetensors")
    std = orjson.loads((model_dir / "config.json").read_bytes()).get("initializer_range", 0.02)
    generator = torch.Generator().manual_seed(seed)
    tensors["score.weight"] = torch.empty_like(tensors["score.weight"]).normal_(0.0, std, generator=generator)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.slow
def test_design_card_pipe_with_two_smollm2_reward_models(smollm2_rm, tmp_path):
    """`synpref score -m rm.ckpt < pairs | synpref filter-consistent --gold gold-rm` as written (plus
    --removed and a short --max-length): the current RM is the smollm2_rm fixture, the gold RM the
    same backbone with a head of another seed; kept exactly when both give p > 0.5."""
    _reseeded_copy(smollm2_rm, tmp_path / "gold-rm", seed=1)
    (tmp_path / "rm.ckpt").symlink_to(smollm2_rm)
    hh = [r for r in read_json_records(str(REPO / "examples" / "data" / "hh-harmless-base-test.jsonl.zst"))
          if r["chosen"].strip() and r["rejected"].strip()]
    hh.sort(key=lambda r: len(orjson.dumps([r["conversation"], r["chosen"], r["rejected"]])))  # CI time
    pairs = hh[:24]
    write_records(pairs, str(tmp_path / "pairs.jsonl.zst"))
    result = _run("synpref score -m rm.ckpt --max-length 256 < pairs.jsonl.zst | synpref filter-consistent "
                  "--gold gold-rm --max-length 256 --removed removed.jsonl.zst > kept.jsonl.zst", tmp_path)
    assert result.returncode == 0, result.stderr
    kept = list(read_json_records(str(tmp_path / "kept.jsonl.zst")))
    removed = list(read_json_records(str(tmp_path / "removed.jsonl.zst")))
    assert sorted(r["id"] for r in kept + removed) == sorted(p["id"] for p in pairs)
    for record in kept + removed:
        gold, rm = record["scores"]["gold-rm"], record["scores"]["rm.ckpt"]
        assert gold["p"] == pytest.approx(sigmoid(gold["chosen"] - gold["rejected"]))
        assert (record in kept) == (gold["p"] > 0.5 and rm["p"] > 0.5)
    assert kept and removed
    assert any(abs(r["scores"]["gold-rm"]["chosen"] - r["scores"]["rm.ckpt"]["chosen"]) > 1e-3 for r in kept + removed)
    assert "current RM: scores.rm.ckpt" in result.stderr and f"read {len(pairs)}" in result.stderr
    assert {r["reason"] for r in removed} <= {"gold_disagrees", "reversed_gold_rm", "unconfirmed", "gold_tie"}
