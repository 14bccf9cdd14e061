from __future__ import annotations

from typing import Any

import click

from synpref.cat import cat_stream
from synpref.cli.options import open_stage, run_stage, stage_options
from synpref.io import StreamError
from synpref.labels import load_labels
from synpref.records import RecordError, layouts_table
from synpref.records.core import check_nesting


def check_raw_row(row: Any) -> None:
    """--raw writes a row parsed from a .json array or parquet (or merged with labels) back with
    orjson, which cannot write one nested past 254 levels or an integer beyond 64 bits as it was
    read: such a row is a bad line like a record's, naming its field (MAX_DEPTH, 200 levels)."""
    if type(row) is dict:
        check_nesting(row)
        return
    try:
        check_nesting({"": row})
    except RecordError as error:  # not an object: there is no field to name
        raise RecordError(str(error)) from None


def _list_layouts(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(layouts_table())
        ctx.exit()


@click.command()
@click.option("--layouts", is_flag=True, expose_value=False, is_eager=True, callback=_list_layouts,
              help="List the layouts rows are read in, with the fields each expects, and exit.")
@stage_options()
@click.option("--head", "head_count", type=click.IntRange(min=0), help="Stop after N records.")
@click.option("--sample", "sample_count", type=click.IntRange(min=0), help="Reservoir-sample N records.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --sample.")
@click.option("--raw", is_flag=True, help="Pass rows as they are, without converting to canonical records.")
@click.option("--labels", "label_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Merge this label stream (from `synpref review`) into the pairs' `labels` by id; repeat "
              "for several annotators. A label replaces an earlier one by the same annotator.")
def cat(stage_options, head_count, sample_count, seed, raw, label_files) -> None:
    """Concatenate streams and convert any supported layout to canonical zstd JSONL.

    Reads canonical records, HH-RLHF transcripts, prompt/chosen/rejected strings (RewardBench),
    chosen/rejected message lists (TRL / Skywork) and the public sets as published: Stanford SHP,
    PKU-SafeRLHF, Chatbot Arena / Arena-Human-Preference, HelpSteer2/3 preference, Nectar, raw
    UltraFeedback, OpenAI preference fine-tuning JSONL, RM-Bench and RewardBench 2 (`--layouts` lists
    them with their fields). Each row is recognized by its fields; a row with the fields of two
    layouts fails naming both unless --layout says which. Converted records keep the source's ids and
    label fields in `extra` (with `extra.layout`), and a `labels` entry saying who labeled them.
    Rows that are not pairs (prompt-only or answer files) pass through unchanged.

    A row may become several records (ranked lists by --pairs, RM-Bench's 9 style pairs, RewardBench 2's
    chosen x rejected), counted as `expanded`; candidate pairs left out because tied are counted as
    `skipped_tied_pairs`; a row that becomes no record is counted as `diverted_REASON` and written to
    --diverted. So kept = read + expanded - diverted (without --head/--sample and errors).
    --sample keeps input order and is reproducible for a given --seed; it holds N records in memory.

    \b
    Examples:
        synpref cat hh-rlhf/train.jsonl.gz -o hh.jsonl.zst
        synpref cat nectar/ --pairs all -o nectar-pairs.jsonl.zst
        synpref cat arena.parquet --ties drop --diverted arena-dropped.jsonl.zst -o arena.jsonl.zst
        synpref cat shards/ --sample 1000 --seed 7 | synpref stats
        synpref cat gold.jsonl.zst --labels alice.labels.jsonl.zst --labels bob.labels.jsonl.zst | synpref stats
    """
    stage = open_stage("cat", stage_options)
    try:
        labels = load_labels(label_files)
    except StreamError as error:
        raise click.ClickException(str(error)) from None

    def work() -> None:
        items = stage.records_with_bytes(normalized=not raw, check=check_raw_row if raw else None)
        for record, original in cat_stream(items, head_count, sample_count, seed,
                                           labels if label_files else None, stage.counts):
            stage.emit(record, original)

    run_stage(stage, work)
