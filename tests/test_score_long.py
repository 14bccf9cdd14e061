"""`synpref score` on pairs beyond the model's context: truncated by the shared formatter to the
model's maximum positions by default, marked, counted on stderr, and fast however long the text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_score import EXAMPLES

from synpref.io import iter_raw, read_json_records, write_records
from synpref.models.formatting import PairFormatter, context_length
from synpref.models.tokenizer import load_tokenizer
from synpref.records import normalize

SHORT_CONTEXT = 512


class WholeTextFormatter(PairFormatter):
    """The formatter without the cut before tokenizing: what the cut must reproduce."""

    def cut(self, text: str) -> str:
        return text


@pytest.fixture(scope="module")
def hh() -> list[dict]:
    return [normalize(raw.parse()) for raw in iter_raw(str(EXAMPLES / "hh-harmless-base-test.jsonl.zst"))]


@pytest.fixture(scope="module")
def prose(hh) -> str:
    """~95,000 characters of real replies (~24,000 SmolLM2 tokens)."""
    return "\n\n".join(record["chosen"] for record in hh)


@pytest.fixture(scope="module")
def tokenizer(smollm2_rm):
    return load_tokenizer(str(smollm2_rm))


@pytest.fixture(scope="module")
def short_context_rm(smollm2_rm, tmp_path_factory) -> Path:
    """The SmolLM2 RM with max_position_embeddings 512 in its config (the weights are the same). At
    the real 8,192-token context `synpref score` takes 42 s on a 20K-token reply and 46 s on a 5 MB
    one (2 free cores, model load included; measured by hand), too long beside CI's other workers,
    so the CLI runs at this scale."""
    directory = tmp_path_factory.mktemp("short-context-rm")
    for name in os.listdir(smollm2_rm):
        if name != "config.json":
            os.symlink(smollm2_rm / name, directory / name)
    config = json.loads((smollm2_rm / "config.json").read_text())
    config["max_position_embeddings"] = SHORT_CONTEXT
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_default_max_length_is_the_models_context(smollm2_rm, tokenizer):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(smollm2_rm), local_files_only=True)
    assert tokenizer.model_max_length > 10**20  # SmolLM2's tokenizer declares no limit
    assert context_length(config, tokenizer) == 8192
    assert context_length(config, SimpleNamespace(model_max_length=4096)) == 4096
    assert context_length(SimpleNamespace(), SimpleNamespace(model_max_length=int(1e30))) is None


@pytest.mark.parametrize(
    "kind", ["prose reply", "reply of spaces", "reply of emoji", "one long word", "long first turn"]
)
def test_cutting_long_texts_before_tokenizing_changes_no_token(kind, prose, hh, tokenizer):
    conversation, long_text = hh[3]["conversation"], {
        "prose reply": (prose * 11)[:1_000_000],
        "reply of spaces": " " * 1_000_000 + "the end",
        "reply of emoji": "\U0001f600 " * 150_000,
        "one long word": "ab" * 200_000,
        "long first turn": None,
    }[kind]
    if long_text is None:
        conversation = [{"role": "user", "content": prose * 3}, *conversation]
        replies = [hh[3]["chosen"], hh[3]["rejected"]]
    else:
        replies = [long_text, hh[3]["rejected"]]
    cut = PairFormatter(tokenizer, 8192).encode_group(conversation, replies)
    whole = WholeTextFormatter(tokenizer, 8192).encode_group(conversation, replies)
    assert (cut.sequences, cut.truncated, cut.dropped_turns) == (whole.sequences, whole.truncated, whole.dropped_turns)
    assert max(map(len, cut.sequences)) <= 8192 and cut.truncated == ("turns" if long_text is None else "tokens")


def test_a_5mb_reply_is_encoded_in_seconds(prose, hh, tokenizer):
    start = time.monotonic()
    group = PairFormatter(tokenizer, 8192).encode_group(hh[3]["conversation"], [(prose * 53)[:5_000_000], "No."])
    assert time.monotonic() - start < 10
    assert len(group.sequences[0]) == 8192 and group.truncated == "tokens"


@pytest.mark.slow
def test_cli_truncates_marks_and_counts_pairs_beyond_the_context(short_context_rm, prose, hh, tmp_path):
    """The issue's bar, at a 512-token context: a 5 MB reply and a reply of ~5x the context, without
    --max-length, finish within a minute, truncated and marked; a short pair is left alone."""
    base = hh[0]
    records = [
        {**base, "id": "huge", "rejected": (prose * 53)[:5_000_000]},
        {**base, "id": "five-contexts", "chosen": prose[: 4 * 5 * SHORT_CONTEXT]},
        {**base, "id": "short"},
    ]
    pairs, out = tmp_path / "pairs.jsonl.zst", tmp_path / "out.jsonl.zst"
    write_records(records, str(pairs))
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "synpref", "score", "-m", str(short_context_rm), str(pairs), "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert "truncated 2" in result.stderr
    marks = {r["id"]: r["scores"][short_context_rm.name].get("truncated") for r in read_json_records(str(out))}
    assert marks == {"huge": "tokens", "five-contexts": "tokens", "short": None}
