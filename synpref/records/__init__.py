"""The canonical record (SPEC section 2) and the normalizers that map public layouts onto it.

Every layout is recognized by its fields, never guessed (`layouts`): a row with the fields of two
layouts, chosen and rejected with different histories, an unknown role, a transcript that does not end
in an assistant turn all raise a RecordError naming the field; so do, for every record, the checks of
`core.check_fields` (one reply without the other, a history already ending on the assistant's turn,
malformed `labels` / `scores`), rows nested too deep and duplicated reply keys (docs/bad-input.md).
Rows that are not pairs (prompt-only benchmark questions, single answers) pass through unchanged so
stages that do not need pairs never reject them. A row may be several records (RM-Bench's nine cells, a ranked list's pairs) or none (a
dropped tie): `expand` gives them all, with what the layout's rule skipped (`Expansion`).

- `core`: the record, its checks (`check_fields`: SPEC section 2's types; `check_nesting`, duplicate
  keys), `Expansion`;
- `chosen_rejected`: canonical, HH-RLHF, prompt/chosen/rejected, message lists, RM-Bench, RewardBench 2;
- `public`: SHP, PKU-SafeRLHF, Chatbot Arena, HelpSteer2/3, OpenAI preference JSONL;
- `ranked`: Nectar and UltraFeedback, and the `--pairs` rules;
- `layouts`: the registry, detection, `Normalizer`, `normalize`, `expand`.
"""

from synpref.records.core import (
    HH_TURN,
    KNOWN_ROLES,
    MAX_DEPTH,
    PREFERS,
    ROLES,
    Expansion,
    Message,
    Record,
    RecordError,
    check_fields,
    check_labels,
    check_messages,
    check_pair,
    check_scores,
    is_pair,
    pair_problems,
    parse_hh_transcript,
    prompt_text,
)
from synpref.records.layouts import (
    AXES,
    BY_NAME,
    LAYOUTS,
    PAIR_RULES,
    TIES,
    Layout,
    LayoutOptions,
    Normalizer,
    detect,
    expand,
    layouts_table,
    normalize,
)
from synpref.records.ranked import ranked_pairs

__all__ = [
    "AXES",
    "BY_NAME",
    "HH_TURN",
    "KNOWN_ROLES",
    "LAYOUTS",
    "MAX_DEPTH",
    "PAIR_RULES",
    "PREFERS",
    "ROLES",
    "TIES",
    "Expansion",
    "Layout",
    "LayoutOptions",
    "Message",
    "Normalizer",
    "Record",
    "RecordError",
    "check_fields",
    "check_labels",
    "check_messages",
    "check_pair",
    "check_scores",
    "detect",
    "expand",
    "is_pair",
    "layouts_table",
    "normalize",
    "pair_problems",
    "parse_hh_transcript",
    "prompt_text",
    "ranked_pairs",
]
