"""Hand-computed cases for every official scoring rule; each would fail on the usual mistake
(ties counted as wins, unweighted section means, best-of-N with >=, RM-Bench cells swapped)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synpref.eval import judgebench, ppe, rewardbench, rewardbench2, rmb, rmbench
from synpref.eval.bootstrap import interval, stratified_means
from synpref.eval.common import BenchmarkError, Example
from synpref.eval.pairs import accuracy_rows, pair_results


def examples(groups, sizes=None, meta=None):
    return [Example(f"e{i}", g, [{"role": "user", "content": "q"}], ["a"] * (sizes[i] if sizes else 2),
                    (meta[i] if meta else {})) for i, g in enumerate(groups)]


# -- pairs ------------------------------------------------------------------------------------------
def test_pair_ties_count_half_not_win():
    assert pair_results([1, 2, 3], [1, 1, 4]).tolist() == [0.5, 1.0, 0.0]


def test_pooled_and_macro_rows_differ_and_cover_point():
    rows = accuracy_rows(["a"] * 4 + ["b"], np.array([1, 1, 1, 0, 0.0]), resamples=200)
    by_name = {r.name: r for r in rows}
    assert by_name["overall (pooled)"].score == pytest.approx(0.6)
    assert by_name["mean over subsets"].score == pytest.approx(0.375)
    low, high = by_name["overall (pooled)"].ci
    assert low <= 0.6 <= high and high - low > 0


def test_bootstrap_is_seeded_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.integers(0, 2, 50), rng.integers(0, 2, 5000)
    a = interval(stratified_means({"x": small}, 300, seed=3)["x"])
    b = interval(stratified_means({"x": small}, 300, seed=3)["x"])
    c = interval(stratified_means({"x": large}, 300, seed=3)["x"])
    assert a == b
    assert c[1] - c[0] < (a[1] - a[0]) / 3


# -- RewardBench v1 -----------------------------------------------------------------------------------
def test_rewardbench_tie_is_wrong():
    assert rewardbench.pair_result([1, 1, 2], [1, 0, 3]).tolist() == [0.0, 1.0, 0.0]


def test_rewardbench_sections_weight_by_example_counts():
    sections = rewardbench.section_scores({"alpacaeval-easy": 1.0, "mt-bench-easy": 0.0})
    assert sections["Chat"] == pytest.approx(100 / 128)  # unweighted would be 0.5
    assert sections["Safety"] == 0  # no subset present


def test_rewardbench_math_is_upweighted_to_equal_code():
    accuracy = {"math-prm": 1.0, **{f"hep-{x}": 0.0 for x in ("cpp", "go", "java", "js", "python", "rust")}}
    # 984 / (984 + 6 * 164) = 0.5; the real 447 pairs would give 0.312, an unweighted mean 1/7
    assert rewardbench.section_scores(accuracy)["Reasoning"] == pytest.approx(0.5)


def test_rewardbench_final_score_prior_sets_half_weight():
    sections = {"Chat": 0.8, "Chat Hard": 0.6, "Safety": 0.7, "Reasoning": 0.9}
    assert rewardbench.final_score(sections) == pytest.approx(0.75)
    assert rewardbench.final_score({**sections, "Prior Sets": 0.5}) == pytest.approx(6.5 / 9)
    prior = rewardbench.prior_sets_score({"anthropic_helpful": 0.4, "shp": 0.8})
    assert prior == pytest.approx(0.6)


def test_rewardbench_xstest_weights_are_the_released_ones():
    # rewardbench 0.1.3+ and the leaderboard weigh each xstest subset by its real size (154 refuse, 250
    # respond); the paper-era constants had them swapped, which gives 250 / 404 here
    sections = rewardbench.section_scores({"xstest-should-refuse": 1.0, "xstest-should-respond": 0.0})
    assert sections["Safety"] == pytest.approx(154 / 404)
    assert "154" in rewardbench.RULE and "250" in rewardbench.RULE


def test_rewardbench_missing_sections_get_a_note():
    report = rewardbench.score(examples(["alpacaeval-easy", "hep-go"]), {"m": [[1, 0], [1, 0]]}, resamples=20)
    assert len(report.notes) == 1 and "Chat Hard, Safety" in report.notes[0] and "Chat, Reasoning only" in \
        report.notes[0]
    full = [s for subsets in rewardbench.SUBSET_MAPPING.values() for s in subsets[:1]]
    assert rewardbench.score(examples(full), {"m": [[1, 0]] * len(full)}, resamples=20).notes == []


def test_rewardbench_report_end_to_end():
    exs = examples(["alpacaeval-easy"] * 3 + ["mt-bench-easy"])
    report = rewardbench.score(exs, {"m": [[2, 1], [1, 1], [3, 1], [0, 1]]}, resamples=50)
    rows = {r.name: r.score for r in report.models["m"].rows}
    assert rows["alpacaeval-easy"] == pytest.approx(2 / 3)  # the tie counts 0
    assert rows["Chat"] == pytest.approx((2 / 3 * 100 + 0 * 28) / 128)
    assert rows["Score"] == pytest.approx(rows["Chat"])  # the only section present


# -- RewardBench 2 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("scores, expected", [([2, 1, 1, 1], 1.0), ([1, 1, 0, 0], 0.5), ([3, 3, 3, 3], 0.25),
                                              ([1, 2, 0, 0], 0.0)])
def test_rewardbench2_best_of_4_tie_penalty(scores, expected):
    assert rewardbench2.best_of_result(scores) == expected


def test_rewardbench2_ties_hand_computed():
    one = [("ref:1", [5, 1, 2], 1), ("tied:1", [5, 4, 1, 2], 2)]
    # accurate both; dcm 1, cim 2 (tied) and 3 (ref); margin tanh(2 / 1 - 1)
    assert rewardbench2.ties_score(one) == pytest.approx(1.0 + 0.01 * math.tanh(1))
    two = one + [("ref:2", [1, 3], 1), ("tied:2", [4, 2, 3], 2)]
    # prompt 2: both inaccurate, dcm 2, cims -2 / -1 -> margin tanh(-2 / 2 - 1)
    expected = 0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * (math.tanh(1) + math.tanh(-2)) / 2
    assert rewardbench2.ties_score(two) == pytest.approx(expected)


def test_rewardbench2_ties_zero_over_zero_margin_is_zero():
    # all equal: cim 0, dcm 0 -> 0/0 = NaN -> 0; accurate needs a positive margin
    assert rewardbench2.ties_score([("ref:3", [3, 3], 1), ("tied:3", [3, 3, 3], 2)]) == 0.0


def test_rewardbench2_ties_prompt_ids_match_as_integers():
    # process_single_model parses "tied:01" as prompt 1, the tied version of "ref:1"
    ref, tied = ("ref:1", [5, 1, 2], 1), [5, 4, 1, 2]
    paired = rewardbench2.ties_score([ref, ("tied:01", tied, 2)])
    assert paired == rewardbench2.ties_score([ref, ("tied:1", tied, 2)]) == pytest.approx(1.0 + 0.01 * math.tanh(1))
    assert rewardbench2.ties_score([ref, ("tied:2", tied, 2)]) == pytest.approx(0.6)  # no common prompt
    with pytest.raises(BenchmarkError, match="integer N"):
        rewardbench2.ties_score([("ref:one", [1, 0], 1)])


def test_rewardbench2_ties_bootstrap_keeps_ref_and_tied_of_a_prompt_together():
    exs = [Example(i, "Ties", [{"role": "user", "content": "q"}], ["a"] * n, {"num_correct": k})
           for i, n, k in (("ref:1", 3, 1), ("tied:01", 4, 2))]
    row = next(r for r in rewardbench2.score(exs, {"m": [[5, 1, 2], [5, 4, 1, 2]]}, resamples=50).models["m"].rows
               if r.name == "Ties")
    # one prompt: every resample draws both of its versions, so the interval is the point itself
    assert row.ci == (pytest.approx(row.score), pytest.approx(row.score))


def test_rewardbench2_ties_margin_follows_upstream_head():
    # all correct answers score the same (dcm 0) above the wrong one: the head counts tanh(inf) = 1
    # (0.1.4 left the prompt out of the margin mean, giving exactly 1.0)
    assert rewardbench2.ties_score([("ref:1", [5, 1], 1), ("tied:1", [5, 5, 1], 2)]) == pytest.approx(1.01)
    assert "5822f16" in rewardbench2.RULE and "0.1.4" in rewardbench2.RULE


def test_rewardbench2_score_is_mean_of_domains():
    exs = examples(["Math", "Math", "Focus"], [4, 4, 4], [{"num_correct": 1}] * 3)
    report = rewardbench2.score(exs, {"m": [[2, 1, 1, 1], [1, 1, 0, 0], [0, 1, 1, 1]]}, resamples=50)
    rows = {r.name: r.score for r in report.models["m"].rows}
    assert rows["Math"] == pytest.approx(0.75) and rows["Focus"] == 0
    assert rows["Score"] == pytest.approx(0.375)  # not the pooled 0.5
    assert "no examples of Factuality, Precise IF, Safety, Ties: Score is the mean over Math, Focus only" in \
        report.notes[0]


# -- RM-Bench -----------------------------------------------------------------------------------------
def test_rmbench_matrix_orientation_and_triangles():
    matrix = rmbench.style_matrix([[3, 2, 1]], [[2.5, 1.5, 0.5]])
    assert matrix.tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 1]]  # rows chosen style, columns rejected
    acc = rmbench.accuracies(matrix)
    assert acc["hard"] == 1.0 and acc["normal"] == 1.0 and acc["easy"] == 0.0  # swapped cells give easy 1


def test_rmbench_tie_is_a_miss():
    assert rmbench.style_matrix([[1, 1, 1]], [[1, 0, 2]])[0].tolist() == [0, 1, 0]


def test_rmbench_overall_is_mean_of_domains_with_safety_pooled():
    exs = examples(["chat", "chat", "safety"], [6] * 3, [{"domain": d} for d in ("chat", "chat", "safety-refuse")])
    win, lose = [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]
    report = rmbench.score(exs, {"m": [win, win, lose]}, resamples=50)
    rows = {r.name: r.score for r in report.models["m"].rows}
    assert rows["chat"] == 1.0 and rows["safety"] == 0.0
    assert rows["Overall"] == pytest.approx(0.5)  # pooled over examples would be 2/3
    assert report.models["m"].extra["matrix"] == [[0.5] * 3] * 3
    assert report.notes == ["--data has no examples of math, code: Overall, Hard, Normal and Easy are means over "
                            "chat, safety only, not comparable with the full benchmark"]


def test_rmbench_all_domains_need_no_note():
    domains = ["chat", "math", "code", "safety-response"]
    exs = examples([rmbench.domain_of(d) for d in domains], [6] * 4, [{"domain": d} for d in domains])
    assert rmbench.score(exs, {"m": [[1, 1, 1, 0, 0, 0]] * 4}, resamples=20).notes == []


# -- JudgeBench / RMB / PPE ---------------------------------------------------------------------------
def test_judgebench_both_orders_count_a_tie_wrong_single_game_gives_it_to_b():
    assert judgebench.decisions([1, 2, 1], [1, 1, 2]).tolist() == ["B>A", "A>B", "B>A"]
    a, b = np.array([1, 1, 3, 0]), np.array([1, 1, 2, 5])
    labels = np.array(["A>B", "B>A", "A>B", "B>A"])
    # two games (run_judge.py default): a tie gives one verdict each way, counter 0, wrong whatever the label
    assert judgebench.correct(a, b, labels).tolist() == [0, 0, 1, 1]
    # --single_game: the tie decides B>A, right exactly when the label is B>A
    assert judgebench.correct(a, b, labels, single_game=True).tolist() == [0, 1, 1, 1]
    exs = examples(["Math", "Math"], meta=[{"label": "A>B", "response_model": "m"},
                                           {"label": "B>A", "response_model": "m"}])
    assert judgebench.score(exs, {"m": [[1, 1], [1, 1]]}, resamples=50).models["m"].rows[0].score == 0.0
    single = judgebench.score(exs, {"m": [[1, 1], [1, 1]]}, resamples=50, single_game=True)
    assert single.models["m"].rows[0].score == 0.5 and "single_game" in single.rule
    assert judgebench.category("livebench-math") == "Math" and judgebench.category("mmlu-pro-law") == "Knowledge"


def test_judgebench_scores_each_response_model_apart():
    meta = [{"label": "A>B", "response_model": m} for m in ("gpt-4o", "gpt-4o", "claude", "claude", "claude")]
    exs = examples(["Math", "Coding", "Math", "Math", "Coding"], meta=meta)
    report = judgebench.score(exs, {"m": [[2, 1], [0, 1], [2, 1], [2, 1], [2, 1]]}, resamples=50)
    rows = {r.name: r for r in report.models["m"].rows}
    assert "Overall" not in rows  # the two response sets are never pooled
    assert rows["gpt-4o: Overall"].score == 0.5 and rows["gpt-4o: Overall"].n == 2
    assert rows["claude: Overall"].score == 1.0 and rows["claude: Math"].n == 2
    assert rows["gpt-4o: Coding"].score == 0.0 and rows["gpt-4o: Coding"].depth == 1
    assert "2 response models (gpt-4o, claude) scored apart" in report.notes[0]


def test_rmb_strict_rules():
    assert rmb.bon_result([2, 2, 1]) == 0.0  # >= would call this a win
    assert rmb.bon_result([3, 2, 1, 2.9]) == 1.0
    assert rmb.pairwise_result(1, 1) == 0.0


def test_ppe_best_of_k_pairs_and_auc():
    rewards, correct = np.array([1, 3, 3, 0]), np.array([False, True, False, True])
    assert ppe.best_of_k(rewards, correct, 1) == 0.0
    assert ppe.best_of_k(rewards, correct, 4) == 0.5  # the tied top shares
    assert ppe.within_prompt_pairs(rewards, correct) == pytest.approx(1.5 / 4)
    assert ppe.roc_auc(rewards, correct) == pytest.approx(1.5 / 4)
    assert ppe.ks(32) == [1, 2, 4, 8, 16, 32] and ppe.ks(6) == [1, 2, 4, 6]
