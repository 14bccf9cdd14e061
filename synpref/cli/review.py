from __future__ import annotations

import socket

import click

from synpref.io import StreamError
from synpref.review.server import make_server
from synpref.review.session import ANNOTATOR, ReviewSession
from synpref.stage import Stage, StageOptions


@click.command()
@click.argument("streams", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("-o", "--output", "labels_path", required=True, type=click.Path(dir_okay=False),
              help="Label stream to append decisions to (created if missing; an existing one is resumed). "
              "zstd unless the name ends in .jsonl.")
@click.option("--annotator", required=True, callback=lambda ctx, param, value: _annotator(value),
              help="Your name (1-64 letters, digits, '.', '_' or '-'); labels are written as by: human:NAME.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Loopback plus `ssh -L 8765:127.0.0.1:8765 HOST` is the safe way "
              "to review on a remote machine; any other address (e.g. 0.0.0.0 on a cluster login node) "
              "requires the token printed at start.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
def review(streams, labels_path, annotator, host, port) -> None:
    """Serve a keyboard-driven web page on which a human verifies pairs, one at a time (the gold set).

    The page shows the conversation, the two replies side by side in an order drawn per annotator
    and pair (recorded in each label; the page never says which is `chosen`), and the pair's
    `attributes` (task category, objectivity, controversiality, desired attributes, guideline) when
    the records carry them, as the protocol for the decision.

    \b
    Keys:  1 / 2   reply 1 / reply 2 is better
           t       tie
           s       skip: undeterminable (recorded as prefers: unsure)
           u       undo the last decision
           n       type a note, saved with the next decision (Enter returns to the keys)

    Each decision is appended to the label stream at once (write, flush, fsync) as
    {"id", "by": "human:NAME", "prefers": "chosen|rejected|tie|unsure", "meta": {order, key, note,
    time, seconds}}; an undo appends an undo entry. A killed server or a closed tab loses nothing,
    and running the same command again resumes at the first pair this annotator has not labeled.
    Several annotators each write their own label stream over the same pairs; `synpref cat
    --labels` merges them into the pairs and `synpref stats` then reports Cohen's kappa between
    annotators and agreement with LLM labels. The progress line shows how often the decisions so
    far agree with the stream's current label (chosen) and with labels the pairs already carry.

    The pairs are held in memory: review a sample (`synpref cat --sample`), not a whole pool.
    Nothing but the label stream is ever written.

    \b
    Examples:
        synpref cat pool.jsonl.zst --sample 300 --seed 1 -o gold-sample.jsonl.zst
        synpref review gold-sample.jsonl.zst -o gold-alice.labels.jsonl.zst --annotator alice
        synpref cat gold-sample.jsonl.zst --labels gold-alice.labels.jsonl.zst --labels gold-bob.labels.jsonl.zst | synpref stats
    """
    try:
        stage = Stage("review", StageOptions(inputs=list(streams)), emits=False)
        session = ReviewSession(stage.records(), labels_path, annotator)
    except StreamError as error:
        raise click.ClickException(str(error)) from None
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        server = make_server(session, host, port)
    except OSError as error:
        session.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    bound_port = server.server_address[1]
    shown_host = socket.gethostname() if host in ("0.0.0.0", "") else host
    url = f"http://{shown_host}:{bound_port}/" + (f"?token={server.token}" if server.token else "")
    done = len(session.decisions)
    notes = []
    if session.not_pairs:
        notes.append(f"{session.not_pairs} records that are not pairs are not shown")
    if session.unknown_ids:
        notes.append(f"{labels_path} holds labels by {session.by} for {session.unknown_ids} ids not in the input")
    click.echo(f"synpref review: {len(session.pairs)} pairs, {done} already labeled by {session.by}; "
               f"labels go to {labels_path}" + "".join(f"\nsynpref review: {note}" for note in notes), err=True)
    click.echo(f"synpref review: open {url}  (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        session.close()
    click.echo(f"synpref review: stopped; {len(session.decisions)} of {len(session.pairs)} pairs labeled "
               f"by {session.by} in {labels_path}", err=True)


def _annotator(name: str) -> str:
    if not ANNOTATOR.fullmatch(name):
        raise click.BadParameter(f"{name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name
