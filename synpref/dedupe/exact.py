"""Exact-duplicate keys: a normalized text per record and its 128-bit MurmurHash3, first occurrence kept.

Normalization (lower case, every run of whitespace one space, ends stripped) makes copies that differ
only in case or spacing one key; roles are part of the key so a user turn never equals an
assistant turn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synpref.dedupe.kernels import hash128_batch
from synpref.records import Record

KEYS = ("pair", "prompt", "chosen-rejected")
FIELD = "\x1e"  # between conversation, chosen and rejected
TURN = "\x1d"  # between messages
ROLE = "\x1f"  # between a role and its content


def normalize_text(text: str) -> str:
    return " ".join(text.lower().split())


def normalized_key(record: Record, key: str = "pair") -> str:
    """The string two records must share to be exact duplicates under `key`."""
    parts = []
    if key in ("pair", "prompt"):
        parts.append(
            TURN.join(
                f"{m['role']}{ROLE}{normalize_text(m['content'])}" for m in record.get("conversation", [])
            )
        )
    if key in ("pair", "chosen-rejected"):
        parts.append(normalize_text(_text(record.get("chosen"))))
        parts.append(normalize_text(_text(record.get("rejected"))))
    if key not in KEYS:
        raise ValueError(f"key must be one of {', '.join(KEYS)}, got {key!r}")
    return FIELD.join(parts)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def pack(texts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """One flat byte buffer and offsets, the input every kernel takes."""
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(text) for text in texts], out=offsets[1:])
    total = int(offsets[-1])
    # 8-aligned and zero-padded, so kernels may read uint64 words up to 72 bytes past any text
    padding = b"\0" * (80 + (-total) % 8)
    buffer = np.frombuffer(b"".join([*texts, padding]), dtype=np.uint8)
    if buffer.ctypes.data % 8:  # CPython's bytes data is 16-aligned; copy if it ever is not
        aligned = np.zeros(buffer.shape[0] // 8, dtype=np.uint64).view(np.uint8)
        aligned[:] = buffer
        buffer = aligned
    return buffer, offsets


def pack_texts(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """pack() of the texts' UTF-8 bytes (encoding one by one keeps ASCII texts on the fast path)."""
    return pack([text.encode("utf-8", "surrogatepass") for text in texts])


def key_hashes(keys: Sequence[str]) -> np.ndarray:
    """(n, 2) uint64: MurmurHash3_x64_128 of each normalized key's UTF-8 bytes."""
    buffer, offsets = pack_texts(keys)
    out = np.empty((len(keys), 2), dtype=np.uint64)
    hash128_batch(buffer, offsets, out)
    return out
