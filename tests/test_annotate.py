"""`synpref annotate`: verdict reading, aggregation, order randomization, failures, resume and
templates with scripted engines (plumbing only: tiny classes implementing the generation
protocol), then the real SmolLM2-135M-Instruct on real LLMBar and PandaLM pairs."""

from __future__ import annotations

import math
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import orjson
import pytest

from synpref.annotate import (
    Caller,
    JudgeOptions,
    PairJudge,
    PromptTemplate,
    annotate_records,
    annotate_stage,
    attribute_records,
    judge_records,
    parse_verdict,
    shows_rejected_first,
    verify_records,
)
from synpref.annotate.aggregate import Decision, Reading, combine_models, combine_readings
from synpref.annotate.attributes import CLOSED, attribute_problems, parse_desired, parse_guideline
from synpref.annotate.run import Meter
from synpref.annotate.verify import pair_label
from synpref.cli import cli
from synpref.engines.torch_generate import shared_heads
from synpref.io import read_json_records
from synpref.io.resume import resume_path
from synpref.stage import Stage, StageOptions

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "data"
CANDIDATES = re.compile(r"Candidate 1:\n(.*)\n\nCandidate 2:\n(.*)\n\nWhich candidate", re.DOTALL)


def last_user(prompt) -> str:
    return [message["content"] for message in prompt if message["role"] == "user"][-1]


def shown(prompt) -> tuple[str, str]:
    """The target pair's (Candidate 1, Candidate 2) texts in a judge prompt."""
    match = CANDIDATES.search(prompt[0]["content"].rsplit("Now the pair to judge.", 1)[-1])
    return match.group(1), match.group(2)


class MarkerJudge:
    """Scripted: P("1") = STRENGTH when Candidate 1 contains GOOD (1 - STRENGTH when Candidate 2
    does), or always BIAS when set; generate answers with the scripted texts in turn."""

    def __init__(self, strength: float = 0.8, bias: float | None = None, texts: list[str] | None = None):
        self.strength, self.bias, self.texts = strength, bias, list(texts or [])
        self.prompts: list = []
        self.calls = 0

    def p1(self, prompt) -> float:
        if self.bias is not None:
            return self.bias
        first, second = shown(prompt)
        return self.strength if "GOOD" in first else 1 - self.strength if "GOOD" in second else 0.5

    def candidate_logprobs(self, prompts, candidates):
        self.calls += 1
        self.prompts += prompts
        assert list(candidates) == ["1", "2"]
        return [[math.log(self.p1(p)), math.log(1 - self.p1(p))] for p in prompts]

    def generate(self, prompts, n=1, max_tokens=256, temperature=0.0, stop=(), seed=0):
        self.calls += 1
        self.prompts += prompts
        return [[self.texts.pop(0) for _ in range(n)] for _ in prompts]


def pairs(count: int, good: str = "chosen", prefix: str = "p") -> list[dict]:
    records = []
    for index in range(count):
        sides = {"chosen": f"chosen reply {index}", "rejected": f"rejected reply {index}"}
        sides[good] += " GOOD"
        records.append({"id": f"{prefix}{index:04d}", "conversation": [{"role": "user", "content": f"question {index}"}],
                        **sides, "source": "test", "labels": [{"by": "human:ann", "prefers": "chosen"}]})
    return records


def judged(records, engine, name="m", **options):
    task = PairJudge([Caller(name, engine)], PromptTemplate.load("judge"), JudgeOptions(**options))
    counts: Counter[str] = Counter()
    return list(annotate_records(records, task, window=16, counts=counts)), counts, task


def llm_label(record, by="llm:m"):
    [label] = [label for label in record["labels"] if label["by"] == by]
    return label


# -- verdicts out of prose ---------------------------------------------------------------------
@pytest.mark.parametrize("text, verdict", [
    ("[[2]]", "2"), ("My verdict: [[1]] because it is longer", "1"), ("2", "2"), ("1.", "1"),
    ("**Candidate 2**", "2"), ("Candidate 1 is better than Candidate 2 here.", "1"),
    ("After reading both, the better one is Candidate 2.", "2"), ("I choose 1", "1"),
    ("Verdict: 2\nExplanation: ...", "2"), ("They are equally good, a tie.", "tie"),
    ("Candidate 2 gives the right date.", "2"), ("The answer is 12 apples", None),
    ("Candidate 1 mentions X while Candidate 2 does not", None), ("[[1]] ... no, [[2]]", None),
    ("", None), ("The", None),
])
def test_verdicts_are_read_out_of_prose_or_not_at_all(text, verdict):
    assert parse_verdict(text) == verdict


# -- aggregation -------------------------------------------------------------------------------
def test_aggregation_rules_within_and_across_models():
    chosen_first = Reading("chosen", ["1", "1", "2", None])  # votes: chosen, chosen, rejected, unread
    assert chosen_first.sides() == ["chosen", "chosen", "rejected", None]
    decision = combine_readings([chosen_first])
    assert (decision.prefers, decision.confidence, decision.votes) == ("chosen", 2 / 3, {"chosen": 2, "rejected": 1,
                                                                                      "unsure": 1})
    assert combine_readings([Reading("chosen", ["1", "2"])]).prefers == "unsure"  # no strict plurality
    assert combine_readings([Reading("chosen", [None, None])]).prefers == "unsure"
    # the same verdict shown in the other order agrees (FastChat: both orders must agree)
    assert combine_readings([chosen_first, Reading("rejected", ["2", "2"])]).prefers == "chosen"
    assert combine_readings([chosen_first, Reading("rejected", ["1", "1"])]).prefers == "unsure"
    mean = combine_readings([chosen_first, Reading("rejected", ["1", "1"])], "mean")  # (2/3 + 0) / 2
    assert mean.prefers == "rejected" and mean.p_chosen == pytest.approx(1 / 3) and mean.confidence == pytest.approx(2 / 3)
    assert combine_readings([Reading("chosen", ["tie", "1"])], "mean").p_chosen == 0.75  # a tie counts half
    # across models: strict plurality of the models that decided; mean of P(chosen)
    models = [Decision("chosen", 0.9, {}, 0.9), Decision("rejected", 0.6, {}, 0.4), Decision("chosen", 0.55, {}, 0.55),
              Decision("unsure", None, {}, None)]
    joint = combine_models(models)
    assert (joint.prefers, joint.confidence, joint.votes) == ("chosen", 2 / 3, {"chosen": 2, "rejected": 1, "unsure": 1})
    assert combine_models(models[:2]).prefers == "unsure"
    assert combine_models(models[:2], "mean").prefers == "chosen" and combine_models(models[:2], "mean").p_chosen == 0.65
    with pytest.raises(ValueError, match="aggregate"):
        combine_models(models, "median")


def test_swapping_the_candidates_flips_the_meaning_of_a_logprob_verdict():
    assert Reading.from_probability("chosen", 0.8).p_chosen() == pytest.approx(0.8)
    assert Reading.from_probability("rejected", 0.8).p_chosen() == pytest.approx(0.2)
    records = pairs(40) + pairs(40, good="rejected", prefix="q")
    engine = MarkerJudge(strength=0.8)
    out, counts, _ = judged(records, engine)
    for record in out:
        label = llm_label(record)
        expected = "chosen" if "GOOD" in record["chosen"] else "rejected"
        first = label["order"].removesuffix("-first")
        [reading] = label["meta"]["readings"]
        assert reading["first"] == first
        # P("1") is about whichever reply was shown first; the label is about the pair's sides
        assert reading["p1"] == pytest.approx(0.8 if first == expected else 0.2)
        assert label["prefers"] == expected and label["confidence"] == pytest.approx(0.8)
        assert record["labels"][0] == {"by": "human:ann", "prefers": "chosen"}  # the original label is kept
    assert {label["order"] for r in out for label in r["labels"][1:]} == {"chosen-first", "rejected-first"}
    assert counts["prefers_chosen"] == counts["prefers_rejected"] == 40 and counts["judged"] == 80
    assert engine.calls == 5  # 80 pairs, windows of 16, one read per window


def test_candidate_order_is_balanced_seeded_per_id_and_recorded():
    records = pairs(200)
    engine = MarkerJudge()
    out, _, _ = judged(records, engine)
    swapped = [shows_rejected_first(record["id"]) for record in records]
    assert 0.4 < sum(swapped) / len(swapped) < 0.6
    assert swapped == [shows_rejected_first(record["id"]) for record in records]  # the same on every run
    assert swapped != [shows_rejected_first(record["id"], seed=1) for record in records]
    for record, prompt, rejected_first in zip(out, engine.prompts, swapped, strict=True):
        first, second = shown(prompt)
        assert (first, second) == ((record["rejected"], record["chosen"]) if rejected_first else
                                   (record["chosen"], record["rejected"]))
        assert llm_label(record)["order"] == ("rejected-first" if rejected_first else "chosen-first")


def test_both_orders_expose_a_position_biased_judge():
    records = pairs(20)
    out, counts, task = judged(records, MarkerJudge(bias=0.9), both_orders=True)
    assert all(llm_label(r)["prefers"] == "unsure" and llm_label(r)["order"] == "both" for r in out)
    assert counts["prefers_unsure"] == 20
    [line] = task.report()
    assert "position bias 1.000" in line and "n=40" in line and "position consistency 0.000 (n=20)" in line
    mean, _, _ = judged(records, MarkerJudge(bias=0.9), both_orders=True, aggregate="mean")
    assert all(llm_label(r)["prefers"] == "tie" and llm_label(r)["meta"]["p_chosen"] == 0.5 for r in mean)
    fair, _, fair_task = judged(records, MarkerJudge(strength=0.7), both_orders=True)
    assert all(llm_label(r)["prefers"] == "chosen" for r in fair)
    assert "position bias 0.500" in fair_task.report()[0] and "position consistency 1.000" in fair_task.report()[0]


def test_self_consistency_votes_retry_once_then_keep_the_raw_text():
    records = pairs(2)
    first_shown = ["rejected" if shows_rejected_first(r["id"]) else "chosen" for r in records]

    def says(side: str, first: str) -> str:
        return "1" if side == first else "2"

    # pair 0: three readable votes for chosen, one for rejected; pair 1: two for rejected and two unreadable
    texts = [f"Candidate {says('chosen', first_shown[0])} is better.", f"[[{says('chosen', first_shown[0])}]]",
             says("rejected", first_shown[0]), f"Verdict: {says('chosen', first_shown[0])}",
             says("rejected", first_shown[1]), "I cannot decide.", says("rejected", first_shown[1]), "hmm",
             says("rejected", first_shown[1]), "still no idea"]  # the two retries: one read, one not
    engine = MarkerJudge(texts=texts)
    out, counts, _ = judged(records, engine, mode="generate", votes=4)
    zero, one = llm_label(out[0]), llm_label(out[1])
    assert (zero["prefers"], zero["votes"], zero["confidence"]) == ("chosen", {"chosen": 3, "rejected": 1}, 0.75)
    assert one["prefers"] == "rejected" and one["votes"] == {"rejected": 3, "unsure": 1}
    assert one["meta"]["retried"] == 2 and one["meta"]["raw"] == [{"answer": "hmm", "retry": "still no idea"}]
    retry_prompt = engine.prompts[-1]
    assert [m["role"] for m in retry_prompt] == ["user", "assistant", "user"] and retry_prompt[1]["content"] == "hmm"
    assert counts["retried_votes"] == 2 and counts["unread_votes"] == 1 and not engine.texts


def test_several_judges_get_their_own_labels_and_a_joint_one():
    records = pairs(10)
    judges = [Caller("a", MarkerJudge(0.9)), Caller("b", MarkerJudge(0.2)), Caller("c", MarkerJudge(0.6))]
    counts: Counter[str] = Counter()
    out = list(judge_records(records, judges, counts=counts))
    for record in out:
        assert [label["by"] for label in record["labels"]] == ["human:ann", "llm:a", "llm:b", "llm:c", "llm:a+b+c"]
        assert [label["prefers"] for label in record["labels"][1:]] == ["chosen", "rejected", "chosen", "chosen"]
        joint = record["labels"][-1]
        assert joint["confidence"] == pytest.approx(2 / 3) and joint["meta"]["judges"] == ["llm:a", "llm:b", "llm:c"]
    assert counts["prefers_chosen"] == 10
    mean = list(judge_records(records, judges[:2], aggregate="mean"))  # (0.9 + 0.2) / 2
    assert all(r["labels"][-1]["prefers"] == "chosen" and r["labels"][-1]["meta"]["p_chosen"] == 0.55 for r in mean)


class FlakyJudge(MarkerJudge):
    """Fails the prompts of pairs whose id ends in 3 the way the openai engine does (raises after the
    other prompts, with their results), and raises ValueError for prompts containing TOO-LONG."""

    def candidate_logprobs(self, prompts, candidates):
        if any("TOO-LONG" in last_user(p) for p in prompts):
            raise ValueError("prompt longer than the context")
        results = super().candidate_logprobs(prompts, candidates)
        failures = {i: "HTTP 500 after 7 attempts" for i, p in enumerate(prompts) if "question 3\n" in last_user(p)}
        if failures:
            error = RuntimeError("some prompts failed")
            error.results, error.failures = [None if i in failures else r for i, r in enumerate(results)], failures
            raise error
        return results


def test_every_record_comes_out_with_a_label_or_a_recorded_failure():
    records = pairs(12)
    records[5]["chosen"] += " TOO-LONG"
    records.insert(7, {"id": "prompt-only", "conversation": [{"role": "user", "content": "hi"}], "source": "test"})
    out, counts, _ = judged(records, FlakyJudge())
    assert [r["id"] for r in out] == [r["id"] for r in records]
    assert out[7] == records[7] and counts["skipped_not_a_pair"] == 1
    failed = {r["id"]: llm_label(r)["meta"]["failure"] for r in out if "labels" in r and "failure" in llm_label(r)["meta"]}
    assert failed == {"p0003": "HTTP 500 after 7 attempts", "p0005": "ValueError: prompt longer than the context"}
    assert all(llm_label(out[i])["prefers"] == "unsure" for i in (3, 5))
    assert all(len([x for x in r["labels"] if x["by"] == "llm:m"]) == 1 for r in out if r["id"] != "prompt-only")
    assert counts["failed_engine"] == 2 and counts["judged"] == 12 and counts["prefers_chosen"] == 10


def test_an_engine_error_that_is_not_a_prompts_stops_the_run():
    class Down(MarkerJudge):
        def candidate_logprobs(self, prompts, candidates):
            raise RuntimeError("HTTP 401: bad key")

    with pytest.raises(RuntimeError, match="401"):
        judged(pairs(2), Down())


# -- examples ----------------------------------------------------------------------------------
def test_examples_are_shown_with_their_human_verdict_in_their_own_order(tmp_path):
    examples = pairs(6, prefix="gold")
    examples[1]["labels"] = [{"by": "human:ann", "prefers": "rejected"}]
    examples[2]["labels"] = [{"by": "human:ann", "prefers": "unsure"}]  # unusable
    [target] = pairs(1)
    path = tmp_path / "gold.jsonl"  # the target itself is in the stream too: it must not be its own example
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [*examples, target]))
    target["extra"] = {"examples": ["gold0000", "gold0001", "gold0002", "missing", target["id"], "gold0004"]}
    plain = pairs(1, prefix="plain")[0]
    engine = MarkerJudge()
    counts: Counter[str] = Counter()
    out = list(judge_records([target, plain], [Caller("m", engine)], examples=[str(path)], counts=counts,
                             max_examples=2))
    prompt = engine.prompts[0][0]["content"]
    blocks = re.findall(r"Example (\d)\n.*?Candidate 1:\n(.*?)\n\nCandidate 2:\n(.*?)\n\nBetter: (.*?)\n", prompt, re.S)
    assert [b[0] for b in blocks] == ["1", "2"]
    for (_, first, second, verdict), example in zip(blocks, examples[:2], strict=True):
        preferred = example["chosen"] if example is examples[0] else example["rejected"]
        assert {first, second} == {example["chosen"], example["rejected"]}
        assert verdict == ("Candidate 1" if first == preferred else "Candidate 2")
    meta = llm_label(out[0])["meta"]
    assert meta["examples"] == 2 and "Example 1" not in engine.prompts[1][0]["content"]
    assert "examples_missing" not in meta  # the two wanted were found before the limit was reached
    assert counts["examples_used"] == 2
    with_gaps = list(judge_records([target], [Caller("m", MarkerJudge())], examples=[str(path)]))
    gap_meta = llm_label(with_gaps[0])["meta"]
    assert gap_meta["examples"] == 3 and gap_meta["examples_missing"] == 3  # unsure, unknown id, the pair itself


# -- templates ---------------------------------------------------------------------------------
def test_a_replacement_template_is_checked_and_its_digest_recorded(tmp_path):
    builtin = PromptTemplate.load("judge")
    custom = tmp_path / "judge.txt"
    text = (resources.files("synpref.annotate") / "templates" / "judge.txt").read_text(encoding="utf-8")
    custom.write_text(text.replace("expert", "careful"))
    engine = MarkerJudge()
    out = list(judge_records(pairs(2), [Caller("m", engine)], template=str(custom)))
    assert "careful annotator" in engine.prompts[0][0]["content"]
    assert llm_label(out[0])["template"] == PromptTemplate.load("judge", str(custom)).digest != builtin.digest
    (tmp_path / "typo.txt").write_text(custom.read_text().replace("$conversation", "$convresation", 1))
    with pytest.raises(ValueError, match=r"unknown placeholder \$convresation in the body"):
        PromptTemplate.load("judge", str(tmp_path / "typo.txt"))
    (tmp_path / "short.txt").write_text("Judge: $candidate_1 vs $candidate_2")
    with pytest.raises(ValueError, match="missing guideline, example, retry"):
        PromptTemplate.load("judge", str(tmp_path / "short.txt"))


def test_cli_names_the_flag_of_a_bad_template_or_option(runner, tmp_path, examples):
    (tmp_path / "bad.txt").write_text("$nope")
    source = str(examples / "llmbar.jsonl.zst")
    result = runner.invoke(cli, ["annotate", "judge", "-m", "x", "--template", str(tmp_path / "bad.txt"), source])
    assert result.exit_code == 2 and "--template" in result.output and "missing" in result.output
    result = runner.invoke(cli, ["annotate", "judge", "-m", "x", "--votes", "3", source])
    assert result.exit_code == 2 and "--votes > 1 needs --mode generate" in result.output
    result = runner.invoke(cli, ["annotate", "judge", "-m", "x", "--engine", "openai", source])
    assert result.exit_code == 2 and "--base-url" in result.output
    result = runner.invoke(cli, ["annotate", "verify", "-m", str(tmp_path / "no-model"), source])
    assert result.exit_code == 1 and "does not exist" in result.output


# -- verify and attributes ---------------------------------------------------------------------
def test_verify_derives_the_pair_label_from_each_reply_alone():
    sure = {"correct": 0.9, "incorrect": 0.05, "unsure": 0.05}
    wrong = {"correct": 0.2, "incorrect": 0.7, "unsure": 0.1}
    unknown = {"correct": 0.3, "incorrect": 0.3, "unsure": 0.4}
    assert pair_label(sure, wrong) == ("chosen", pytest.approx(0.63))
    assert pair_label(wrong, sure) == ("rejected", pytest.approx(0.63))
    assert pair_label(sure, sure) == ("tie", pytest.approx(0.81))
    assert pair_label(wrong, wrong)[0] == pair_label(sure, unknown)[0] == "unsure"

    class Checker:
        """Yes for replies containing GOOD, No otherwise; records prompts."""

        def __init__(self):
            self.prompts = []

        def candidate_logprobs(self, prompts, candidates):
            assert list(candidates) == ["Yes", "No", "Unknown"]
            self.prompts += prompts
            good = [math.log(0.8), math.log(0.15), math.log(0.05)]
            return [good if "GOOD" in last_user(p).split("Reply to check:")[1] else good[1::-1] + good[2:] for p in prompts]

    records = pairs(4) + pairs(2, good="rejected", prefix="r")
    for index, record in enumerate(records):
        record["attributes"] = {"objectivity": "objective" if index != 1 else "subjective"}
    del records[2]["attributes"]
    checker = Checker()
    counts: Counter[str] = Counter()
    out = list(verify_records(records, Caller("m", checker), counts=counts))
    assert len(checker.prompts) == 8  # two replies of each of the 4 objective pairs, each on its own
    assert all("Conversation:" in last_user(p) and ("chosen reply" in last_user(p)) != ("rejected reply" in last_user(p))
               for p in checker.prompts)
    assert out[1] == records[1] and out[2] == records[2]
    labels = {r["id"]: r["labels"][-1] for r in out if r["labels"][-1]["by"] == "llm:m:verify"}
    assert {k: v["prefers"] for k, v in labels.items()} == {"p0000": "chosen", "p0003": "chosen", "r0000": "rejected",
                                                           "r0001": "rejected"}
    assert labels["p0000"]["confidence"] == pytest.approx(0.8 * 0.8)
    assert labels["p0000"]["meta"]["chosen"]["verdict"] == "correct"
    assert counts == Counter({"verified": 4, "prefers_chosen": 2, "prefers_rejected": 2, "skipped_not_objective": 1,
                              "skipped_no_objectivity": 1, "chosen_correct": 2, "chosen_incorrect": 2,
                              "rejected_correct": 2, "rejected_incorrect": 2})


def test_attributes_read_closed_sets_generate_free_text_and_record_failures():
    class Annotator:
        """Letter C (math, if the options are task categories) for closed sets; scripted free text."""

        def __init__(self, texts):
            self.texts, self.reads = texts, []

        def candidate_logprobs(self, prompts, candidates):
            self.reads.append(len(prompts))
            return [[0.0 if c == "B" else -5.0 for c in candidates] for _ in prompts]

        def generate(self, prompts, n=1, max_tokens=256, temperature=0.0, stop=(), seed=0):
            return [[self.texts.pop(0)] for _ in prompts]

    records = [{"id": f"a{i}", "conversation": [{"role": "user", "content": f"What is {i} + {i}?"}], "chosen": "x",
                "rejected": "y"} for i in range(3)]
    records[2]["attributes"] = {"task_category": "coding", "extra_key": 1}
    records.append({"id": "empty", "conversation": [], "chosen": "x", "rejected": "y"})
    texts = ["Correct, concise and Clear.", "- accurate; 1. brief", "", "!!!",  # desired: two fine, one retried and lost
             "Prefer the reply with the right sum.", "ok", "Prefer the reply that states the sum plainly.",
             "Choose the correct answer over the wrong one."]  # guidelines: record 1 retried
    engine = Annotator(texts)
    counts: Counter[str] = Counter()
    out = list(attribute_records(records, Caller("m", engine), counts=counts))
    assert engine.reads == [8] and not texts  # 3 + 3 + 2 closed-set fields in one call, every text used
    first = out[0]["attributes"]
    assert first == {"task_category": "math", "objectivity": "subjective", "controversiality": "medium",
                     "desired_attributes": ["correct", "concise", "clear"],
                     "guideline": "Prefer the reply with the right sum."}
    assert attribute_problems(first) == {} and out[0]["attributes_meta"]["p"]["task_category"] > 0.9
    assert out[1]["attributes"]["desired_attributes"] == ["accurate", "brief"]
    assert out[1]["attributes_meta"]["retried"] == ["guideline"]
    third = out[2]
    assert third["attributes"]["task_category"] == "coding" and third["attributes"]["extra_key"] == 1
    assert "desired_attributes" not in third["attributes"] and third["attributes_meta"]["failed"] == {
        "desired_attributes": "!!!"}
    assert out[3] == records[3]
    assert counts == Counter({"annotated": 3, "complete": 2, "failed_desired_attributes": 1,
                              "retried_desired_attributes": 1, "retried_guideline": 1, "skipped_no_conversation": 1})
    assert parse_desired("Qualities: safe, honest, and non-judgmental") == ["safe", "honest", "non-judgmental"]
    assert parse_guideline('"Prefer the correct sum. The reply that shows its') == "Prefer the correct sum."
    assert parse_guideline("Prefer the correct sum") == "Prefer the correct sum" and parse_guideline("Be nice.") == ""
    assert set(CLOSED["objectivity"]) == {"objective", "subjective"}


# -- resume ------------------------------------------------------------------------------------
class Killed(BaseException):
    """A kill in the middle of a run (SIGKILL leaves no chance to clean up either)."""


class DiesAfter(MarkerJudge):
    def __init__(self, calls: int | None):
        super().__init__()
        self.limit = calls

    def candidate_logprobs(self, prompts, candidates):
        if self.limit is not None and self.calls >= self.limit:
            raise Killed
        return super().candidate_logprobs(prompts, candidates)


def run_judge_stage(source: Path, output: Path, engine) -> tuple[list[dict], Counter[str]]:
    stage = Stage("annotate judge", StageOptions(inputs=[str(source)], output=str(output)))
    task = PairJudge([Caller("m", engine)], PromptTemplate.load("judge"), JudgeOptions())
    with stage:
        sidecar = annotate_stage(stage, task, window=8, meter=Meter())
    if sidecar:
        Path(sidecar).unlink()
    return list(read_json_records(str(output))), stage.counts


def test_a_killed_run_resumes_from_its_last_window_and_equals_an_uninterrupted_one(tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in pairs(30)))
    whole, _ = run_judge_stage(source, tmp_path / "whole.jsonl", MarkerJudge())
    output = tmp_path / "out.jsonl"
    with pytest.raises(Killed):
        run_judge_stage(source, output, DiesAfter(2))
    sidecar = Path(resume_path(str(output)))
    assert not output.exists() and sidecar.read_bytes().count(b"\n") == 16
    with sidecar.open("ab") as handle:
        handle.write(b'{"id": "p00')  # torn in the middle of a write
    engine = DiesAfter(None)
    resumed, counts = run_judge_stage(source, output, engine)
    assert resumed == whole and not sidecar.exists()
    assert engine.calls == 2 and counts["resumed"] == 16 and counts["judged"] == 30 and counts["prefers_chosen"] == 30


# -- the torch engine's shared heads -----------------------------------------------------------
def test_shared_heads_group_rows_where_a_common_head_saves_tokens():
    head = list(range(100))
    rows = [head + [1000 + i, 7] for i in range(3)] + [list(range(200, 240))] + [head[:50] + [5] * 300]
    groups = shared_heads(rows)
    assert sorted((h, sorted(m)) for h, m in groups) == [(0, [3]), (0, [4]), (100, [0, 1, 2])]
    # a long tail beside short ones would cost more padded tokens than the shared head saves
    assert all(h == 0 for h, _ in shared_heads([head + [1], head[:40] + [2] * 400]))
    assert shared_heads([head, head, head]) == [(99, [0, 1, 2])]  # identical rows keep one token each


# -- the real model ----------------------------------------------------------------------------
def shortest_pairs(path: Path, count: int, where=lambda r: True) -> list[dict]:
    records = [r for r in read_json_records(str(path)) if where(r) and r["chosen"].strip() and r["rejected"].strip()]
    size = lambda r: len(r["conversation"][-1]["content"]) + len(r["chosen"]) + len(r["rejected"])  # noqa: E731
    return sorted(records, key=size)[:count]


@pytest.fixture(scope="module")
def real_pairs() -> list[dict]:
    """8 LLMBar Natural and 8 PandaLM test pairs, the shortest of each (CPU time)."""
    natural = shortest_pairs(EXAMPLES / "llmbar.jsonl.zst", 8, lambda r: r["extra"].get("subset") == "LLMBar/Natural")
    return natural + shortest_pairs(EXAMPLES / "pandalm-test.jsonl.zst", 8)


@pytest.fixture(scope="module")
def engine(smollm2_lm):
    from synpref.engines.torch_generate import TorchGenerationEngine

    return TorchGenerationEngine(str(smollm2_lm), device="cpu")


@pytest.mark.slow
def test_shared_heads_read_and_generate_as_the_plain_path(engine, monkeypatch):
    conversation = "Rate these two short answers to the question: what is the boiling point of water at sea level?"
    prompts = [[{"role": "user", "content": f"{conversation} Answer {i}: {90 + i * 5} degrees Celsius. Reply 1 or 2."}]
               for i in range(3)]
    encoded = [engine.encode(p) for p in prompts]
    [(head, members)] = shared_heads(encoded)  # one group: the common question
    assert sorted(members) == [0, 1, 2] and head > 40 and all(ids[:head] == encoded[0][:head] for ids in encoded)
    shared = engine.candidate_logprobs(prompts, ["1", "2"])
    greedy = engine.generate(prompts, max_tokens=3)
    sampled = engine.generate(prompts[:1], n=3, max_tokens=3, temperature=1.0, seed=5)
    monkeypatch.setattr(engine, "min_shared_head", 10**9)
    plain = engine.candidate_logprobs(prompts, ["1", "2"])
    for row, expected in zip(shared, plain, strict=True):
        assert row == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert engine.generate(prompts, max_tokens=3) == greedy
    assert engine.generate(prompts[:1], n=3, max_tokens=3, temperature=1.0, seed=5) == sampled


@pytest.mark.slow
def test_real_judge_labels_every_real_pair_through_the_cli(runner, smollm2_lm, engine, real_pairs, tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in real_pairs))
    output = tmp_path / "judged.jsonl.zst"
    result = runner.invoke(cli, ["annotate", "judge", "-m", f"smollm2={smollm2_lm}", str(source), "-o", str(output),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = list(read_json_records(str(output)))
    assert [r["id"] for r in out] == [r["id"] for r in real_pairs]
    for record in out:
        label = llm_label(record, "llm:smollm2")
        assert label["prefers"] in ("chosen", "rejected") and 0.5 <= label["confidence"] < 1
        assert label["order"] == ("rejected-first" if shows_rejected_first(record["id"]) else "chosen-first")
    assert "judged 16" in result.output and "position bias" in result.output
    # the label's P("1") is the engine's own reading of that prompt
    task = PairJudge([Caller("smollm2", engine)], PromptTemplate.load("judge"), JudgeOptions())
    one, two = engine.candidate_logprobs([task._show(0, real_pairs[3]).prompts[0]], ["1", "2"])[0]
    p1 = llm_label(out[3], "llm:smollm2")["meta"]["readings"][0]["p1"]
    assert p1 == pytest.approx(1 / (1 + math.exp(two - one)), abs=1e-4)


@pytest.mark.slow
def test_real_generate_mode_reads_or_records_every_answer(engine, real_pairs):
    counts: Counter[str] = Counter()
    out = list(judge_records(real_pairs[8:10], [Caller("smollm2", engine)], mode="generate", max_tokens=3,
                             counts=counts))
    for record in out:
        label = llm_label(record, "llm:smollm2")
        votes = sum(label["votes"].values())
        assert votes == 1 and label["prefers"] in ("chosen", "rejected", "tie", "unsure")
        assert (label["votes"].get("unsure", 0) == 1) == ("raw" in label["meta"])  # unread: its text kept
    assert counts["judged"] == 2


@pytest.mark.slow
def test_real_attributes_and_verify_fill_the_schema_or_record_why(engine, real_pairs):
    counts: Counter[str] = Counter()
    out = list(attribute_records(real_pairs[8:10], Caller("smollm2", engine), max_tokens=4, counts=counts))
    for record in out:
        attributes, meta = record["attributes"], record["attributes_meta"]
        for field, allowed in CLOSED.items():
            assert attributes[field] in allowed and 0 < meta["p"][field] <= 1
        for field in ("desired_attributes", "guideline"):
            assert (field in attributes) != (field in meta.get("failed", {}))
        assert set(attribute_problems(attributes)) == set(meta.get("failed", {}))
    assert counts["annotated"] == 2
    verified = list(verify_records(out, Caller("smollm2", engine), every_pair=True))
    for record in verified:
        label = record["labels"][-1]
        assert label["by"] == "llm:smollm2:verify" and label["prefers"] in ("chosen", "rejected", "tie", "unsure")
        assert sum(label["meta"]["chosen"]["p"].values()) == pytest.approx(1, abs=1e-5)


@pytest.mark.slow
def test_a_malformed_line_stops_the_run_naming_file_and_line(runner, smollm2_lm, real_pairs, tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text(orjson.dumps(real_pairs[0]).decode() + '\n{"id": "broken", \n')
    output = tmp_path / "out.jsonl.zst"
    result = runner.invoke(cli, ["annotate", "verify", "-m", str(smollm2_lm), str(source), "-o", str(output)])
    assert result.exit_code == 1 and f"{source}:2: malformed JSON" in result.output
    assert not output.exists()
