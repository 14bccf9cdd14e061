"""The sharded work-folder format of dedupe's cluster mode: the passes of `synpref.dedupe.passes`,
each a separate job, meeting through files in one folder.

    WORK/signatures-I-of-N.npz   pass 1 (`signatures`), one per shard: the facts of its records
    WORK/decisions.npz           pass 2 (`clusters`): every record's fate, by input position

Each file carries its format name and the settings it was made with, so passes run with other
settings, or a folder mixing shard counts, fail with a clear error instead of a wrong result.
Files appear atomically.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

import numpy as np

from synpref.dedupe.minhash import MinHashParams
from synpref.dedupe.passes import (
    Decisions,
    DedupeConfig,
    Facts,
    apply,
    decide,
    load_benchmarks,
    scan,
)
from synpref.io import AtomicFile, Shard, StreamError
from synpref.io.ids import pack_ids, unpack_id
from synpref.stage import Stage

FORMAT = "synpref-dedupe/1"


def signatures_path(work: str, shard: Shard) -> str:
    return os.path.join(work, f"signatures-{shard.index:05d}-of-{shard.count:05d}.npz")


def decisions_path(work: str) -> str:
    return os.path.join(work, "decisions.npz")


def _save(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    with AtomicFile(path) as out:
        np.savez(out, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)


def _load(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    if meta.get("format") != FORMAT:
        raise StreamError(path, None, f"not a {FORMAT} file")
    return arrays, meta


def write_signatures(stage: Stage, config: DedupeConfig, work: str, shard: Shard) -> Facts:
    """Cluster pass 1 for one shard."""
    benchmark = load_benchmarks(config)
    facts = scan(stage.positioned(), config, benchmark)
    sigs = (
        np.concatenate(facts.sig_chunks)
        if facts.sig_chunks
        else np.empty((0, config.minhash.num_perm), np.uint32)
    )
    meta = {
        "format": FORMAT,
        "config": config.fingerprint(),
        "shard": [shard.index, shard.count],
        "benchmarks": benchmark.names if benchmark else [],
        "errors": stage.counts["errors"],
    }
    arrays = {
        "positions": facts.positions,
        "status": facts.status,
        "benchmark": facts.benchmark,
        "hashes": facts.hashes,
        "signatures": sigs,
        "shingles": facts.shingles,
        "lengths": facts.lengths,
        "ids": np.frombuffer(facts.id_blob, dtype=np.uint8),
        "id_offsets": facts.id_offsets,
    }
    _save(signatures_path(work, shard), arrays, meta)
    return facts


def write_decisions(work: str) -> Decisions:
    """Cluster pass 2: merge every shard's signatures (all N must be there, made with one config,
    which the files carry)."""
    paths = sorted(glob.glob(os.path.join(work, "signatures-*-of-*.npz")))
    if not paths:
        raise StreamError(work, None, "no signatures-I-of-N.npz files: run `synpref dedupe signatures` first")
    counts = {int(re.search(r"-of-(\d+)", os.path.basename(p)).group(1)) for p in paths}
    if len(counts) != 1:
        raise StreamError(
            work, None, f"signatures from different shard counts {sorted(counts)}: clean the folder"
        )
    total = counts.pop()
    parts: list[Facts] = []
    first_meta: dict[str, Any] | None = None
    for path in paths:
        arrays, meta = _load(path)
        if first_meta is None:
            first_meta = meta
        elif meta["config"] != first_meta["config"] or meta["benchmarks"] != first_meta["benchmarks"]:
            raise StreamError(path, None, f"made with other settings than {paths[0]}")
        parts.append(
            Facts(
                arrays["positions"],
                arrays["status"],
                arrays["benchmark"],
                arrays["hashes"],
                [arrays["signatures"]],
                arrays["shingles"],
                arrays["lengths"],
                arrays["ids"].tobytes(),
                arrays["id_offsets"],
            )
        )
    if len(paths) != total:
        missing = sorted(set(range(total)) - {int(re.search(r"signatures-(\d+)", p).group(1)) for p in paths})
        raise StreamError(work, None, f"signatures of shards {missing} of {total} are missing")
    assert first_meta is not None
    stored = first_meta["config"]
    minhash = MinHashParams(**stored["minhash"])
    config = DedupeConfig(stored["key"], stored["exact"], stored["near"], stored["keep"], minhash)
    benchmarks = [tuple(name) for name in first_meta["benchmarks"]]
    decisions = decide(Facts.concat(parts), config, benchmarks)
    ref_positions = np.array(sorted(decisions.ref_ids), dtype=np.int64)
    ref_blob, ref_offsets = pack_ids([decisions.ref_ids[int(p)] for p in ref_positions])
    meta = {"format": FORMAT, "config": stored, "shards": total, "benchmarks": first_meta["benchmarks"]}
    arrays = {
        "positions": decisions.positions,
        "reason": decisions.reason,
        "ref": decisions.ref,
        "ref_positions": ref_positions,
        "ref_ids": np.frombuffer(ref_blob, dtype=np.uint8),
        "ref_offsets": ref_offsets,
    }
    _save(decisions_path(work), arrays, meta)
    return decisions


def read_decisions(work: str) -> tuple[Decisions, dict[str, Any]]:
    path = decisions_path(work)
    if not os.path.exists(path):
        raise StreamError(path, None, "no decisions: run `synpref dedupe clusters` first")
    arrays, meta = _load(path)
    blob, offsets = arrays["ref_ids"].tobytes(), arrays["ref_offsets"]
    ref_ids = {int(p): unpack_id(blob, offsets, i) for i, p in enumerate(arrays["ref_positions"])}
    benchmarks = [tuple(name) for name in meta["benchmarks"]]
    return Decisions(arrays["positions"], arrays["reason"], arrays["ref"], ref_ids, benchmarks), meta


def filter_shard(stage: Stage, work: str) -> Decisions:
    """Cluster pass 3 for one shard."""
    decisions, _ = read_decisions(work)
    apply(stage.positioned(), decisions, stage)
    return decisions
