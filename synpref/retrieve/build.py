"""Building an index from a pool: embed it in durable chunks (sharded jobs, resumable after a kill),
then index every chunk's vectors in pool order.

    DIR/build.json                      the pool's SHA-256, the model's identity, the layout options:
                                        every job of the build checks them, so no chunk of another pool
                                        or model is ever mixed in
    DIR/parts/I-of-N/chunk-000000.npz   CHUNK pairs of shard I of N: vectors, input positions, ids;
                                        each written atomically (temp file + rename)
    DIR/parts/I-of-N/done.json          the shard is complete

A killed job leaves whole chunks; running it again skips their pairs and goes on. The index is
built by the run without --shard once every part is done (it embeds the pool itself when no part
exists), in pool order, so N shards give the index one process gives. The parts are deleted when
the index is written; the pool stays where it is (the index keeps its paths and SHA-256 and reads
it again to emit pool records).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
from dataclasses import asdict
from typing import Any

import numpy as np

from synpref.io import AtomicFile, Shard, expand_paths, files_sha256, write_atomic
from synpref.io.ids import pack_ids, unpack_id
from synpref.retrieve.embed import Embedder, pair_text
from synpref.retrieve.index import (
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE,
    FORMAT,
    IndexMismatch,
    describe_model,
    read_meta,
    vector_index,
    write_index,
)
from synpref.stage import Stage, StageOptions

CHUNK = 4096  # pairs per durable chunk: about 40 s of embedding on 2 CPU cores
BUILD = "build.json"
PART = re.compile(r"^(\d+)-of-(\d+)$")


def pool_files(paths: list[str]) -> list[str]:
    """The pool's files in reading order (directories expanded); stdin cannot be a pool, because the
    index reads the pool again to emit its records."""
    files = expand_paths(paths)
    if "-" in files:
        raise ValueError("the pool must be files (or directories of them), not stdin: the index keeps their "
                         "paths and SHA-256 to read the pool records again")
    return [os.path.abspath(path) for path in files]


def build_settings(files: list[str], embedder: Embedder, options: StageOptions) -> dict[str, Any]:
    sha256 = files_sha256(files, skip_unreadable=options.on_error != "fail")
    return {"format": FORMAT, "pool": {"sha256": sha256, "files": files},
            "model": embedder.identity, "layouts": asdict(options.layouts)}


def check_same_build(directory: str, found: dict[str, Any], settings: dict[str, Any], what: str) -> None:
    """Refuse a build folder or index made from another pool, model or layout options."""
    if found["pool"]["sha256"] != settings["pool"]["sha256"]:
        raise IndexMismatch(
            f"{directory} holds {what} of another pool (sha256 {found['pool']['sha256'][:12]}, "
            f"{', '.join(found['pool']['files'])}); this pool's sha256 is {settings['pool']['sha256'][:12]}: "
            "use another --index DIR, or delete it to start over")
    if found["model"] != settings["model"]:
        raise IndexMismatch(f"{directory} holds {what} built with {describe_model(found['model'])}; this run "
                            f"embeds with {describe_model(settings['model'])}")
    if found["layouts"] != settings["layouts"]:
        raise IndexMismatch(f"{directory} holds {what} of the pool read with layout options "
                            f"{found['layouts']}, not {settings['layouts']}")


def _claim(directory: str, settings: dict[str, Any]) -> None:
    """Record this build's settings, or check them against those of the jobs before it."""
    path = os.path.join(directory, BUILD)
    if not os.path.isfile(path):
        write_atomic(path, json.dumps(settings, indent=1).encode() + b"\n")
    check_same_build(directory, json.loads(open(path, "rb").read()), settings, "an unfinished build")


def part_dir(directory: str, shard: Shard) -> str:
    return os.path.join(directory, "parts", f"{shard.index:05d}-of-{shard.count:05d}")


def _chunks(part: str) -> list[str]:
    """The part's whole chunks, contiguous from chunk 0 (temp files of a killed write do not match)."""
    found = sorted(glob.glob(os.path.join(part, "chunk-*.npz")))
    return [path for number, path in enumerate(found) if path.endswith(f"chunk-{number:06d}.npz")]


def _save_chunk(part: str, number: int, vectors: np.ndarray, positions: list[int], ids: list[str]) -> None:
    blob, offsets = pack_ids(ids)
    with AtomicFile(os.path.join(part, f"chunk-{number:06d}.npz")) as handle:
        np.savez(handle, vectors=vectors, positions=np.asarray(positions, dtype=np.int64),
                 id_blob=np.frombuffer(blob, dtype=np.uint8),
                 id_offsets=offsets)


def embed_part(stage: Stage, directory: str, embedder: Embedder, shard: Shard, chunk: int = CHUNK) -> None:
    """Embed the Stage's records (its shard of the pool) into DIR/parts/I-of-N, resuming after the
    chunks a killed run left. Counts: embedded (pairs), distinct_texts, resumed (pairs skipped)."""
    part = part_dir(directory, shard)
    os.makedirs(part, exist_ok=True)
    with open(os.path.join(part, ".lock"), "w") as lock:
        try:  # two jobs on one part would write the same chunks
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{part} is being built by another process") from None
        if os.path.isfile(os.path.join(part, "done.json")):
            stage.counts["resumed"] += json.loads(open(os.path.join(part, "done.json"), "rb").read())["records"]
            return
        chunks = _chunks(part)
        done = 0
        for path in chunks:
            with np.load(path) as saved:
                done += len(saved["positions"])
        if done:
            stage.counts["resumed"] += done
        bar = stage.progress_bar(unit="pair", initial=done)
        texts: list[str] = []
        positions: list[int] = []
        ids: list[str] = []
        number, seen = len(chunks), 0

        def flush() -> None:
            nonlocal number
            vectors, distinct = embedder.embed_distinct(texts, lambda items, tokens: bar.update(items))
            bar.update(len(texts) - distinct)  # the pairs that shared a text embedded once
            _save_chunk(part, number, vectors, positions, ids)
            stage.counts["embedded"] += len(texts)
            stage.counts["distinct_texts"] += distinct
            number += 1
            del texts[:], positions[:], ids[:]

        for record, _ in stage.records_with_bytes(progress=False, check=pair_text):
            seen += 1
            if seen <= done:
                continue
            texts.append(pair_text(record))
            positions.append(stage.position)
            ids.append(str(record.get("id")))
            if len(texts) == chunk:
                flush()
        if texts:
            flush()
        bar.close()
        write_atomic(os.path.join(part, "done.json"), json.dumps({"records": seen}).encode() + b"\n")


def _parts(directory: str) -> tuple[int, dict[int, str]]:
    """(shard count, {shard index: part folder}) of the build; parts of two shard counts are an error."""
    found: dict[int, dict[int, str]] = {}
    for path in glob.glob(os.path.join(directory, "parts", "*")):
        match = PART.match(os.path.basename(path))
        if match:
            found.setdefault(int(match[2]), {})[int(match[1])] = path
    if len(found) > 1:
        raise ValueError(f"{directory}/parts holds parts of {sorted(found)} shards: one build uses one shard "
                         "count (delete the parts of the others)")
    count = next(iter(found), 0)
    return count, found.get(count, {})


def finish_index(directory: str, settings: dict[str, Any], kind: str = "auto", nlist: int | None = None,
                 nprobe: int = DEFAULT_NPROBE, ef_search: int = DEFAULT_EF_SEARCH) -> dict[str, Any]:
    """Index the vectors of every finished part in pool order and write DIR; returns its meta."""
    count, parts = _parts(directory)
    missing = [index for index in range(count) if not os.path.isfile(os.path.join(parts.get(index, ""), "done.json"))]
    if missing:
        shown = ", ".join(f"--shard {index}/{count}" for index in missing[:8])
        raise ValueError(f"{directory}: {len(missing)} of {count} parts are not finished ({shown}"
                         f"{', ...' if len(missing) > 8 else ''}): run them (a part resumes), then this again")
    vectors, positions, ids = [], [], []
    for index in range(count):
        for path in _chunks(parts[index]):
            with np.load(path) as saved:
                vectors.append(saved["vectors"])
                positions.append(saved["positions"])
                ids.extend(unpack_id(saved["id_blob"], saved["id_offsets"], row)
                           for row in range(len(saved["positions"])))
    dim = settings["model"]["dim"]
    all_positions = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
    order = np.argsort(all_positions, kind="stable")
    matrix = np.concatenate(vectors)[order] if vectors else np.zeros((0, dim), dtype=np.float32)
    del vectors
    ordered_ids = [ids[row] for row in order]
    index = vector_index(matrix, kind, nlist, nprobe, ef_search)
    meta = {key: settings[key] for key in ("pool", "model", "layouts")}
    meta["duplicate_ids"] = len(ordered_ids) - len(set(ordered_ids))
    write_index(directory, index, ordered_ids, all_positions[order], meta)
    shutil.rmtree(os.path.join(directory, "parts"), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, BUILD))
    return read_meta(directory) or {}


def build_index(stage: Stage, directory: str, embedder: Embedder, kind: str = "auto", nlist: int | None = None,
                nprobe: int = DEFAULT_NPROBE, ef_search: int = DEFAULT_EF_SEARCH,
                chunk: int = CHUNK) -> dict[str, Any] | None:
    """Build (or resume building) the index of the Stage's pool in DIRECTORY.

    With a shard on the Stage, embed that shard only and return None; without one, embed what no
    part holds yet, index everything and return the index's meta. An index already finished from
    this pool and model is left as it is (counted `up_to_date`); one of another pool or model, or a
    build folder of one, is refused (IndexMismatch).
    """
    settings = build_settings(pool_files(stage.options.inputs), embedder, stage.options)
    finished = read_meta(directory)
    if finished is not None:
        check_same_build(directory, finished, settings, "an index")
        stage.counts["up_to_date"] += finished["count"]
        return finished
    os.makedirs(directory, exist_ok=True)
    _claim(directory, settings)
    if stage.options.shard is not None:
        embed_part(stage, directory, embedder, stage.options.shard, chunk)
        return None
    count, _ = _parts(directory)
    if count <= 1:
        embed_part(stage, directory, embedder, Shard(0, 1), chunk)
    return finish_index(directory, settings, kind, nlist, nprobe, ef_search)
