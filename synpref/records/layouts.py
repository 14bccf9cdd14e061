"""Which layout a row is in, decided by its fields, and the `Normalizer` every Stage reads rows through.

A layout is recognized when the row holds all of its fields (`Layout.fields`; a tuple inside is
"any one of these"). Rows with the fields of two layouts are ambiguous and fail naming both, unless
the run forces one with `--layout NAME`; when one layout's fields include another's (RewardBench 2's
`num_correct` on top of chosen/rejected lists), the more specific one is meant. The layouts whose rows
hold chosen/rejected already (canonical records aside) are told apart by their values: transcript
strings, strings after a prompt, message lists, lists of replies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synpref.records import chosen_rejected as cr
from synpref.records import public, ranked
from synpref.records.core import (
    KNOWN_ROLES,
    Expansion,
    Record,
    RecordError,
    check_duplicate_keys,
    check_fields,
    check_messages,
    check_nesting,
    type_name,
)

PAIR_RULES = ranked.PAIR_RULES
AXES = ("better", "safer")
TIES = ("keep", "drop")


@dataclass(frozen=True)
class LayoutOptions:
    """How rows become records. layout: read every row as this layout (for ambiguous rows); pairs: the
    rule for ranked/rated lists (best-worst, adjacent, all); axis: PKU-SafeRLHF's preference (better or
    safer); ties: a two-reply tie (Arena, HelpSteer) is kept with a `tie` label or dropped (diverted)."""

    layout: str | None = None
    pairs: str = "best-worst"
    axis: str = "better"
    ties: str = "keep"

    def __post_init__(self) -> None:
        if self.layout is not None and self.layout not in BY_NAME:
            raise ValueError(f"layout must be one of {', '.join(BY_NAME)}, got {self.layout!r}")
        for name, value, allowed in (("pairs", self.pairs, PAIR_RULES), ("axis", self.axis, AXES),
                                     ("ties", self.ties, TIES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


Reader = Callable[[Record, LayoutOptions], "Record | Expansion"]


@dataclass(frozen=True)
class Layout:
    name: str
    fields: tuple[str | tuple[str, ...], ...]  # all present (a tuple: any one of them)
    read: Reader
    expects: str  # what `synpref cat --layouts` shows
    sets: str  # the public sets read as published
    shape: Callable[[Record], bool] | None = None  # told apart from siblings with the same fields by value
    excludes: tuple[str, ...] = ()
    expands: bool = False

    def recognizes(self, row: Record) -> bool:
        for field in self.fields:
            if not (field in row if type(field) is str else any(name in row for name in field)):
                return False
        if any(name in row for name in self.excludes):
            return False
        return self.shape is None or self.shape(row)

    def missing(self, row: Record) -> str | None:
        """The first of this layout's fields the row lacks."""
        for field in self.fields:
            if type(field) is str and field not in row:
                return field
            if type(field) is tuple and not any(name in row for name in field):
                return field[0]
        return None

    def present(self, row: Record) -> int:
        return sum(1 for field in self.fields if (field in row if type(field) is str else any(n in row for n in field)))

    def field_names(self) -> str:
        return ", ".join(field if type(field) is str else "|".join(field) for field in self.fields)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _reply_list(value: Any) -> bool:
    return type(value) is list and bool(value) and isinstance(value[0], str)


LAYOUTS: tuple[Layout, ...] = (
    Layout("canonical", ("conversation",), cr.from_canonical,
           "conversation (+ chosen, rejected strings; rows without them pass through)", "synpref records"),
    Layout("hh-rlhf", ("chosen", "rejected"), cr.from_hh_transcripts,
           "chosen, rejected: HH transcripts ('\\n\\nHuman: ... \\n\\nAssistant: ...'), no prompt",
           "Anthropic/hh-rlhf", shape=lambda row: "prompt" not in row and not isinstance(row["chosen"], list),
           excludes=("conversation",)),
    Layout("prompt-chosen-rejected", ("prompt", "chosen", "rejected"), cr.from_prompt_strings,
           "prompt, chosen, rejected strings (subset becomes the source)",
           "RewardBench, TRL standard, most binarized sets",
           shape=lambda row: not isinstance(row["chosen"], list), excludes=("conversation",)),
    Layout("message-lists", ("chosen", "rejected"), cr.from_message_lists,
           "chosen, rejected message lists (whole conversations, or after a prompt list)",
           "Skywork-Reward-Preference-80K, UltraFeedback-binarized, TRL conversational",
           shape=lambda row: isinstance(row["chosen"], list) and not _reply_list(row["chosen"]),
           excludes=("conversation",)),
    Layout("rm-bench", ("prompt", "chosen", "rejected"), cr.from_rm_bench,
           "prompt, chosen[3], rejected[3] reply strings (styles concise, detailed, markdown), domain",
           "THU-KEG/RM-Bench (9 pairs a row)", shape=lambda row: _reply_list(row["chosen"]),
           excludes=("conversation",), expands=True),
    Layout("rewardbench-2", ("prompt", "chosen", "rejected", "num_correct"), cr.from_rewardbench2,
           "prompt, chosen[], rejected[] reply strings, num_correct, subset",
           "allenai/reward-bench-2 (every chosen x every rejected)", excludes=("conversation",), expands=True),
    Layout("shp", ("history", "human_ref_A", "human_ref_B"), public.from_shp,
           "history, human_ref_A, human_ref_B, labels (1 = A preferred), score_A/B, domain, post_id",
           "stanfordnlp/SHP, SHP-2"),
    Layout("pku-saferlhf", ("prompt", "response_0", "response_1"), public.from_pku_saferlhf,
           "prompt, response_0, response_1, better_response_id, safer_response_id (--axis), is_response_*_safe",
           "PKU-Alignment/PKU-SafeRLHF"),
    Layout("chatbot-arena", ("conversation_a", "conversation_b", "winner"), public.from_chatbot_arena,
           "conversation_a, conversation_b, model_a, model_b, winner (model_a|model_b|tie|tie (bothbad))",
           "lmsys/chatbot_arena_conversations, lmarena-ai/arena-human-preference-100k/140k, "
           "lmsys/mt_bench_human_judgments"),
    Layout("helpsteer", (("context", "prompt"), ("response1", "response_1"), ("response2", "response_2"),
                         ("overall_preference", "preference_strength")), public.from_helpsteer,
           "prompt|context, response1|response_1, response2|response_2, overall_preference|preference_strength "
           "(-3..3: sign gives the winner, 0 a tie)", "nvidia/HelpSteer3 preference, nvidia/HelpSteer2 preference"),
    Layout("nectar", ("prompt", "answers"), ranked.from_nectar,
           "prompt (HH transcript), answers [{answer, model, rank}] (--pairs)", "berkeley-nest/Nectar", expands=True),
    Layout("ultrafeedback", ("instruction", "completions"), ranked.from_ultrafeedback,
           "instruction, completions [{response, model, fine-grained_score, annotations}] (--pairs)",
           "openbmb/UltraFeedback (raw)", expands=True),
    Layout("openai-preference", ("input", "preferred_output", "non_preferred_output"),
           public.from_openai_preference,
           "input.messages, preferred_output [assistant message], non_preferred_output [assistant message]",
           "OpenAI preference (DPO) fine-tuning JSONL"),
)
BY_NAME: dict[str, Layout] = {layout.name: layout for layout in LAYOUTS}
CANONICAL = BY_NAME["canonical"]
_FIELD_SETS = {layout.name: frozenset(layout.fields) for layout in LAYOUTS}
# Fields that some layout other than the canonical record needs and a canonical record does not have:
# a canonical row holding none of them cannot be another layout's row, and skips the detection.
MARKERS = frozenset(
    name for layout in LAYOUTS if layout is not CANONICAL
    for field in layout.fields for name in ((field,) if type(field) is str else field)
) - {"chosen", "rejected"}


def _more_specific(candidates: list[Layout]) -> list[Layout]:
    """Drop a candidate whose fields are a strict part of another candidate's."""
    return [a for a in candidates
            if not any(_FIELD_SETS[a.name] < _FIELD_SETS[b.name] for b in candidates if b is not a)]


def detect(row: Record) -> Layout:
    """The one layout whose fields the row holds; RecordError when there is none or more than one."""
    candidates = _more_specific([layout for layout in LAYOUTS if layout.recognizes(row)])
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        described = " and ".join(f"{layout.name} ({layout.field_names()})" for layout in candidates)
        raise RecordError(f"ambiguous layout: the row has the fields of {described}; "
                          f"read it with --layout {candidates[0].name} or --layout {candidates[1].name}")
    nearest = max(LAYOUTS, key=lambda layout: layout.present(row))
    if nearest.present(row) == 0:
        raise RecordError(
            "unknown layout: expected a canonical record (conversation) or a public layout "
            "(`synpref cat --layouts` lists them with their fields)", "conversation")
    raise RecordError(f"unknown layout: nearest is {nearest.name}, which needs {nearest.field_names()} "
                      "(`synpref cat --layouts` lists the layouts)", nearest.missing(row) or "conversation")


DEFAULT_OPTIONS = LayoutOptions()


class Normalizer:
    """Maps one row onto the canonical record: a plain dict for one record, an `Expansion` for a row
    that is several records (or none). Canonical rows are checked and returned as they are.

    Every row is checked for nesting orjson could not write back (`check_nesting`) and, given the
    raw line it was parsed from (`data`), for a duplicated `chosen` / `rejected` key; every record
    it gives passes `check_fields` (SPEC section 2's field types).

    `function` is the same as a plain function, for the per-record loop of a Stage (it skips the
    instance call, and binds what it uses: this runs once per record of every command)."""

    def __init__(self, options: LayoutOptions | None = None):
        self.options = options = options or DEFAULT_OPTIONS
        self.forced = forced = BY_NAME[options.layout] if options.layout else None
        if forced is not None:
            def function(row: Any, data: Any = None) -> Record | Expansion:
                if type(row) is not dict:
                    raise RecordError(f"expected a JSON object, got {type_name(row)}")
                check_row(row, data)
                missing = forced.missing(row)
                if missing is not None:
                    raise RecordError(f"missing: layout {forced.name} needs {forced.field_names()}", missing)
                return checked(forced.read(row, options))
        else:
            def function(row: Any, data: Any = None, plain: Any = MARKERS.isdisjoint,
                         roles: frozenset = KNOWN_ROLES, dict_type: type = dict, str_type: type = str,
                         list_type: type = list) -> Record | Expansion:
                if type(row) is not dict_type:
                    raise RecordError(f"expected a JSON object, got {type_name(row)}")
                if "conversation" in row and plain(row):
                    # the canonical fast path: `from_canonical` inlined, as it runs for every record
                    messages = row["conversation"]
                    if type(messages) is not list_type:
                        check_messages(messages, "conversation")
                    plain_messages = True  # only role and content, both strings: nothing nested in them
                    for message in messages:
                        if type(message) is not dict_type or message.get("role") not in roles \
                                or type(message.get("content")) is not str_type:
                            check_messages(messages, "conversation")
                        if len(message) != 2:
                            plain_messages = False
                    if "chosen" in row and "rejected" in row and not (
                            isinstance(row["chosen"], str_type) and isinstance(row["rejected"], str_type)):
                        cr.from_canonical(row)  # raises, naming the side
                    check_row(row, data, "conversation" if plain_messages else None)
                    return check_fields(row)
                check_row(row, data)
                return checked(detect(row).read(row, options))
        self.function = function

    def __call__(self, row: Any, data: bytes | None = None) -> Record | Expansion:
        return self.function(row, data)


def check_row(row: Record, data: Any = None, plain_field: str | None = None) -> None:
    """The checks of a whole row (see `Normalizer`); PLAIN_FIELD is known to hold no nesting."""
    check_nesting(row, plain_field)
    if type(data) is bytes:
        check_duplicate_keys(data, row)


def checked(result: Record | Expansion) -> Record | Expansion:
    """RESULT of a layout's reader, every record of it through `check_fields`."""
    if type(result) is Expansion:
        for record in result:
            check_fields(record)
        return result
    return check_fields(result)


_DEFAULT = Normalizer()


def expand(row: Any, options: LayoutOptions | None = None) -> Expansion:
    """Every record ROW becomes (a list; empty with `diverted` set when the row becomes none)."""
    result = (Normalizer(options) if options else _DEFAULT)(row)
    return result if type(result) is Expansion else Expansion([result])


def normalize(row: Any, options: LayoutOptions | None = None) -> Record:
    """Map a row of a one-record layout onto the canonical record; canonical rows come back as is.
    A row that is several records or none (RM-Bench, ranked lists, a dropped tie) raises: read those
    with `expand` (a Stage does it for every command)."""
    result = (Normalizer(options) if options else _DEFAULT)(row)
    if type(result) is not Expansion:
        return result
    if result.diverted:
        raise RecordError(f"this {result.layout} row becomes no record ({result.diverted}); see expand()")
    raise RecordError(f"this {result.layout} row expands into {len(result)} records; read it with expand()")


def layouts_table() -> str:
    """The layouts as `synpref cat --layouts` prints them: name, fields expected, the sets read."""
    lines = []
    for layout in LAYOUTS:
        how = " (expands a row to several pairs)" if layout.expands else ""
        lines += [f"{layout.name}{how}", f"    recognized by: {layout.field_names()}",
                  f"    reads:         {layout.expects}", f"    sets:          {layout.sets}"]
    return "\n".join(lines)
