"""The torch embedding engine: a sentence-transformers model directory run with plain transformers.

sentence-transformers itself is not a dependency: its layout is small enough to honour here. The
directory's `modules.json` lists a Transformer, then a Pooling module (its `config.json` says which
poolings, concatenated in sentence-transformers' order) and optionally Normalize; embeddings are
always L2-normalized, since retrieval compares them by dot product. `sentence_bert_config.json`
gives the truncation length and lower-casing. Batches come from `synpref.engines.batching`. Long
texts are cut to a head that still holds more than max_length tokens before tokenizing, so a
100 KB reply costs what its first tokens cost. `weights_sha256` identifies the model for an index
built with it (`synpref retrieve` refuses to mix models).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synpref.engines import Progress
from synpref.engines.batching import padded_cost, token_budget_batches
from synpref.models.formatting import CUT_CHARS_PER_TOKEN, CUT_MARGIN

# Padded tokens per forward. CPU, MiniLM-L6, 1 thread, 200 hh texts: 60-68 texts/s at 256, 55-60 at
# 1024, 37-41 at 4096 (big activations leave the cache), 28 one text at a time.
DEFAULT_BATCH_TOKENS = {"cuda": 65536, "cpu": 512}
POOLINGS = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")  # sentence-transformers order
KNOWN_MODULES = {"Transformer", "Pooling", "Normalize"}
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")


def _read_json(path: Path) -> dict | list:
    return json.loads(path.read_text())


class TorchEmbeddingEngine:
    """Sentence embeddings, fp32 on every device: the model is small, and bf16 would blur near-duplicates."""

    def __init__(self, model_dir: str, device: str | None = None, batch_tokens: int | None = None,
                 max_length: int | None = None):
        import torch
        from transformers import AutoModel

        from synpref.models.tokenizer import load_tokenizer

        root = Path(model_dir)
        if not (root / "modules.json").is_file():
            raise FileNotFoundError(
                f"{root}/modules.json is missing: not a sentence-transformers model directory"
            )
        modules = {module["type"].rsplit(".", 1)[-1]: module for module in _read_json(root / "modules.json")}
        if set(modules) - KNOWN_MODULES or not {"Transformer", "Pooling"} <= set(modules):
            raise ValueError(f"{root}: modules {sorted(modules)}; supported: Transformer, Pooling, Normalize")
        pooling = _read_json(root / modules["Pooling"]["path"] / "config.json")
        self.poolings = [name for name in POOLINGS if pooling.get(f"pooling_mode_{name}")]
        chosen = [key for key, on in pooling.items() if key.startswith("pooling_mode_") and on]
        if not self.poolings or len(chosen) != len(self.poolings):
            raise ValueError(f"{root}: unsupported pooling {chosen} (supported: {list(POOLINGS)})")
        transformer = root / modules["Transformer"]["path"]
        config = transformer / "sentence_bert_config.json"
        settings = _read_json(config) if config.is_file() else {}

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(transformer, local_files_only=True, dtype=torch.float32)
        self.model = self.model.to(self.device).eval()
        self.tokenizer = load_tokenizer(str(transformer))
        self.transformer_dir = transformer
        self.max_length = (
            max_length or settings.get("max_seq_length") or self.model.config.max_position_embeddings
        )
        self.lower_case = bool(settings.get("do_lower_case"))
        self.batch_tokens = (
            batch_tokens or DEFAULT_BATCH_TOKENS["cuda" if self.device.startswith("cuda") else "cpu"]
        )
        self.dim = self.model.config.hidden_size * len(self.poolings)

    def weights_sha256(self) -> str:
        """SHA-256 of the weight files' bytes (sorted by name; one file: its sha256sum), so two copies
        of one model agree and another model never does."""
        digest = hashlib.sha256()
        files = sorted({path for pattern in WEIGHT_FILES for path in self.transformer_dir.glob(pattern)})
        for path in files:
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        return digest.hexdigest()

    def _head(self, text: str) -> str:
        """The start of TEXT that alone holds more than max_length + CUT_MARGIN tokens, or all of it:
        the kept (first max_length) tokens are those of the whole text, since a cut splits one word
        past them. The guess of CUT_CHARS_PER_TOKEN characters per token is doubled until it holds."""
        keep = self.max_length * CUT_CHARS_PER_TOKEN
        while keep < len(text):
            piece = text[:keep]
            if len(self.tokenizer(piece, add_special_tokens=False, verbose=False).input_ids) > self.max_length + CUT_MARGIN:
                return piece
            keep *= 2
        return text

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """(len(texts), dim) float32 L2-normalized embeddings, in input order; `progress(texts,
        tokens)` is called after each batch."""
        torch = self.torch
        result = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return result
        inputs = [self._head(text.lower() if self.lower_case else text) for text in texts]
        encoded = self.tokenizer(inputs, truncation=True, max_length=self.max_length).input_ids
        cost = lambda batch: padded_cost(list(map(len, batch)))  # noqa: E731
        with torch.inference_mode():
            for batch in token_budget_batches(encoded, len, cost, self.batch_tokens):
                padded = self.tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
                ids, mask = padded["input_ids"].to(self.device), padded["attention_mask"].to(self.device)
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                pooled = torch.nn.functional.normalize(self._pool(hidden, mask), dim=-1)
                result[batch] = pooled.float().cpu().numpy()
                if progress is not None:
                    progress(len(batch), int(mask.sum()))
        return result

    def _pool(self, hidden: Any, mask: Any) -> Any:
        """The configured poolings of the real (unpadded) tokens, concatenated."""
        torch = self.torch
        weights = mask[..., None].to(hidden.dtype)
        counts = weights.sum(1).clamp(min=1e-9)
        pooled = []
        for name in self.poolings:
            if name == "cls_token":
                pooled.append(hidden[:, 0])
            elif name == "max_tokens":
                pooled.append(hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).amax(1))
            elif name == "mean_tokens":
                pooled.append((hidden * weights).sum(1) / counts)
            else:
                pooled.append((hidden * weights).sum(1) / counts.sqrt())
        return torch.cat(pooled, dim=-1)
