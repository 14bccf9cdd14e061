"""Record ids held by the million: one utf-8 blob and an offsets array, not millions of Python strings.

dedupe's work folders and retrieve's indexes store ids this way (as a uint8 array in .npz files).
"""

from __future__ import annotations

import numpy as np


def pack_ids(ids: list[str]) -> tuple[bytes, np.ndarray]:
    """IDS as one utf-8 blob (lone surrogates kept) and the int64 offsets of each id in it."""
    encoded = [text.encode("utf-8", "surrogatepass") for text in ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    return b"".join(encoded), offsets


def unpack_id(blob: bytes | np.ndarray, offsets: np.ndarray, row: int) -> str:
    """Id number ROW of a packed blob (bytes, or the uint8 array it was saved as)."""
    return bytes(blob[offsets[row] : offsets[row + 1]]).decode("utf-8", "surrogatepass")
