"""A disk cache of last-layer states (what a reward head reads), shared by runs whose models have the
same backbone: RMs with a frozen backbone and different linear heads (`train-rm --train-layers 0`,
`rm init --seed N`) then compute each sequence's forward once, and every later pass costs the head.

    cache = StateCache(directory, backbone_fingerprint(backbone, settings), hidden_size)
    cache.key(token_ids) in cache; cache.get([key, ...]) -> (n, hidden) fp32; cache.put(keys, states)

DIR/<fingerprint>/ holds append-only files of fixed-size entries, one per line: base64 of the key
(blake2b-16 of the sequence's token ids as int32) and the state (hidden float32, little-endian).
The line framing is `synpref.io.AppendStream`'s (one write and fsync per batch, an exclusive lock);
each process writes a file no live process holds (a dead writer's, whose torn tail AppendStream
cuts, or a new HOST-PID-RANDOM.states), so shards side by side never wait on each other. Opening reads every file
of the directory, dropping a torn last line, and a lookup that misses reads what the other files
gained since (a later stage of a pipe finds the states an earlier one stored); nothing is ever rewritten (but a torn tail cut). The fingerprint covers the
backbone's weights and buffers and the settings that change its states, never the head.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from synpref.io import AppendStream
from synpref.io.durable import host_name

KEY_BYTES = 16
SUFFIX = ".states"
# Config fields that change a decoder's states without showing in its weights (absent ones are skipped).
FORWARD_CONFIG = ("model_type", "hidden_act", "rms_norm_eps", "layer_norm_eps", "rope_theta", "rope_scaling",
                  "num_attention_heads", "num_key_value_heads", "head_dim", "sliding_window",
                  "attention_bias", "mlp_bias")


def weights_digest(module: Any, config: Mapping[str, Any]) -> bytes:
    """blake2b-16 over MODULE's parameters, then buffers (non-persistent ones too: rotary inv_freq),
    each as (name, dtype, shape, bytes), and CONFIG's `FORWARD_CONFIG` fields. ~0.5 s for 135M params."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in (*module.named_parameters(), *module.named_buffers()):
        tensor = tensor.detach()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    digest.update(repr(sorted((k, config[k]) for k in FORWARD_CONFIG if k in config)).encode())
    return digest.digest()


def fingerprint(weights: bytes, settings: str) -> str:
    """The cache directory name: the backbone's `weights_digest` plus the engine SETTINGS that change
    its states (device type, weight dtype, bf16 matmuls)."""
    return hashlib.blake2b(weights + settings.encode(), digest_size=16).hexdigest()


_OPEN: dict[str, StateCache] = {}  # one instance per cache directory and process (RMs of one backbone share it)


def open_state_cache(directory: str, fingerprint: str, hidden: int) -> StateCache:
    """The process's one `StateCache` of DIRECTORY/FINGERPRINT: several models of one backbone in one
    process (eval -m a -m b) see each other's states and append to one file."""
    path = os.path.join(os.path.abspath(directory), fingerprint)
    if path not in _OPEN:
        _OPEN[path] = StateCache(directory, fingerprint, hidden)
    return _OPEN[path]


class StateCache:
    """Last-layer states by sequence key, for one backbone fingerprint; see the module docstring."""

    def __init__(self, directory: str, fingerprint: str, hidden: int):
        self.path = os.path.join(directory, fingerprint)
        self.hidden = hidden
        self.entry = np.dtype([("key", f"V{KEY_BYTES}"), ("state", "<f4", (hidden,))])
        self.line = len(binascii.b2a_base64(bytes(self.entry.itemsize), newline=False))
        self._states: dict[bytes, Any] = {}
        self._read_up_to: dict[str, int] = {}  # file -> bytes of whole lines read
        self._writer: AppendStream | None = None
        os.makedirs(self.path, exist_ok=True)
        self.refresh()

    def refresh(self) -> None:
        """Read what other processes appended since the last read (new files too): a stage later in
        a pipe, or a shard beside this one, finds the states the others have just computed."""
        own = self._writer.path if self._writer is not None else None
        for name in self._files():
            path = os.path.join(self.path, name)
            if path != own:
                self._read(path)

    def _files(self) -> list[str]:
        return sorted(name for name in os.listdir(self.path) if name.endswith(SUFFIX))

    def _read(self, path: str) -> None:
        """The complete entries of one file past what was read before (read-only: a live writer may
        be appending to it; the piece after the last newline is torn or still being written)."""
        start = self._read_up_to.get(path, 0)
        with open(path, "rb") as handle:
            handle.seek(start)
            whole, _, _ = handle.read().rpartition(b"\n")
        if not whole:
            return
        self._read_up_to[path] = start + len(whole) + 1
        data = b"".join(binascii.a2b_base64(line) for line in whole.split(b"\n") if len(line) == self.line)
        self._add(np.frombuffer(data, dtype=self.entry))

    def _add(self, entries: Any) -> None:
        for key, state in zip(entries["key"].tolist(), entries["state"], strict=True):
            self._states[key] = state

    @staticmethod
    def key(tokens: Sequence[int]) -> bytes:
        """The key of one sequence: blake2b-16 of its token ids as int32."""
        return hashlib.blake2b(np.asarray(tokens, dtype=np.int32).tobytes(), digest_size=KEY_BYTES).digest()

    def __contains__(self, key: bytes) -> bool:
        return key in self._states

    def __len__(self) -> int:
        return len(self._states)

    def get(self, keys: Sequence[bytes]) -> Any:
        """(len(keys), hidden) float32 CPU tensor of cached states."""
        import torch

        return torch.from_numpy(np.stack([self._states[key] for key in keys]))

    def put(self, keys: Sequence[bytes], states: Any) -> None:
        """Store the (len(keys), hidden) STATES of new KEYS, durably, in one frame (known keys are skipped)."""
        rows = states.detach().float().cpu().numpy()
        fresh: dict[bytes, int] = {}
        for index, key in enumerate(keys):
            if key not in self._states:
                fresh.setdefault(key, index)
        if not fresh:
            return
        entries = np.empty(len(fresh), dtype=self.entry)
        entries["key"] = np.frombuffer(b"".join(fresh), dtype=f"V{KEY_BYTES}")
        entries["state"] = rows[list(fresh.values())]
        size = self.entry.itemsize
        data = entries.tobytes()
        self._stream().append([binascii.b2a_base64(data[i : i + size], newline=False)
                               for i in range(0, len(data), size)])
        self._add(entries)

    def _stream(self) -> AppendStream:
        """This process's file: the first one no live process holds (its lock is free), else a new one."""
        if self._writer is None:
            for name in self._files():
                try:
                    self._writer = AppendStream(os.path.join(self.path, name), plain=True)
                    break
                except ValueError:  # another process is appending to it
                    continue
            else:
                self._writer = AppendStream(os.path.join(self.path, f"{host_name()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"), plain=True)
        return self._writer


def cached_groups(cache: StateCache, sequences: Iterable[Sequence[Sequence[int]]]) -> tuple[list[list[bytes]], list[bool]]:
    """Each group's sequence keys, and whether every one of them is cached."""
    keys = [[cache.key(sequence) for sequence in group] for group in sequences]
    if not all(key in cache for group in keys for key in group):
        cache.refresh()
    return keys, [all(key in cache for key in group) for group in keys]
