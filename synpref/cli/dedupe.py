from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import click

from synpref.cli.options import add_options, open_stage, run_stage, stage_options
from synpref.dedupe.exact import KEYS
from synpref.dedupe.minhash import SKETCHES, MinHashParams
from synpref.dedupe.passes import DedupeConfig
from synpref.dedupe.passes import dedupe as dedupe_stage
from synpref.dedupe.workdir import filter_shard, signatures_path, write_decisions, write_signatures
from synpref.io import Shard, StreamError
from synpref.stage import StageOptions


class DefaultRunGroup(click.Group):
    """`synpref dedupe INPUTS...` means `synpref dedupe run INPUTS...`: the one-process mode needs no
    subcommand name; the cluster passes are named."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def config_options(command: Callable) -> Callable:
    """The flags that decide a record's fate (the same for `run` and `signatures`)."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        minhash = MinHashParams(
            num_perm=kwargs.pop("num_perm"),
            ngram=kwargs.pop("ngram"),
            threshold=kwargs.pop("threshold"),
            bands=kwargs.pop("bands") or 0,
            rows=kwargs.pop("rows") or 0,
            seed=kwargs.pop("seed"),
            sketch=kwargs.pop("sketch"),
        )
        try:
            kwargs["config"] = DedupeConfig(
                key=kwargs.pop("key"),
                exact=kwargs.pop("exact"),
                near=kwargs.pop("near"),
                keep=kwargs.pop("keep"),
                minhash=minhash,
                decontaminate=list(kwargs.pop("decontaminate")),
                decontaminate_ngram=kwargs.pop("decontaminate_ngram"),
            )
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        return command(**kwargs)

    flags = [
        click.option(
            "--key",
            type=click.Choice(KEYS),
            default="pair",
            show_default=True,
            help="What makes two records duplicates: the whole pair (conversation, chosen, rejected), the "
            "prompt (conversation) only, or the two replies only.",
        ),
        click.option(
            "--exact/--no-exact", default=True, show_default=True, help="Exact dedup on the normalized key."
        ),
        click.option(
            "--near/--no-near", default=True, show_default=True, help="Near-duplicate dedup (MinHash LSH)."
        ),
        click.option(
            "--threshold",
            type=click.FloatRange(0.0, 1.0, min_open=True),
            default=0.8,
            show_default=True,
            help="Estimated Jaccard similarity of shingle sets above which two records are near duplicates.",
        ),
        click.option(
            "--num-perm",
            type=click.IntRange(8, 1024),
            default=128,
            show_default=True,
            help="MinHash permutations.",
        ),
        click.option(
            "--ngram", type=click.IntRange(1, 64), default=5, show_default=True, help="Words per shingle."
        ),
        click.option("--bands", type=click.IntRange(1), help="LSH bands (default: chosen from --threshold)."),
        click.option(
            "--rows", type=click.IntRange(1), help="Rows per band (default: chosen from --threshold)."
        ),
        click.option(
            "--seed", type=int, default=1, show_default=True, help="Seed of the MinHash permutations."
        ),
        click.option(
            "--sketch",
            type=click.Choice(SKETCHES),
            default="minhash",
            show_default=True,
            help="minhash: --num-perm permutations per shingle, signatures equal to datasketch's. oph: "
            "one-permutation hashing with optimal densification, one hash per shingle into --num-perm "
            "bins: 2.4x faster signatures, as close to the true Jaccard similarity on real pairs, but "
            "not datasketch's values (borderline pairs differ as between two MinHash seeds).",
        ),
        click.option(
            "--keep",
            type=click.Choice(["first", "longest"]),
            default="first",
            show_default=True,
            help="Which record of a near-duplicate cluster stays (longest: most characters, ties to the first).",
        ),
        click.option(
            "--decontaminate",
            "decontaminate",
            multiple=True,
            type=click.Path(exists=True),
            metavar="FILE",
            help="Benchmark prompts (any supported layout or a directory); repeat for several. Drops every pair "
            "whose user turns share a word n-gram with a benchmark prompt.",
        ),
        click.option(
            "--decontaminate-ngram",
            type=click.IntRange(1, 64),
            default=13,
            show_default=True,
            help="Words per n-gram for --decontaminate.",
        ),
    ]
    return add_options(wrapper, flags)


@click.group(cls=DefaultRunGroup, no_args_is_help=False)
def dedupe() -> None:
    """Drop empty, contaminated, exact-duplicate and near-duplicate pairs.

    One process (the default; `run` may be left out):

    \b
        synpref dedupe raw.jsonl.zst --removed removed.jsonl.zst > clean.jsonl.zst
        synpref dedupe --decontaminate arena-hard-questions.jsonl.zst < raw.jsonl.zst > clean.jsonl.zst

    Cluster mode, the same result from independent jobs that merge by files in a work folder
    (bin/dedupe-slurm.sh submits it as SLURM array jobs):

    \b
        synpref dedupe signatures --work W --shard I/N INPUTS...     # N jobs
        synpref dedupe clusters --work W                              # one job
        synpref dedupe filter --work W --shard I/N INPUTS... -o kept-I.jsonl.zst --removed removed-I.jsonl.zst

    Checks, in order; a record gets the reason of the first that drops it:

    \b
      1. content: an empty prompt, chosen or rejected, or chosen == rejected
         (reason empty_prompt / empty_chosen / empty_rejected / chosen_equals_rejected)
      2. --decontaminate: a user turn shares a 13-gram of lower-cased words with a benchmark
         prompt (reason contaminated, with benchmark_id and benchmark_file)
      3. exact: the same normalized --key (lower case, whitespace collapsed), by a 128-bit
         MurmurHash3; the first occurrence stays (reason exact_duplicate, duplicate_of ID)
      4. near: MinHash over word 5-grams, 128 permutations, LSH bands x rows chosen for
         --threshold 0.8 (9 x 13), candidates confirmed by estimated Jaccard, clusters by
         union-find; one record per cluster stays (reason near_duplicate, duplicate_of ID);
         --sketch oph: one-permutation hashing instead of MinHash, for speed

    Words are runs of letters, digits and non-ASCII characters of the lower-cased text.

    Memory: texts are never held. The one-process run keeps per record the signature (4 x
    --num-perm bytes), the exact key hash, a few counters and the id, and peaks at about 4 x
    --num-perm + 360 bytes per record while clustering (measured: 873 bytes per record at 128
    permutations, 1M pairs in 1.0 GiB). It reads its inputs twice; stdin is spooled to a
    temporary zstd file. `clusters` needs the same per record of the whole input; `signatures`
    and `filter` only their shard.

    \b
    Examples:
        synpref cat raw/ | synpref dedupe --decontaminate bench/ --removed removed.jsonl.zst | synpref stats
        synpref dedupe pool.jsonl.zst --key prompt --threshold 0.7 --removed removed.jsonl.zst -o clean.jsonl.zst
        bin/dedupe-slurm.sh submit 64 work/ out/ pool/      # the three cluster passes as SLURM jobs
    """


@dedupe.command("run")
@stage_options(removed=True)
@config_options
def run(stage_options: StageOptions, config: DedupeConfig) -> None:
    """Dedupe in one process (also what `synpref dedupe INPUTS...` runs).

    Every input record goes to stdout (-o) or to --removed with its reason; counts go to stderr.
    With --shard I/N only that shard is read and deduplicated within itself.

    \b
    Examples:
        synpref dedupe run pool.jsonl.zst --removed removed.jsonl.zst -o clean.jsonl.zst
        synpref cat raw/ | synpref dedupe run --no-near --decontaminate bench.jsonl.zst | synpref stats
    """
    stage = open_stage("dedupe", stage_options, rereadable=True)
    run_stage(stage, lambda: dedupe_stage(stage, config))


@dedupe.command("signatures")
@stage_options(output=False)
@config_options
@click.option(
    "--work", required=True, type=click.Path(file_okay=False), help="Folder shared by the three passes."
)
def signatures(stage_options: StageOptions, config: DedupeConfig, work: str) -> None:
    """Cluster pass 1: facts of one shard (exact key hash, MinHash signature, content and benchmark
    status, id) to WORK/signatures-I-of-N.npz. Needs --shard I/N or SLURM array variables.

    With --on-error skip, bad lines are only counted here; the filter pass writes them to --errors.

    \b
    Examples:
        synpref dedupe signatures --work W --shard 3/64 --decontaminate bench/ pool/   # task 3 of 64
        sbatch --array=0-63 --wrap 'synpref dedupe signatures --work W pool/'          # shard from SLURM
        synpref dedupe signatures --work W --shard 0/1 pool/ && synpref dedupe clusters --work W \\
          && synpref dedupe filter --work W --shard 0/1 pool/ --removed removed.jsonl.zst | synpref stats
    """
    shard = stage_options.shard or Shard(0, 1)
    # bad lines are the filter pass's to write; this pass counts them
    on_error = "count" if stage_options.on_error == "skip" else "fail"
    options = dataclasses.replace(stage_options, shard=shard, on_error=on_error, errors=None)
    stage = open_stage("dedupe", options, emits=False)
    run_stage(stage, lambda: write_signatures(stage, config, work, shard))
    click.echo(f"synpref dedupe signatures: wrote {signatures_path(work, shard)}", err=True)


@dedupe.command("clusters")
@click.option(
    "--work", required=True, type=click.Path(file_okay=False, exists=True), help="Folder of the signatures."
)
def clusters(work: str) -> None:
    """Cluster pass 2: merge all WORK/signatures-*-of-N.npz (every shard must be there, all made with
    the same settings) and write every record's fate to WORK/decisions.npz.

    \b
    Examples:
        synpref dedupe clusters --work W        # once, after every signatures task
        sbatch --dependency=afterok:$SIGNATURES_JOB --wrap 'synpref dedupe clusters --work W'
        synpref dedupe clusters --work W && synpref dedupe filter --work W --shard 0/1 pool/ \\
          --removed removed.jsonl.zst | synpref score -m rm/ -o scored.jsonl.zst
    """
    try:
        decisions = write_decisions(work)
    except StreamError as error:
        raise click.ClickException(str(error)) from None
    counts = ", ".join(f"{name} {count}" for name, count in decisions.counts().items())
    click.echo(f"synpref dedupe clusters: {counts}", err=True)


@dedupe.command("filter")
@stage_options(removed=True)
@click.option(
    "--work", required=True, type=click.Path(file_okay=False, exists=True), help="Folder of decisions.npz."
)
def filter_command(stage_options: StageOptions, work: str) -> None:
    """Cluster pass 3: route the records of one shard to kept or --removed by WORK/decisions.npz.
    Give it the same INPUTS and --shard as the signatures pass.

    \b
    Examples:
        synpref dedupe filter --work W --shard 3/64 pool/ --removed removed-3.jsonl.zst -o kept-3.jsonl.zst
        synpref dedupe filter --work W --shard 3/64 pool/ --removed removed-3.jsonl.zst | synpref stats
    """
    stage = open_stage("dedupe", dataclasses.replace(stage_options, shard=stage_options.shard or Shard(0, 1)))
    run_stage(stage, lambda: filter_shard(stage, work))

