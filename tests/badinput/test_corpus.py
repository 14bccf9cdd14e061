"""Every kind of bad input (tests/badinput, docs/bad-input.md) through every command that reads records.

Under --on-error fail each kind must end the run with a clear error that names the file, the line
(where there is one) and the field (where there is one): exit status 1 or 2, no traceback. Under
--on-error skip, one run over all kinds at once must exit 0, report each kind's error at its place
in --errors, and write every valid record to an output: nothing is lost silently.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from synpref.cli import cli
from synpref.io import StreamError, read_json_records, write_records
from synpref.io.resume import resume_path
from synpref.review import ReviewSession
from synpref.stage import Stage, StageOptions

from . import (  # the corpus generator of this package
    KINDS,
    SPECS,
    Kind,
    Writer,
    deep_json_array,
    real_pairs,
    write_corpus,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Kind]:
    return write_corpus(tmp_path_factory.mktemp("badinput"))


def _ids(*paths: Path) -> list[str]:
    return [record["id"] for path in paths if path.exists() for record in read_json_records(str(path))]


# Each command: (arguments for INPUTS writing into folder OUT, the ids of the records it wrote there).
Arguments = Callable[[list[str], Path], list[str]]
Outputs = Callable[[Path], list[str]]
COMMANDS: dict[str, tuple[Arguments, Outputs | None]] = {
    "cat": (lambda inputs, out: ["cat", *inputs, "-o", str(out / "kept.jsonl")], lambda out: _ids(out / "kept.jsonl")),
    "stats": (lambda inputs, out: ["stats", *inputs, "--json"], None),
    "dedupe": (lambda inputs, out: ["dedupe", *inputs, "-o", str(out / "kept.jsonl"), "--removed",
                                    str(out / "removed.jsonl")],
               lambda out: _ids(out / "kept.jsonl", out / "removed.jsonl")),
    "eval pairs": (lambda inputs, out: ["eval", "pairs", *inputs, "--length-baseline", "--resamples", "10",
                                        "--scored", str(out / "scored.jsonl")], lambda out: _ids(out / "scored.jsonl")),
    "filter-consistent": (lambda inputs, out: ["filter-consistent", *inputs, "--gold", "gold", "--rm", "rm",
                                               "-o", str(out / "kept.jsonl"), "--removed", str(out / "removed.jsonl")],
                          lambda out: _ids(out / "kept.jsonl", out / "removed.jsonl")),
    "route": (lambda inputs, out: ["route", *inputs, "--rm", "rm", "--confident", str(out / "sure.jsonl"),
                                   "--unconfident", str(out / "judge.jsonl")],
              lambda out: _ids(out / "sure.jsonl", out / "judge.jsonl")),
}


def _problems_with_failure(kind: Kind, output: str, exit_code: int, exception: BaseException | None) -> list[str]:
    """What is wrong with how a run stopped on KIND (empty: a clear, located error)."""
    problems = []
    if exception is not None and not isinstance(exception, SystemExit):
        problems.append(f"raised {type(exception).__name__}: {exception}")
    if exit_code not in (1, 2):
        problems.append(f"exit status {exit_code}")
    if "Traceback" in output:
        problems.append("a traceback")
    if kind.located() not in output:
        problems.append(f"no {kind.located()!r} in the message")
    if kind.field is not None and f"field '{kind.field}'" not in output:
        problems.append(f"no field '{kind.field}' in the message")
    return problems


def _report(problems: dict[str, list[str]], outputs: dict[str, str]) -> str:
    return "\n".join(f"{name}: {'; '.join(found)}\n    {outputs.get(name, '').strip()[-300:]}"
                     for name, found in problems.items())


def _fail_on_every_kind(corpus: list[Kind], tmp_path: Path, args: Callable[[Kind, Path], list[str]]) -> None:
    runner = CliRunner()
    problems, outputs = {}, {}
    for kind in corpus:
        out = tmp_path / kind.name
        out.mkdir()
        result = runner.invoke(cli, args(kind, out))
        outputs[kind.name] = result.output
        found = _problems_with_failure(kind, result.output, result.exit_code, result.exception)
        if found:
            problems[kind.name] = found
    assert not problems, _report(problems, outputs)


def _check_errors(corpus: list[Kind], errors_path: Path) -> None:
    """The --errors stream holds each kind's error, at its file, line and field, and nothing else."""
    entries = list(read_json_records(str(errors_path)))
    problems = {}
    for kind in corpus:
        mine = [entry for entry in entries if entry["file"] == kind.file]
        wanted = {"file": kind.file, "line": kind.line, "field": kind.field}
        if len(mine) != 1 or {key: mine[0][key] for key in wanted} != wanted:
            problems[kind.name] = [f"errors {[{k: e[k] for k in wanted} for e in mine]}, wanted {wanted}"]
    assert not problems, _report(problems, {})
    assert len(entries) == len(corpus)


def _valid_ids(corpus: list[Kind]) -> Counter[str]:
    return Counter(record_id for kind in corpus for record_id in kind.valid)


def _skip_every_kind(corpus: list[Kind], tmp_path: Path, args: Arguments) -> Result:
    """One run over every kind under --on-error skip: exit 0, no traceback, each kind's error at its
    place in --errors, and their count on stderr."""
    errors = tmp_path / "errors.jsonl"
    result = CliRunner().invoke(cli, [*args([kind.input for kind in corpus], tmp_path), "--on-error", "skip",
                                      "--errors", str(errors)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output[-2000:]
    _check_errors(corpus, errors)
    assert f"errors {len(corpus)}" in result.stderr
    return result


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_kind_fails_with_file_line_and_field(corpus, tmp_path, command):
    args, _ = COMMANDS[command]
    _fail_on_every_kind(corpus, tmp_path, lambda kind, out: args([kind.input], out))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_skip_keeps_every_valid_record_and_reports_every_kind(corpus, tmp_path, command):
    args, outputs = COMMANDS[command]
    result = _skip_every_kind(corpus, tmp_path, args)
    if outputs is not None:
        assert Counter(outputs(tmp_path)) == _valid_ids(corpus)
    else:  # stats: the records it counted
        assert orjson.loads(result.stdout)["records"] == sum(_valid_ids(corpus).values())


@pytest.mark.parametrize("levels", [255, 256, 257, 258, 259, 260, 300, 1100])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "records"])
def test_cat_locates_a_json_array_element_nested_too_deep(tmp_path, levels, raw):
    """`cat --raw` writes a .json array's rows back with orjson, which writes at most 254 levels: a
    deeper row is a bad line naming its field, as a record is, and the rows beside it come out."""
    kind = deep_json_array(Writer(tmp_path, f"deep-{levels}", real_pairs(), ""), levels)
    flags = ["--raw"] if raw else []
    failed = CliRunner().invoke(cli, ["cat", *flags, kind.input, "-o", str(tmp_path / "failed.jsonl")])
    assert not _problems_with_failure(kind, failed.output, failed.exit_code, failed.exception), failed.output
    errors = tmp_path / "errors.jsonl"
    skipped = CliRunner().invoke(cli, ["cat", *flags, kind.input, "-o", str(tmp_path / "kept.jsonl"),
                                       "--on-error", "skip", "--errors", str(errors)])
    assert skipped.exit_code == 0 and "Traceback" not in skipped.output, skipped.output[-2000:]
    _check_errors([kind], errors)
    assert _ids(tmp_path / "kept.jsonl") == kind.valid and len(kind.valid) == 2


def test_review_loader(corpus, tmp_path):
    """`synpref review` loads its pairs through a Stage into a ReviewSession before serving."""
    problems = {}
    for kind in corpus:
        try:
            ReviewSession(Stage("review", StageOptions(inputs=[kind.input])).records(),
                          str(tmp_path / f"{kind.name}.labels.jsonl"), "ann").close()
        except StreamError as error:
            found = _problems_with_failure(kind, str(error), 1, None)
        except Exception as error:  # noqa: BLE001 - any other error is what this test looks for
            found = [f"raised {type(error).__name__}: {error}"]
        else:
            found = ["loaded without an error"]
        if found:
            problems[kind.name] = found
    assert not problems, _report(problems, {})
    errors = tmp_path / "errors.jsonl"
    stage = Stage("review", StageOptions(inputs=[kind.input for kind in corpus], on_error="skip", errors=str(errors)))
    with stage:
        session = ReviewSession(stage.records(), str(tmp_path / "all.labels.jsonl"), "ann")
    session.close()
    _check_errors(corpus, errors)
    assert Counter(pair["id"] for pair in session.pairs) == _valid_ids(corpus)


@pytest.fixture(scope="module")
def scorer(smollm2_rm):
    from synpref.engines.reward import RewardScorer

    return RewardScorer(smollm2_rm, max_length=64)


@pytest.mark.slow
def test_score(corpus, tmp_path, smollm2_rm, scorer, monkeypatch):
    """The model is loaded once: the command's own RewardScorer is the one already loaded."""
    import synpref.engines.reward
    import synpref.score  # imported before the patch: it keeps the real class for its isinstance check

    monkeypatch.setattr(synpref.engines.reward, "RewardScorer", lambda *args, **options: scorer)

    def args(inputs: list[str], out: Path) -> list[str]:
        return ["score", "-m", str(smollm2_rm), "--max-length", "64", *inputs, "-o", str(out / "scored.jsonl")]

    _fail_on_every_kind(corpus, tmp_path, lambda kind, out: args([kind.input], out))
    _skip_every_kind(corpus, tmp_path, args)
    scored = list(read_json_records(str(tmp_path / "scored.jsonl")))
    assert Counter(record["id"] for record in scored) == _valid_ids(corpus)
    assert all(0 < record["scores"][smollm2_rm.name]["p"] < 1 for record in scored)


@pytest.fixture(scope="module")
def judge_engine(smollm2_lm):
    from synpref.engines.torch_generate import TorchGenerationEngine

    return TorchGenerationEngine(str(smollm2_lm), device="cpu")


@pytest.mark.slow
def test_annotate(corpus, tmp_path, smollm2_lm, judge_engine, monkeypatch):
    """`annotate verify` on the real SmolLM2, loaded once. The three tasks read records through one
    stage (annotate_stage, with its resume file under -o); verify is the one that costs nothing on
    the valid records, which have no attributes.objectivity and pass through unchanged."""
    import synpref.annotate
    from synpref.annotate import Caller

    monkeypatch.setattr(synpref.annotate, "open_models",
                        lambda specs, engine, meter, **options: [Caller("smollm2", judge_engine, meter)])

    def args(inputs: list[str], out: Path) -> list[str]:
        return ["annotate", "verify", "-m", f"smollm2={smollm2_lm}", "--device", "cpu", *inputs,
                "-o", str(out / "verified.jsonl")]

    _fail_on_every_kind(corpus, tmp_path, lambda kind, out: args([kind.input], out))
    result = _skip_every_kind(corpus, tmp_path, args)
    assert Counter(_ids(tmp_path / "verified.jsonl")) == _valid_ids(corpus)
    assert f"skipped_no_objectivity {sum(_valid_ids(corpus).values())}" in result.stderr
    assert not os.path.exists(resume_path(str(tmp_path / "verified.jsonl")))  # removed after a clean run


@pytest.fixture(scope="module")
def embedder():
    from synpref.retrieve import load_embedder

    return load_embedder(max_tokens=32)


@pytest.fixture
def one_embedder(embedder, monkeypatch):
    """Every `synpref retrieve` of the test embeds with the real all-MiniLM-L6-v2 loaded once."""
    import synpref.retrieve

    monkeypatch.setattr(synpref.retrieve, "load_embedder", lambda *args, **options: embedder)
    return embedder


def _index_ids(directory: Path) -> list[str]:
    from synpref.retrieve import RetrievalIndex

    index = RetrievalIndex(str(directory))
    return [index.record_id(row) for row in range(len(index))]


@pytest.mark.slow
def test_retrieve_build(corpus, tmp_path, one_embedder):
    """`retrieve --pool`: the pool it indexes is every valid record of every kind."""
    def args(inputs: list[str], out: Path) -> list[str]:
        return ["retrieve", *(part for path in inputs for part in ("--pool", path)), "--index", str(out / "idx")]

    _fail_on_every_kind(corpus, tmp_path, lambda kind, out: args([kind.input], out))
    _skip_every_kind(corpus, tmp_path, args)
    assert Counter(_index_ids(tmp_path / "idx")) == _valid_ids(corpus)


@pytest.mark.slow
def test_retrieve_queries(corpus, tmp_path, one_embedder):
    """`retrieve --index DIR QUERIES` over an index of real pairs: every valid query gets examples."""
    from synpref.retrieve import build_index

    pool = real_pairs()
    write_records([{**next(pool), "id": f"pool-{i}"} for i in range(8)], str(tmp_path / "pool.jsonl"))
    with Stage("retrieve", StageOptions(inputs=[str(tmp_path / "pool.jsonl")]), emits=False) as stage:
        build_index(stage, str(tmp_path / "idx"), one_embedder)

    def args(inputs: list[str], out: Path) -> list[str]:
        return ["retrieve", "--index", str(tmp_path / "idx"), "--k-max", "2", *inputs,
                "-o", str(out / "with-examples.jsonl")]

    _fail_on_every_kind(corpus, tmp_path, lambda kind, out: args([kind.input], out))
    _skip_every_kind(corpus, tmp_path, args)
    queries = list(read_json_records(str(tmp_path / "with-examples.jsonl")))
    assert Counter(query["id"] for query in queries) == _valid_ids(corpus)
    assert all(len(query["extra"]["examples"]) == 2 for query in queries)


@pytest.fixture
def train_rm(tmp_path, smollm2_rm, monkeypatch):
    """Runs `synpref train-rm` on one kind's input, the tokenizer (which reading pairs needs) loaded
    once, and the model never: loading it is an AssertionError, as the bad input must come first."""
    import synpref.models.tokenizer
    import synpref.train_rm

    tokenizer = synpref.models.tokenizer.load_tokenizer(str(smollm2_rm))
    monkeypatch.setattr(synpref.models.tokenizer, "load_tokenizer", lambda path: tokenizer)

    def no_model(*args, **options):
        raise AssertionError("train-rm loaded the model before it found the bad input")

    monkeypatch.setattr(synpref.train_rm, "RewardModelTrainer", no_model)
    gold = tmp_path / "gold.jsonl"
    pairs = real_pairs()
    write_records([{**next(pairs), "id": f"gold-{i}"} for i in range(4)], str(gold))
    runner = CliRunner()

    def run(kind: Kind):
        out = tmp_path / kind.name
        return runner.invoke(cli, ["train-rm", "-m", str(smollm2_rm), "--train", kind.input, "--gold", str(gold),
                                   "-o", str(out / "run")])

    return run


@pytest.mark.slow
def test_train_rm_finds_bad_input_before_it_loads_the_model(corpus, train_rm):
    """train-rm has no --on-error: each kind must stop it, with a located error, before the model loads."""
    problems, outputs = {}, {}
    for kind in corpus:
        if os.path.isdir(kind.input):
            continue  # test_train_rm_on_folders_of_shards
        result = train_rm(kind)
        outputs[kind.name] = result.output
        found = _problems_with_failure(kind, result.output, result.exit_code, result.exception)
        if found:
            problems[kind.name] = found
    assert not problems, _report(problems, outputs)


@pytest.mark.slow
def test_train_rm_on_folders_of_shards(corpus, train_rm):
    """A folder of shards is hashed file by file for the resume fingerprint, and its bad files are
    reported like any other input's."""
    kinds = [kind for kind in corpus if os.path.isdir(kind.input)]
    assert kinds
    for kind in kinds:
        result = train_rm(kind)
        assert not _problems_with_failure(kind, result.output, result.exit_code, result.exception), kind.name


def test_the_corpus_has_every_kind_and_the_docs_list_them(corpus):
    assert len(SPECS) >= 50 and len(KINDS) == len(SPECS)
    made = {kind.name for kind in corpus}
    assert made == {spec.name for spec in SPECS if spec.needs != "non-root" or os.geteuid() != 0}
    docs = (REPO / "docs" / "bad-input.md").read_text()
    missing = [name for name in KINDS if f"`{name}`" not in docs]
    assert not missing, f"docs/bad-input.md does not list {missing}"
    commands = [*COMMANDS, "score", "review", "train-rm", "annotate", "retrieve"]  # the tests below COMMANDS
    assert not [name for name in commands if f"`{name}`" not in docs], "docs/bad-input.md lists the commands"
    assert sum(len(kind.valid) for kind in corpus) >= len(corpus) - 2  # valid records beside almost every kind
