from __future__ import annotations

import click

from synpref.cat import cat_stream
from synpref.cli.options import open_stage, run_stage, stage_options
from synpref.io import StreamError
from synpref.labels import load_labels


@click.command()
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

    Accepts HH-RLHF transcripts, prompt/chosen/rejected strings, chosen/rejected message lists
    (TRL / Skywork style), RewardBench rows and canonical records; rows that are not pairs
    (prompt-only or answer files) pass through unchanged. --sample keeps input order and is
    reproducible for a given --seed; it holds N records in memory.

    \b
    Examples:
        synpref cat hh-rlhf/train.jsonl.gz -o hh.jsonl.zst
        synpref cat shards/ --sample 1000 --seed 7 | synpref stats
        synpref cat gold.jsonl.zst --labels alice.labels.jsonl.zst --labels bob.labels.jsonl.zst | synpref stats
    """
    stage = open_stage("cat", stage_options)
    try:
        labels = load_labels(label_files)
    except StreamError as error:
        raise click.ClickException(str(error)) from None

    def work() -> None:
        items = stage.records_with_bytes(normalized=not raw)
        for record, original in cat_stream(items, head_count, sample_count, seed,
                                           labels if label_files else None, stage.counts):
            stage.emit(record, original)

    run_stage(stage, work)
