"""How a (conversation, reply) becomes model input; shared by `score` and `train-rm` so a reward
model is scored on exactly the text layout it was trained on.

Policy (the paper's recipe): the model's own chat template renders the conversation plus the reply
as the final assistant turn; no system prompt is added by synpref; special tokens come from the
template only, so the BOS token is never duplicated (one is prepended only when the tokenizer wants
one and the template did not write it).

Truncation (`max_length` tokens): the longest reply of a group decides. Oldest history turns are
dropped first, a user turn together with the replies that follow it, keeping system messages; the
final reply is never dropped. If the last user turn plus the reply still do not fit, the oldest
tokens are cut (the reward is read at the last token, so the end is kept). Truncated groups are
marked: `truncated` is "turns" or "tokens", with `dropped_turns` the number of messages dropped.
A scorer's default `max_length` is the model's context (`context_length`): beyond it a model either
fails or runs for minutes on text it was never trained to read.

A text of far more than `max_length` tokens (a 5 MB reply) is cut to its end before it is tokenized
at all (`PairFormatter.cut`), with the same result as tokenizing it whole; see there why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, str]
SENTINEL_USER = "\u2063synpref-user\u2063"
SENTINEL_SYSTEM = "\u2063synpref-system\u2063"
CUT_CHARS_PER_TOKEN = 16  # first guess of the characters that hold max_length tokens, per token
CUT_MARGIN = 64  # tokens a cut text must hold beyond max_length: where the cut splits a word
NO_LIMIT = 1 << 40  # tokenizers without a declared limit report model_max_length = 1e30


@dataclass
class EncodedGroup:
    """Token ids of one conversation with each of its candidate replies (2 for a pair)."""

    sequences: list[list[int]]
    truncated: str | None = None  # None, "turns" or "tokens"
    dropped_turns: int = 0

    @property
    def prefix_length(self) -> int:
        """Tokens shared by every sequence, capped so each keeps at least one token of its own."""
        first = self.sequences[0]
        shared = min(len(sequence) for sequence in self.sequences) - 1
        for sequence in self.sequences[1:]:
            limit = min(shared, len(sequence))
            position = 0
            while position < limit and sequence[position] == first[position]:
                position += 1
            shared = position
        return max(shared, 0)


def default_system_prompt(tokenizer: Any) -> str | None:
    """The system prompt a chat template inserts by itself when the conversation has none, if any.

    Found by rendering a user turn with and without an explicit system turn: when the template
    writes the system header without being asked, the text between header and user turn is it.
    """
    plain = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL_USER}], tokenize=False)
    try:
        explicit = tokenizer.apply_chat_template(
            [{"role": "system", "content": SENTINEL_SYSTEM}, {"role": "user", "content": SENTINEL_USER}],
            tokenize=False,
        )
    except Exception:  # templates that reject system turns cannot inject one either
        return None
    header = explicit[: explicit.index(SENTINEL_SYSTEM)]
    tail = explicit[explicit.index(SENTINEL_SYSTEM) + len(SENTINEL_SYSTEM) :]
    if header and plain.startswith(header) and plain.endswith(tail) and len(plain) > len(header) + len(tail):
        return plain[len(header) : len(plain) - len(tail)]
    return None


def context_length(config: Any, tokenizer: Any) -> int | None:
    """The most tokens the model reads: config.max_position_embeddings or the tokenizer's
    model_max_length, the smaller of those that are set and finite; None when neither is."""
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    finite = [limit for limit in limits if isinstance(limit, int) and 0 < limit < NO_LIMIT]
    return min(finite, default=None)


class PairFormatter:
    """Renders and tokenizes (conversation, reply) groups for a reward model's tokenizer."""

    def __init__(self, tokenizer: Any, max_length: int | None = None):
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template; reward models here need one")
        self.tokenizer = tokenizer
        self.max_length = max_length
        bos = tokenizer.bos_token_id
        self._bos = bos if bos is not None and getattr(tokenizer, "add_bos_token", False) else None

    def render(self, conversation: Sequence[Message], reply: str) -> str:
        messages = [*conversation, {"role": "assistant", "content": reply}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    def encode(self, conversation: Sequence[Message], reply: str) -> list[int]:
        ids = self.tokenizer(self.render(conversation, reply), add_special_tokens=False)["input_ids"]
        if self._bos is not None and (not ids or ids[0] != self._bos):
            ids = [self._bos, *ids]
        return ids

    def cut(self, text: str) -> str:
        """The end of TEXT that alone holds more than max_length + CUT_MARGIN tokens, or all of it.

        Any sequence holding such a piece is over max_length, as it is with the whole text, so every
        truncation decision is the same, and the kept tokens (the last max_length) all come from
        after the cut's first CUT_MARGIN tokens, where the piece tokenizes as the whole text does
        (a cut splits one word; tokenizers split words at whitespace and punctuation). Tokens hold
        any number of characters (one emoji is several tokens, a run of spaces one), so the guess of
        CUT_CHARS_PER_TOKEN characters per token is checked by tokenizing the piece, and doubled until
        it holds enough: tokenizing costs the piece's length, not the text's.
        """
        if self.max_length is None:
            return text
        keep = self.max_length * CUT_CHARS_PER_TOKEN
        while keep < len(text):
            piece = text[-keep:]
            if len(self.tokenizer(piece, add_special_tokens=False)["input_ids"]) > self.max_length + CUT_MARGIN:
                return piece
            keep *= 2
        return text

    def _cut_message(self, message: Message) -> Message:
        content = self.cut(message["content"])
        return message if content is message["content"] else {**message, "content": content}

    def encode_group(self, conversation: Sequence[Message], replies: Sequence[str]) -> EncodedGroup:
        """All replies after the same conversation, truncated together so they keep a shared prefix."""
        history = [self._cut_message(message) for message in conversation]
        replies = [self.cut(reply) for reply in replies]
        sequences = [self.encode(history, reply) for reply in replies]
        if self.max_length is None or max(map(len, sequences)) <= self.max_length:
            return EncodedGroup(sequences)
        shortest = _shortest_history(history)
        if len(shortest) < len(history):  # when no dropping of turns fits, skip encoding each step
            last = [self.encode(shortest, reply) for reply in replies]
            if max(map(len, last)) > self.max_length:
                return EncodedGroup([s[-self.max_length :] for s in last], "tokens", len(history) - len(shortest))
        dropped = 0
        while max(map(len, sequences)) > self.max_length:
            shorter = _drop_oldest_turn(history)
            if shorter is None:
                sequences = [sequence[-self.max_length :] for sequence in sequences]
                return EncodedGroup(sequences, "tokens", dropped)
            dropped += len(history) - len(shorter)
            history = shorter
            sequences = [self.encode(history, reply) for reply in replies]
        return EncodedGroup(sequences, "turns", dropped)


def _shortest_history(history: list[Message]) -> list[Message]:
    """History with every turn dropped that truncation may drop."""
    while (shorter := _drop_oldest_turn(history)) is not None:
        history = shorter
    return history


def _drop_oldest_turn(history: list[Message]) -> list[Message] | None:
    """History without its oldest user turn and the replies after it; None when only the last is left."""
    system = [message for message in history if message["role"] == "system"]
    rest = [message for message in history if message["role"] != "system"]
    starts = [position for position, message in enumerate(rest) if message["role"] == "user"]
    if starts and starts[0] > 0:
        return system + rest[starts[0] :]  # leading assistant turns go first
    if len(starts) < 2:
        return None
    return system + rest[starts[1] :]
