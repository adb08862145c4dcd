"""The doctor on how turns end: a template that writes the end token twice, several end tokens of which generation
stops on one, a GGUF export that lost the end-of-turn token, chat tokens whose embeddings never trained, stop
strings that skip_special_tokens deletes, and multi-turn labels. Each broken setup is built on purpose from the real SmolLM2 tokenizer and a tiny random
Llama, and must be flagged with the ids and tokens involved, the reason and a fix; a healthy variant must pass."""

from __future__ import annotations

import copy

import pytest
import torch

from playground.doctor import diagnose
from tests.doctor_cases import bundle_of, by_id, doubled_end_template, write_gguf
from tests.support import make_tiny_llama

CHAT = [{"role": "user", "content": "What is the capital of Italy?"}, {"role": "assistant", "content": "Rome."},
        {"role": "user", "content": "And of France?"}, {"role": "assistant", "content": "Paris."}]
# Zephyr-style chat tokens that a base model does not have.
ZEPHYR = ("{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
# ChatML with TRL's {% generation %} markers around the reply only: the end token falls outside the mask.
GENERATION_BLOCK_WITHOUT_END = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}{% if m['role'] == 'assistant' %}"
    "{% generation %}{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture
def tok(tokenizer):
    """A private copy of the real SmolLM2 tokenizer: these tests break it on purpose."""
    return copy.deepcopy(tokenizer)


def only_last_turn_labelled(tokenizer, messages) -> dict:
    """input_ids/labels as a completion-only collator given just the response template builds them: everything
    before the last assistant reply is -100."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    last = [p + len(header) for p in range(len(ids)) if ids[p:p + len(header)] == header][-1]
    end = ids.index(tokenizer.eos_token_id, last)
    return {"input_ids": ids, "labels": [-100] * last + ids[last:end + 1] + [-100] * (len(ids) - end - 1)}


# -- a template that writes the end token twice --------------------------------------------------------------


def test_template_that_appends_eos_after_the_turn_end(tok):
    original = tok.chat_template
    tok.chat_template = doubled_end_template(tok)
    double = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), probe=False))["chat_template_single_end"]
    assert double.status == "warning"
    assert double.data["template_end_run"] == [2, 2]
    assert "['<|im_end|>', '<|im_end|>']" in double.found and "2 end tokens in a row" in double.found
    # The repair was checked by rendering: it is exactly SmolLM2's template again.
    assert double.action == "files"
    assert double.data["repair"]["chat_template"] == original


def test_tokenizer_that_appends_eos_to_a_rendered_conversation(tok):
    tok.add_eos_token = True
    double = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), probe=False))["chat_template_single_end"]
    assert double.status == "warning" and double.action == "retrain"
    assert double.data["template_end_run"] == [2] and double.data["tokenized_trailing_ends"] == [2, 2]
    assert "add_special_tokens=False" in double.fix


# -- several end tokens, generation stops on one ------------------------------------------------------------


def test_qwen_style_text_end_as_eos_with_chatml_turns(tok):
    """Like a Qwen base model fine-tuned on ChatML: EOS <|endoftext|>, turns end with <|im_end|>, both in
    model.config, but the generation config lists only the first."""
    tok.eos_token = "<|endoftext|>"
    model = make_tiny_llama(tok)
    model.config.eos_token_id = [0, 2]
    model.generation_config.eos_token_id = 0
    found = by_id(diagnose(bundle_of(model, tok), probe=False))
    several = found["end_tokens_all_stop"]
    assert several.status == "problem" and several.action == "files"
    assert several.data["missing"] == [2] and several.data["repair"] == {"stop_on": [2]}
    assert "'<|im_end|>' (id 2): the chat template ends assistant turns with it; model.config.eos_token_id - does " \
           "NOT stop" in several.found
    assert "eos_token_id = [0, 2]" in several.fix
    assert found["eos_ids_agree"].status == "warning"  # only the first of several reaches generate()
    assert found["chat_template_eos"].status == "problem"


def test_an_id_only_model_config_lists_is_a_warning(tok):
    model = make_tiny_llama(tok)
    model.config.eos_token_id = [2, 0]
    several = by_id(diagnose(bundle_of(model, tok), probe=False))["end_tokens_all_stop"]
    assert several.status == "warning"
    assert several.data["in_use"][0] == ["model.config.eos_token_id"]


def test_one_stop_id_is_fine_when_nothing_else_ends_a_turn(tok):
    several = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), probe=False))["end_tokens_all_stop"]
    assert several.status == "ok"
    assert several.data["family_not_in_use"] == [0]  # <|endoftext|> is in the vocabulary, unused by SmolLM2


# -- a GGUF export that lost the end-of-turn token -------------------------------------------------------------


def test_gguf_whose_eos_is_the_text_end_and_has_no_eot(tok, tmp_path):
    write_gguf(tmp_path / "lost.gguf", tok, eos=0)
    exported = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), probe=False,
                              gguf=tmp_path / "lost.gguf"))["gguf_end_tokens"]
    assert exported.status == "problem" and exported.action == "files"
    assert exported.data["eos_token_id"] == 0 and exported.data["eot_token_id"] is None
    assert "eos_token_id = '<|endoftext|>' (id 0), eot_token_id = not set" in exported.found
    assert "turn end '<|im_end|>' (id 2) is none of eos/eot/eom" in exported.found
    assert "gguf-new-metadata --special-token-by-id eot 2 lost.gguf fixed.gguf" in exported.fix
    assert exported.data["repair"]["gguf"]["changes"] == {"tokenizer.ggml.eot_token_id": 2}


def test_gguf_with_the_turn_end_as_eot_passes(tok, tmp_path):
    write_gguf(tmp_path / "kept.gguf", tok, eos=0, eot=2)
    exported = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), probe=False,
                              gguf=tmp_path / "kept.gguf"))["gguf_end_tokens"]
    assert exported.status == "ok"


def test_a_model_loaded_from_a_gguf_is_compared_with_its_own_file(tok, tmp_path):
    write_gguf(tmp_path / "lost.gguf", tok, eos=0)
    bundle = bundle_of(make_tiny_llama(tok), tok)
    bundle.info.source = f"gguf {tmp_path / 'lost.gguf'}"  # what load_model records for a .gguf reference
    exported = by_id(diagnose(bundle, probe=False))["gguf_end_tokens"]
    assert exported.status == "problem" and exported.data["path"] == str(tmp_path / "lost.gguf")


def test_gguf_that_is_not_a_gguf_file(tok, tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file")
    exported = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), probe=False,
                              gguf=tmp_path / "broken.gguf"))["gguf_end_tokens"]
    assert exported.status == "problem"
    assert "does not start with 'GGUF'" in exported.found


# -- chat tokens whose embeddings never trained ------------------------------------------------------------------


def _zephyr_base_with_added_tokens(tok):
    """A base model gets Zephyr chat tokens; resize_token_embeddings' default mean_resizing puts their rows on the
    mean of all rows."""
    model = make_tiny_llama(tok)
    tok.add_special_tokens({"eos_token": "<|end|>", "additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    tok.chat_template = ZEPHYR
    model.resize_token_embeddings(len(tok))
    model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
    return model


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lora_without_embeddings_leaves_added_chat_tokens_untrained(tok):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(_zephyr_base_with_added_tokens(tok), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    found = by_id(diagnose(bundle_of(lora, tok, adapter="in-memory LoRA"), probe=False))
    chat = found["chat_tokens_trained"]
    assert chat.status == "problem" and chat.action == "retrain"
    assert chat.data["template_token_ids"] == [49153, 49154]  # <|user|>, <|assistant|>; <|end|> is eos_embedding's
    assert chat.data["rows"]["output:49153"]["mean_distance"] < 0.01
    assert "'<|user|>' (id 49153)" in chat.found and "mean_resizing=True" in chat.found
    assert "trainable_token_indices=[49153, 49154]" in chat.fix
    # The new EOS row sits on the mean too, which the EOS check now sees.
    assert found["eos_embedding"].status == "problem"
    assert "sits on the mean of all rows" in found["eos_embedding"].found


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_rows_trained_through_modules_to_save_pass(tok):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["embed_tokens", "lm_head"])
    lora = get_peft_model(_zephyr_base_with_added_tokens(tok), config)
    with torch.no_grad():  # what training does to the saved copies: the new rows move off the mean
        for layer in (lora.get_input_embeddings(), lora.get_output_embeddings()):
            weight = layer.modules_to_save["default"].weight
            weight[49152:] = torch.randn_like(weight[49152:]) * 0.02
    chat = by_id(diagnose(bundle_of(lora, tok, adapter="in-memory LoRA"), probe=False))["chat_tokens_trained"]
    assert chat.status == "ok", chat.found
    assert chat.data["through_adapter"] is True


# -- stop strings that skip_special_tokens deletes -------------------------------------------------------------


def test_stop_string_that_is_a_special_token(tok):
    model = make_tiny_llama(tok)
    model.generation_config.stop_strings = ["<|im_end|>"]
    configured = by_id(diagnose(bundle_of(model, tok), probe=False))["stop_strings_survive_decoding"]
    assert configured.status == "warning"  # generate() matches tokens; only decoded-text matching misses it
    given = by_id(diagnose(bundle_of(model, tok), probe=False,
                           stop_strings=["<|im_end|>", "\n\nUser:"]))["stop_strings_survive_decoding"]
    assert given.status == "problem" and given.action == "generation"
    rows = {(r["string"], r["source"]): r for r in given.data["stop_strings"]}
    assert rows[("<|im_end|>", "--stop-string")]["found_in_decoded"] is False
    assert rows[("<|im_end|>", "--stop-string")]["decoded_example"] == "Hello."
    assert rows[("\n\nUser:", "--stop-string")]["found_in_decoded"] is True
    assert "['<|im_end|>' (id 2)]" in given.found and "stop_token_ids=[2]" in given.fix


def test_plain_text_stop_strings_pass(tok):
    found = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), probe=False, stop_strings=["\n\n", "User:"]))
    assert found["stop_strings_survive_decoding"].status == "ok"


def test_stop_strings_must_be_strings(tiny):
    with pytest.raises(ValueError, match="stop_strings must be a list of non-empty strings"):
        diagnose(tiny, stop_strings=[""])


# -- multi-turn labels -----------------------------------------------------------------------------------------


def test_labels_that_supervise_only_the_last_turns_end(tok):
    sample = [only_last_turn_labelled(tok, CHAT)]
    found = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), sample=sample, probe=False))
    turns = found["every_turn_end_supervised"]
    assert turns.status == "problem" and turns.action == "retrain"
    assert turns.data["assistant_turns"] == 2 and turns.data["ends_masked"] == 1
    assert turns.data["only_last_turn_supervised"] == 1
    first, second = turns.data["examples"][0]["turns"]
    assert first["end_supervised"] is False and second["end_supervised"] is True
    assert "only the last turn's end is supervised" in turns.found
    assert "labels[start:end + 1] = input_ids[start:end + 1]" in turns.fix


def test_generation_block_that_leaves_out_the_end_token(tok):
    tok.chat_template = GENERATION_BLOCK_WITHOUT_END
    found = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), sample=[{"messages": CHAT}], probe=False))
    turns = found["every_turn_end_supervised"]
    assert turns.status == "problem"
    assert turns.data["no_turn_supervised"] == 1 and turns.data["ends_masked"] == 2
    assert turns.data["examples"][0]["source"] == "the template's {% generation %} mask"
    assert all(t["content_supervised"] for t in turns.data["examples"][0]["turns"])
    assert "although the reply before it is supervised" in turns.found
    assert "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}" in turns.fix
    assert found["sample_ends_with_eos"].status == "ok"  # the EOS is there; it is just never a target


def test_labels_on_every_turns_end_pass(tok):
    ids = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    turns = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), sample=[{"input_ids": ids, "labels": ids}],
                           probe=False))["every_turn_end_supervised"]
    assert turns.status == "ok" and turns.data["assistant_turns"] == 2


def test_conversations_without_labels_cannot_be_judged(tok):
    turns = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), sample=[{"messages": CHAT}],
                           probe=False))["every_turn_end_supervised"]
    assert turns.status == "not_applicable"
    assert "no {% generation %} markers" in turns.found
