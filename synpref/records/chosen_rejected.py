"""Layouts whose rows already hold `chosen` and `rejected`: canonical records, HH-RLHF transcripts,
prompt/chosen/rejected strings (RewardBench), message lists (TRL / Skywork), and the benchmark rows with
several replies a side (RM-Bench's 3x3 styles, RewardBench 2's best-of-N), which expand to pairs."""

from __future__ import annotations

from typing import Any

from synpref.records.core import (
    HH_TURN,
    Expansion,
    Record,
    RecordError,
    check_messages,
    check_reply,
    check_text,
    label,
    pair_from_histories,
    pair_record,
    parse_hh_transcript,
    rest,
    source_extra,
)


def _with_layout(record: Record, layout: str) -> Record:
    """Mark a record converted by a chosen/rejected layout (these keep the row's other fields at the top
    level, as they always have); the row's own `extra` is kept."""
    own = record.get("extra")
    extra = dict(own) if isinstance(own, dict) else ({} if own is None else {"extra": own})
    extra["layout"] = layout
    record["extra"] = extra
    return record


def from_canonical(row: Record, options: Any = None) -> Record:
    check_messages(row["conversation"], "conversation")
    if "chosen" in row and "rejected" in row:
        check_reply(row["chosen"], "chosen")
        check_reply(row["rejected"], "rejected")
    return row


def from_hh_transcripts(row: Record, options: Any = None) -> Record:
    check_reply(row["chosen"], "chosen")
    if not HH_TURN.match(row["chosen"]):
        raise RecordError(
            "chosen is a plain string but there is no prompt (and it is not an HH-RLHF transcript)", "prompt"
        )
    history, chosen, rejected = pair_from_histories(
        parse_hh_transcript(row["chosen"], "chosen"), parse_hh_transcript(row["rejected"], "rejected")
    )
    record = {"conversation": history, "chosen": chosen, "rejected": rejected, **rest(row, ("chosen", "rejected"))}
    return _with_layout(record, "hh-rlhf")


def from_message_lists(row: Record, options: Any = None) -> Record:
    """Skywork / TRL conversational rows: chosen and rejected are whole conversations, or an
    explicit `prompt` list plus reply lists."""
    chosen_messages = check_messages(row["chosen"], "chosen")
    rejected_messages = check_messages(row["rejected"], "rejected")
    consumed: tuple[str, ...] = ("chosen", "rejected")
    if isinstance(row.get("prompt"), list):
        prompt = check_messages(row["prompt"], "prompt")
        chosen_messages, rejected_messages = prompt + chosen_messages, prompt + rejected_messages
        consumed += ("prompt",)
    history, chosen, rejected = pair_from_histories(chosen_messages, rejected_messages)
    record = {"conversation": history, "chosen": chosen, "rejected": rejected, **rest(row, consumed)}
    return _with_layout(record, "message-lists")


def from_prompt_strings(row: Record, options: Any = None) -> Record:
    """prompt/chosen/rejected strings; RewardBench rows add `subset`, which becomes the source."""
    prompt = row["prompt"]
    if not isinstance(prompt, str):
        raise RecordError(f"expected a string prompt, got {type(prompt).__name__}", "prompt")
    record = {
        "conversation": [{"role": "user", "content": prompt}],
        "chosen": check_reply(row["chosen"], "chosen"),
        "rejected": check_reply(row["rejected"], "rejected"),
        **rest(row, ("prompt", "chosen", "rejected")),
    }
    if "subset" in row and "source" not in row:
        record["source"] = f"rewardbench/{row['subset']}"
    return _with_layout(record, "prompt-chosen-rejected")


def _replies(value: Any, field: str, count: int | None = None) -> list[str]:
    if type(value) is not list or not value:
        raise RecordError(f"expected a non-empty list of replies, got {type(value).__name__}", field)
    for index, reply in enumerate(value):
        check_text(reply, f"{field}[{index}]", "a string reply")
    if count is not None and len(value) != count:
        raise RecordError(f"expected {count} replies, got {len(value)}", field)
    return value


def _prompt(row: Record) -> list[dict[str, str]]:
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        return check_messages(prompt, "prompt")
    return [{"role": "user", "content": check_text(prompt, "prompt", "a string prompt")}]


RM_BENCH_STYLES = ("concise", "detailed", "markdown")
RM_BENCH_TEXT = frozenset(("prompt", "chosen", "rejected"))


def rm_bench_cell(chosen_style: int, rejected_style: int) -> str:
    """RM-Bench's accuracy the cell counts toward: hard when the chosen reply is plainer (upper
    triangle), normal on the diagonal, easy below it."""
    if chosen_style < rejected_style:
        return "hard"
    return "normal" if chosen_style == rejected_style else "easy"


def from_rm_bench(row: Record, options: Any = None) -> Expansion:
    """RM-Bench (THU-KEG/RM-Bench): id, prompt, chosen[3], rejected[3] in style order concise, detailed
    plain, detailed markdown, domain: the 9 pairs chosen[i] vs rejected[j], styles recorded."""
    conversation = _prompt(row)
    chosen = _replies(row["chosen"], "chosen", 3)
    rejected = _replies(row["rejected"], "rejected", 3)
    domain = row.get("domain")
    source = f"rm-bench/{domain}" if isinstance(domain, str) and domain else "rm-bench"
    base = row.get("id")
    records = []
    for i, chosen_text in enumerate(chosen):
        for j, rejected_text in enumerate(rejected):
            extra = source_extra(row, RM_BENCH_TEXT, "rm-bench")
            extra.update(chosen_index=i, rejected_index=j, chosen_style=RM_BENCH_STYLES[i],
                         rejected_style=RM_BENCH_STYLES[j], rm_bench_cell=rm_bench_cell(i, j))
            records.append(pair_record(
                [dict(m) for m in conversation], chosen_text, rejected_text, source=source,
                labels=[label("benchmark:rm-bench", cell=rm_bench_cell(i, j))], extra=extra,
                record_id=None if base is None else f"rm-bench/{base}:c{i}-r{j}"))
    return Expansion(records, "rm-bench")


RB2_TEXT = frozenset(("prompt", "chosen", "rejected"))


def from_rewardbench2(row: Record, options: Any = None) -> Expansion:
    """RewardBench 2 (allenai/reward-bench-2): id, prompt, chosen (list), rejected (list), num_correct,
    subset: every chosen reply against every rejected one, their positions recorded."""
    conversation = _prompt(row)
    chosen = _replies(row["chosen"], "chosen")
    rejected = _replies(row["rejected"], "rejected")
    num_correct = row["num_correct"]
    if type(num_correct) is not int or num_correct != len(chosen):
        raise RecordError(f"num_correct {num_correct!r} does not match the {len(chosen)} chosen replies",
                          "num_correct")
    subset = row.get("subset")
    source = f"rewardbench-2/{subset}" if isinstance(subset, str) and subset else "rewardbench-2"
    models = row.get("models")
    named = isinstance(models, list) and len(models) == len(chosen) + len(rejected)
    base = row.get("id")
    records = []
    for i, chosen_text in enumerate(chosen):
        for j, rejected_text in enumerate(rejected):
            extra = source_extra(row, RB2_TEXT, "rewardbench-2")
            extra.update(chosen_index=i, rejected_index=j)
            if named:
                extra.update(chosen_model=models[i], rejected_model=models[len(chosen) + j])
            records.append(pair_record(
                [dict(m) for m in conversation], chosen_text, rejected_text, source=source,
                labels=[label("benchmark:rewardbench-2")], extra=extra,
                record_id=None if base is None else f"rewardbench-2/{base}:c{i}-r{j}"))
    return Expansion(records, "rewardbench-2")
