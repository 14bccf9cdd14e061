from __future__ import annotations

import click
import orjson

from synpref.cli.options import open_stage, run_stage, stage_options
from synpref.stats import collect_stats, format_table


@click.command()
@stage_options(output=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--tokenizer", type=click.Path(exists=True),
              help="Also report token lengths, with the tokenizer of this model directory or .gguf file.")
def stats(stage_options, as_json, tokenizer) -> None:
    """Summarize a stream: records per source, layout and kind, user-turn counts, length percentiles of
    prompt / chosen / rejected (characters; tokens with --tokenizer), exact duplicate pairs, content
    problems (empty or identical replies), label counts and reward-model score summaries.
    With labels (merged by `synpref cat --labels`), also agreement: Cohen's kappa between human
    annotators (human:*) on the pairs both decided, each human against each LLM judge (llm:*), and
    how often each human prefers the stream's current label (chosen); 'unsure' skips are left out.

    The layout of a record is the public layout it was converted from (`extra.layout`, written by the
    normalizers: shp, nectar, chatbot-arena, ...), or `canonical` for records that came as such; raw
    public files are converted as they are read, so `synpref stats nectar.parquet --pairs all` works.

    \b
    Examples:
        synpref stats pairs.jsonl.zst
        synpref cat shards/ --sample 5000 | synpref stats --json --tokenizer rm/
    """
    count_tokens = None
    if tokenizer:
        from synpref.models.tokenizer import load_tokenizer

        loaded = load_tokenizer(tokenizer)

        def count_tokens(texts: list[str]) -> list[int]:
            return [len(ids) for ids in loaded(texts, add_special_tokens=False)["input_ids"]]

    stage = open_stage("stats", stage_options, emits=False)
    result = run_stage(stage, lambda: collect_stats(stage.records(), count_tokens))
    click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if as_json else format_table(result))
