"""Two-reply public preference sets, read as published: Stanford SHP, PKU-SafeRLHF, Chatbot Arena /
Arena-Human-Preference, HelpSteer2/3 preference, and OpenAI's preference fine-tuning JSONL.

Each keeps the source's ids and label fields in `extra` (everything but the texts it moved into the
record), writes one `labels` entry saying who gave the preference, and names a `source`."""

from __future__ import annotations

import re
from typing import Any

import orjson

from synpref.records.core import (
    Message,
    Record,
    RecordError,
    check_messages,
    check_text,
    diverted,
    first_difference,
    label,
    pair_record,
    source_extra,
    split_final_reply,
)

# -- Stanford SHP ------------------------------------------------------------------------------------
SHP_TEXT = frozenset(("history", "human_ref_A", "human_ref_B"))


def from_shp(row: Record, options: Any = None) -> Record:
    """stanfordnlp/SHP (and SHP-2): `labels` is 1 when human_ref_A is preferred (more upvotes,
    written later), 0 when human_ref_B is."""
    history = check_text(row["history"], "history", "the post as a string")
    reply_a = check_text(row["human_ref_A"], "human_ref_A", "a string reply")
    reply_b = check_text(row["human_ref_B"], "human_ref_B", "a string reply")
    preferred = row.get("labels")
    if preferred not in (0, 1) or type(preferred) is bool:
        raise RecordError(f"labels must be 1 (A preferred) or 0 (B preferred), got {preferred!r}", "labels")
    chosen, rejected = (reply_a, reply_b) if preferred == 1 else (reply_b, reply_a)
    extra = source_extra(row, SHP_TEXT, "shp")
    extra["chosen_ref"] = "A" if preferred == 1 else "B"
    domain = row.get("domain")
    post, ref_a, ref_b = row.get("post_id"), row.get("c_root_id_A"), row.get("c_root_id_B")
    record_id = f"shp/{post}/{ref_a}/{ref_b}" if post is not None and ref_a is not None and ref_b is not None else None
    meta = {key: row[key] for key in ("score_A", "score_B", "score_ratio") if key in row}
    return pair_record([{"role": "user", "content": history}], chosen, rejected,
                       source=f"shp/{domain}" if isinstance(domain, str) and domain else "shp",
                       labels=[label("human:shp-upvotes", **meta)], extra=extra, record_id=record_id)


# -- PKU-SafeRLHF ------------------------------------------------------------------------------------
PKU_TEXT = frozenset(("prompt", "response_0", "response_1"))


def from_pku_saferlhf(row: Record, options: Any = None) -> Record:
    """PKU-Alignment/PKU-SafeRLHF: one pair per row on the axis `--axis` picks, `better_response_id`
    (helpfulness) or `safer_response_id` (harmlessness)."""
    axis = getattr(options, "axis", "better")
    prompt = check_text(row["prompt"], "prompt", "a string prompt")
    replies = [check_text(row["response_0"], "response_0", "a string reply"),
               check_text(row["response_1"], "response_1", "a string reply")]
    field = f"{axis}_response_id"
    winner = row.get(field)
    if winner not in (0, 1) or type(winner) is bool:
        raise RecordError(f"{field} must be 0 or 1 (the preferred response on the {axis} axis), got {winner!r}",
                          field)
    extra = source_extra(row, PKU_TEXT, "pku-saferlhf")
    extra.update(axis=axis, chosen_response_id=winner)
    return pair_record([{"role": "user", "content": prompt}], replies[winner], replies[1 - winner],
                       source=f"pku-saferlhf/{axis}", labels=[label("human:pku-saferlhf", axis=axis)], extra=extra)


# -- Chatbot Arena -----------------------------------------------------------------------------------
ARENA_TEXT = frozenset(("conversation_a", "conversation_b"))
ARENA_TIES = ("tie", "tie (bothbad)", "both_bad")


def flatten_content(content: Any, field: str) -> str:
    """Message content as one string: a string, or a list of text parts ({type: text, text}) as the
    newer chat formats write it; other parts (images, audio) cannot be scored as text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text", None) \
                    and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RecordError(f"only text content can be read, got a {kind!r} part", f"{field}[{index}]")
        return "".join(texts)
    raise RecordError(f"content must be a string or a list of text parts, got {type(content).__name__}", field)


def chat_messages(value: Any, field: str) -> list[Message]:
    """A message list as chat exports write it: a list (or its JSON text) of {role, content} where
    content may be text parts; extra keys (num_tokens, name) are dropped."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RecordError("expected a list of messages (or its JSON text)", field) from None
    if type(value) is not list:
        raise RecordError(f"expected a list of messages, got {type(value).__name__}", field)
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise RecordError(f"expected a message object, got {type(message).__name__}", f"{field}[{index}]")
        messages.append({"role": message.get("role"),
                         "content": flatten_content(message.get("content"), f"{field}[{index}].content")})
    return check_messages(messages, field)


def _arena_judge(judge: Any) -> str:
    """Who voted: the Arena's users (also MT-Bench's human judges), or GPT-4 in MT-Bench's gpt4_pair split."""
    name = str(judge or "").lower()
    return "llm:gpt-4" if name.startswith(("gpt4", "gpt-4")) else "human:arena"


def from_chatbot_arena(row: Record, options: Any = None) -> Record:
    """lmsys/chatbot_arena_conversations, lmarena-ai/arena-human-preference-100k/140k (and MT-Bench human
    judgments): two whole conversations and the vote. A tie is kept with a `tie` label or, with
    `--ties drop`, diverted; rows whose earlier turns differ (each model saw its own previous answers)
    are diverted: they are not one pair."""
    ties = getattr(options, "ties", "keep")
    side_a, reply_a = split_final_reply(chat_messages(row["conversation_a"], "conversation_a"), "conversation_a")
    side_b, reply_b = split_final_reply(chat_messages(row["conversation_b"], "conversation_b"), "conversation_b")
    winner = row["winner"]
    if winner not in ("model_a", "model_b", *ARENA_TIES):
        raise RecordError(f"winner must be model_a, model_b, tie or tie (bothbad), got {winner!r}", "winner")
    if first_difference(side_a, side_b) is not None:
        return diverted("chatbot-arena", "histories_differ")
    tie = winner in ARENA_TIES
    if tie and ties == "drop":
        return diverted("chatbot-arena", "tie")
    a_wins = winner != "model_b"
    extra = source_extra(row, ARENA_TEXT, "chatbot-arena")
    models = (row.get("model_a"), row.get("model_b"))
    extra.update(chosen_model=models[0] if a_wins else models[1], rejected_model=models[1] if a_wins else models[0])
    question = row.get("question_id")
    return pair_record(side_a, reply_a if a_wins else reply_b, reply_b if a_wins else reply_a,
                       source="chatbot-arena",
                       labels=[label(_arena_judge(row.get("judge")), "tie" if tie else "chosen", winner=winner)],
                       extra=extra, record_id=None if question is None else f"arena/{question}")


# -- HelpSteer2 / HelpSteer3 preference --------------------------------------------------------------
HS2_TURN = re.compile(r"<extra_id_1>(User|Assistant)\n?")
HELPSTEER_TEXT = frozenset(("prompt", "context", "response1", "response2", "response_1", "response_2"))


def helpsteer2_prompt(text: str) -> list[Message]:
    """HelpSteer2 writes earlier turns into `prompt` behind <extra_id_1>Assistant / <extra_id_1>User."""
    pieces = HS2_TURN.split(text)
    messages = [{"role": "user", "content": pieces[0]}]
    for speaker, content in zip(pieces[1::2], pieces[2::2], strict=True):
        messages.append({"role": "user" if speaker == "User" else "assistant", "content": content})
    return messages


def _one_of(row: Record, names: tuple[str, ...]) -> str:
    for name in names:
        if name in row:
            return name
    raise RecordError(f"missing (expected one of {', '.join(names)})", names[0])


def from_helpsteer(row: Record, options: Any = None) -> Record:
    """nvidia/HelpSteer3 `preference` (context, response1, response2, overall_preference) and nvidia/HelpSteer2
    `preference/preference.jsonl` (prompt, response_1, response_2, preference_strength): the score runs
    from -3 (response 1 much better) to 3 (response 2 much better); 0 is a tie."""
    ties = getattr(options, "ties", "keep")
    if "context" in row:
        conversation = chat_messages(row["context"], "context") if not isinstance(row["context"], str) \
            else [{"role": "user", "content": row["context"]}]
    else:
        conversation = helpsteer2_prompt(check_text(row.get("prompt"), "prompt", "a string prompt"))
    first_field, second_field = _one_of(row, ("response1", "response_1")), _one_of(row, ("response2", "response_2"))
    first = check_text(row[first_field], first_field, "a string reply")
    second = check_text(row[second_field], second_field, "a string reply")
    field = _one_of(row, ("overall_preference", "preference_strength"))
    score = row[field]
    if type(score) is not int or not -3 <= score <= 3:
        raise RecordError(f"{field} must be an integer from -3 to 3, got {score!r}", field)
    if score == 0 and ties == "drop":
        return diverted("helpsteer", "tie")
    version = "helpsteer3" if field == "overall_preference" else "helpsteer2"
    extra = source_extra(row, HELPSTEER_TEXT, "helpsteer")
    extra.update(margin=abs(score), chosen_response=2 if score > 0 else 1)
    chosen, rejected = (second, first) if score > 0 else (first, second)
    domain = row.get("domain")
    source = f"{version}/{domain}" if isinstance(domain, str) and domain else version
    return pair_record(conversation, chosen, rejected, source=source,
                       labels=[label(f"human:{version}", "chosen" if score else "tie", strength=abs(score))],
                       extra=extra)


# -- OpenAI preference fine-tuning -------------------------------------------------------------------
OPENAI_TEXT = frozenset(("input", "preferred_output", "non_preferred_output", "id", "source"))


def _openai_output(value: Any, field: str) -> str:
    if type(value) is not list or len(value) != 1:
        raise RecordError("expected a list holding exactly one assistant message", field)
    message = value[0]
    if not isinstance(message, dict) or message.get("role") != "assistant":
        raise RecordError("the output message must have role 'assistant'", f"{field}[0].role")
    return flatten_content(message.get("content"), f"{field}[0].content")


def from_openai_preference(row: Record, options: Any = None) -> Record:
    """OpenAI's preference (DPO) fine-tuning JSONL: input.messages, preferred_output,
    non_preferred_output (each one assistant message); input's other keys (tools) go to extra. The
    format does not say who preferred the output, so the label is `dataset:openai-preference`; an `id`
    or `source` a user added to the row is kept as the record's."""
    given = row["input"]
    if not isinstance(given, dict) or "messages" not in given:
        raise RecordError("expected an object with `messages`", "input.messages" if isinstance(given, dict) else "input")
    conversation = chat_messages(given["messages"], "input.messages")
    chosen = _openai_output(row["preferred_output"], "preferred_output")
    rejected = _openai_output(row["non_preferred_output"], "non_preferred_output")
    extra = source_extra(row, OPENAI_TEXT, "openai-preference")
    settings = {key: value for key, value in given.items() if key != "messages"}
    if settings:
        extra["input"] = settings
    source = row.get("source")
    return pair_record(conversation, chosen, rejected, source=source if isinstance(source, str) else None,
                       labels=[label("dataset:openai-preference")], extra=extra, record_id=row.get("id"))
