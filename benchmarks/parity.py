"""Behaviour parity with an earlier commit: the same commands, run by both versions, must write the
same bytes. Kept for refactors (issue 11's bar): `score` on real pairs in fp32 and with
`--quantize bf16`, and `dedupe` (kept and removed streams) on every pair file of the data folder.

    python benchmarks/parity.py --against a16e68c            # ../shared/data, 200 pairs for score
    python benchmarks/parity.py --against main --pairs 50 --data examples/data

Each version runs as `python -m synpref` imported from its own checkout (a temporary git worktree of
--against), ahead of any editable install. Outputs are compared decompressed, byte for byte. Exits 1 on a difference.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"


# Runs `synpref ARGS` from the checkout in argv[1], ahead of an editable install's import hook.
BOOT = """import runpy, sys
root = sys.argv.pop(1)
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path.insert(0, root)
import synpref
assert synpref.__file__.startswith(root), synpref.__file__
sys.argv[0] = "synpref"
runpy.run_module("synpref", run_name="__main__", alter_sys=True)
"""


def _run(root: Path, arguments: list[str]) -> None:
    subprocess.run([sys.executable, "-c", BOOT, str(root), *arguments], check=True, capture_output=True)


def _content(path: Path) -> bytes | None:
    """The decompressed bytes of an output, None when the command wrote none (e.g. nothing removed)."""
    if not path.exists():
        return None
    data = path.read_bytes()
    return zstandard.ZstdDecompressor().decompressobj().decompress(data) if data[:4] == b"\x28\xb5\x2f\xfd" else data


def _is_pair_file(path: Path) -> bool:
    from synpref.io import iter_raw
    from synpref.records import is_pair, normalize

    first = next(iter_raw(str(path)), None)
    try:
        return first is not None and is_pair(normalize(first.parse()))
    except ValueError:
        return False


def _model(work: Path) -> Path:
    from synpref.models.locate import smollm2_gguf
    from synpref.models.reward import init_reward_model

    return init_reward_model(smollm2_gguf(), work / "rm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, help="commit (or branch) to compare with")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of .jsonl.zst files")
    parser.add_argument("--pairs", type=int, default=200, help="pairs of hh-harmless-base-test for score")
    parser.add_argument("--skip-score", action="store_true")
    args = parser.parse_args()

    data = Path(args.data)
    with tempfile.TemporaryDirectory(prefix="synpref-parity-") as temp:
        work = Path(temp)
        other = work / "other"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(other), args.against],
                       check=True, capture_output=True)
        try:
            checks: list[tuple[str, list[str], list[str]]] = []  # (name, command with {out}, outputs)
            if not args.skip_score:
                pairs = work / "pairs.jsonl.zst"
                _run(REPO, ["cat", str(data / "hh-harmless-base-test.jsonl.zst"), "--head", str(args.pairs),
                            "-o", str(pairs)])
                model = _model(work)
                for label, extra in (("fp32", []), ("bf16", ["--quantize", "bf16"])):
                    checks.append((f"score {label} ({args.pairs} pairs)",
                                   ["score", "-m", str(model), str(pairs), "-o", "{out}/scored.jsonl.zst", *extra],
                                   ["scored.jsonl.zst"]))
            for path in sorted(data.glob("*.jsonl.zst")):
                if _is_pair_file(path):
                    checks.append((f"dedupe {path.name}",
                                   ["dedupe", str(path), "-o", "{out}/kept.jsonl.zst",
                                    "--removed", "{out}/removed.jsonl.zst"],
                                   ["kept.jsonl.zst", "removed.jsonl.zst"]))
            failed = 0
            for number, (name, command, outputs) in enumerate(checks):
                results = []
                for side, root in (("this", REPO), ("other", other)):
                    out = work / f"{number}-{side}"
                    out.mkdir()
                    _run(root, [part.replace("{out}", str(out)) for part in command])
                    results.append([_content(out / output) for output in outputs])
                same = results[0] == results[1]
                failed += not same
                size = sum(len(content or b"") for content in results[0])
                print(f"{'same' if same else 'DIFFERENT':>9}  {name}  ({size:,} bytes)", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(other)], check=False)
    print(f"{len(checks) - failed} of {len(checks)} checks identical to {args.against}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
