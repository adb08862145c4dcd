"""EOS doctor: each broken setup is built on purpose from the real tokenizer / a tiny model and must be flagged;
the real embedded SmolLM2 must get the verdicts that are actually true for it."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from playground.cli import main as cli_main
from playground.doctor import STATUS_ICONS, diagnose, report_json, report_markdown
from tests.doctor_cases import bundle_of, by_id
from tests.support import make_tiny_llama

NO_EOS_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QA_SAMPLE = [
    {"prompt": "What is the capital of Italy?", "response": "Rome."},
    {"prompt": "What is 2 + 2?", "response": "2 + 2 is 4."},
    {"prompt": "Name a fruit.", "response": "An apple is a fruit."},
]


@pytest.fixture
def tok(tokenizer):
    """A private copy of the real SmolLM2 tokenizer: these tests break it on purpose."""
    return copy.deepcopy(tokenizer)


@pytest.fixture(scope="module")
def smollm_findings(smollm):
    return by_id(diagnose(smollm))


# -- the real embedded model -------------------------------------------------------------------------


def test_embedded_smollm_is_healthy_except_pad_equal_to_eos(smollm_findings):
    found = smollm_findings
    assert len(found) == 24
    for check in ("eos_ids_agree", "end_tokens_all_stop", "gguf_end_tokens", "eos_string_splits",
                  "tokenizer_appends_eos", "chat_template_eos", "chat_template_single_end",
                  "generation_config_blocks_eos", "eos_embedding", "chat_tokens_trained", "p_eos_at_answer_end",
                  "bos_eos_doubled"):
        assert found[check].status == "ok", (check, found[check].found)
    for check in ("stop_strings_survive_decoding", "adapter_trains_new_tokens", "sample_ends_with_eos",
                  "truncation_keeps_eos", "every_turn_end_supervised", "format_matches_inference",
                  "packing_separates_samples", "labels_aligned", "artifacts_agree", "penalty_spares_eos",
                  "stopping_kept"):
        assert found[check].status == "not_applicable", (check, found[check].found)
    # The embedded GGUF's own metadata is read: its EOS is the template's turn end.
    assert found["gguf_end_tokens"].data["eos_token_id"] == 2
    assert found["gguf_end_tokens"].data["path"].endswith(".gguf")
    assert found["chat_tokens_trained"].data["template_token_ids"] == [1]  # <|im_start|>
    # SmolLM2 really ships pad_token == eos_token == <|im_end|>: fine for generation, a trap for fine-tuning.
    pad = found["pad_is_eos"]
    assert pad.status == "warning"
    assert "'<|im_end|>' (id 2)" in pad.found
    assert pad.data["eos_label_masked"] == pad.data["collated"] > 0
    # Its unknown token <|endoftext|> is an end token too, and <|im_start|> is in the template: pad with id 3.
    assert "tokenizer.pad_token = '<repo_name>'" in pad.fix
    assert pad.action == "files" and pad.data["repair"] == {"pad_token": "<repo_name>"}
    assert found["chat_template_eos"].data["tail_ids"][0] == 2
    # The instruct model has learned to stop after short complete answers.
    p_eos = found["p_eos_at_answer_end"]
    assert p_eos.data["median"] > 0.1
    assert p_eos.data["stop_ids"] == [2]


# -- pad == EOS ---------------------------------------------------------------------------------------


def test_pad_equal_to_eos_masks_the_eos_label_of_the_sample(tok):
    model = make_tiny_llama(tok)
    found = by_id(diagnose(bundle_of(model, tok), sample=QA_SAMPLE, probe=False))
    pad = found["pad_is_eos"]
    assert pad.status == "problem"
    assert pad.data == {"pad_token_id": 2, "collated": 3, "eos_label_masked": 3, "eos_appended": 0,
                        "repair": {"pad_token": "<repo_name>"}}
    assert "became -100 in 3 of 3." in pad.found

    tok.pad_token = tok.unk_token  # the suggested fix
    fixed = by_id(diagnose(bundle_of(model, tok), sample=QA_SAMPLE, probe=False))["pad_is_eos"]
    assert fixed.status == "ok"
    assert fixed.data["pad_token_id"] == 0


# -- EOS as a string that splits (the ChatGLM2 '</s>' story) ------------------------------------------


def test_eos_string_that_is_not_a_token_is_flagged(tok):
    tok.eos_token = "</s>"  # not in SmolLM2's vocabulary: the text splits into '</', 's', '>'
    model = make_tiny_llama(tok)
    sample = [{"text": "Q: Capital of Italy?\nA: Rome.</s>"}, {"text": "Q: 2 + 2?\nA: 4.</s>"}]
    found = by_id(diagnose(bundle_of(model, tok), sample=sample, probe=False))
    splits = found["eos_string_splits"]
    assert splits.status == "problem"
    assert tok.convert_ids_to_tokens(splits.data["alone"]) == ["</", "s", ">"]
    assert "'</', 's', '>'" in splits.found
    assert "unknown token" in splits.found
    assert "[tokenizer.eos_token_id]" in splits.fix
    ends = found["sample_ends_with_eos"]
    assert ends.status == "problem"
    assert ends.data["end_with_eos"] == 0 and ends.data["eos_as_text_not_id"] == 2
    assert "end with the text '</s>'" in ends.found


# -- chat template ----------------------------------------------------------------------------------


def test_sample_that_writes_another_models_eos_string(tok):
    sample = [{"text": "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"},
              {"text": "Q: Hi?\nA: Hello!</s>"}]
    ends = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), sample=sample, probe=False))["sample_ends_with_eos"]
    assert ends.status == "problem"  # 1 of 2 missing
    assert ends.data["end_with_eos"] == 1 and ends.data["eos_as_text_not_id"] == 1
    assert "'</s>', which tokenises as ['</', 's', '>']" in ends.found
    assert "this tokenizer's EOS is '<|im_end|>'" in ends.found


def test_template_that_does_not_end_assistant_turns_with_eos(tok):
    tok.chat_template = NO_EOS_TEMPLATE
    found = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), sample=QA_SAMPLE, probe=False))
    template = found["chat_template_eos"]
    assert template.status == "problem"
    assert template.data["end_id"] is None
    assert "No EOS/end token follows" in template.found
    assert "eos_token" in template.fix
    ends = found["sample_ends_with_eos"]
    assert ends.status == "problem"
    assert ends.data["fraction_end_with_eos"] == 0.0


# -- generation config -------------------------------------------------------------------------------


def test_generation_config_stopping_on_a_different_id_than_the_tokenizer(tok):
    model = make_tiny_llama(tok)
    model.generation_config.eos_token_id = 0  # <|endoftext|>, while tokenizer and template use <|im_end|>
    found = by_id(diagnose(bundle_of(model, tok), probe=False))
    agree = found["eos_ids_agree"]
    assert agree.status == "problem"
    assert "'<|im_end|>' (id 2) is not among the ids generation stops on" in agree.found
    assert "eos_token_id = [0, 2]" in agree.fix
    template = found["chat_template_eos"]
    assert template.status == "problem"
    assert template.data["end_id"] == 2 and template.data["stop_ids"] == [0]


def test_only_the_first_of_several_config_eos_ids_reaches_generation(tok):
    model = make_tiny_llama(tok)
    model.config.eos_token_id = [2, 0]
    model.generation_config.eos_token_id = 2
    agree = by_id(diagnose(bundle_of(model, tok), probe=False))["eos_ids_agree"]
    assert agree.status == "warning"
    assert "only the first of several EOS ids" in agree.found
    assert "eos_token_id = [2, 0]" in agree.fix


def test_generation_config_without_any_eos_never_stops(tok):
    model = make_tiny_llama(tok)
    model.generation_config.eos_token_id = None
    agree = by_id(diagnose(bundle_of(model, tok), probe=False))["eos_ids_agree"]
    assert agree.status == "problem"
    assert "only stops at max_new_tokens" in agree.found


def test_suppress_tokens_ban_eos_and_min_new_tokens_delay_it(tok):
    model = make_tiny_llama(tok)
    model.generation_config.suppress_tokens = [5, 2]
    banned = by_id(diagnose(bundle_of(model, tok), probe=False))["generation_config_blocks_eos"]
    assert banned.status == "problem"
    assert "suppress_tokens contains ['<|im_end|>' (id 2)]" in banned.found

    model.generation_config.suppress_tokens = None
    model.generation_config.min_new_tokens = 50
    delayed = by_id(diagnose(bundle_of(model, tok), probe=False))["generation_config_blocks_eos"]
    assert delayed.status == "warning"
    assert "first 50 new tokens" in delayed.found


# -- embeddings and adapters -------------------------------------------------------------------------


def _model_with_added_eos(tok, seed: int = 0):
    """The usual fine-tuning recipe: add a new EOS token, resize the embeddings, point generation at it."""
    model = make_tiny_llama(tok, seed)
    tok.add_special_tokens({"eos_token": "<|end|>"})
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
    return model


def test_added_eos_with_a_zeroed_embedding_row(tok):
    model = _model_with_added_eos(tok)
    new_id = tok.eos_token_id
    assert new_id == 49152
    with torch.no_grad():
        model.get_input_embeddings().weight[new_id] = 0.0
    input_only = by_id(diagnose(bundle_of(model, tok), probe=False))["eos_embedding"]
    # A zero input row only blinds the model to an EOS in its context: worth a warning, not why it rambles.
    assert input_only.status == "warning"
    assert input_only.data["rows"][f"input:{new_id}"]["norm"] == 0.0
    assert input_only.data["added_end_ids"] == [new_id]

    with torch.no_grad():
        model.get_output_embeddings().weight[new_id] = 0.0
    both = by_id(diagnose(bundle_of(model, tok), probe=False))["eos_embedding"]
    assert both.status == "problem"
    assert both.data["rows"][f"output:{new_id}"]["norm"] == 0.0


def test_added_eos_with_a_huge_output_row(tok):
    model = _model_with_added_eos(tok)
    with torch.no_grad():
        model.get_output_embeddings().weight[tok.eos_token_id] *= 100.0
    found = by_id(diagnose(bundle_of(model, tok), probe=False))["eos_embedding"]
    assert found.status == "problem"
    assert found.data["rows"][f"output:{tok.eos_token_id}"]["z"] > 6
    assert found.data["rows"][f"input:{tok.eos_token_id}"]["identical_rows"] == 0


def test_token_added_without_resizing_the_embeddings(tok):
    model = make_tiny_llama(tok)
    tok.add_special_tokens({"additional_special_tokens": ["<|tool|>"]})
    found = by_id(diagnose(bundle_of(model, tok), probe=False))["eos_embedding"]
    assert found.status == "problem"
    assert "49153 tokens but the embeddings only 49152 rows" in found.found
    assert "resize_token_embeddings" in found.fix


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers helper
def test_lora_adapter_without_modules_to_save_after_adding_eos(tok):
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(_model_with_added_eos(tok), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    findings = by_id(diagnose(bundle_of(lora, tok, adapter="in-memory LoRA"), sample=QA_SAMPLE))
    adapter = findings["adapter_trains_new_tokens"]
    assert adapter.status == "problem"
    assert adapter.data["new_end_ids"] == [49152]
    assert "modules_to_save=['embed_tokens', 'lm_head']" in adapter.fix
    # The p(EOS) probe runs through the adapter and once more with it switched off.
    p_eos = findings["p_eos_at_answer_end"]
    assert p_eos.status == "problem"
    assert set(p_eos.data["without_adapter"]) == {"min", "median", "max"}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lora_adapter_that_saves_embeddings_is_ok(tok):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens", "lm_head"])
    lora = get_peft_model(_model_with_added_eos(tok), config)
    adapter = by_id(diagnose(bundle_of(lora, tok, adapter="in-memory LoRA"), probe=False))["adapter_trains_new_tokens"]
    assert adapter.status == "ok"
    assert adapter.data["modules_to_save"] == ["embed_tokens", "lm_head"]


# -- tokenizer add_eos_token -----------------------------------------------------------------------


def test_add_eos_token_flag_that_the_encoding_ignores(tok):
    post_processor = tok._tokenizer.post_processor
    tok.add_eos_token = True
    tok._tokenizer.post_processor = post_processor  # the old fast-Llama bug: the flag never reached the encoder
    assert tok("a")["input_ids"] == [81]
    found = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), probe=False))["tokenizer_appends_eos"]
    assert found.status == "problem"
    assert found.data == {"add_eos_token": True, "encoded_a": [81], "appends_eos": False}


def test_add_eos_token_that_works_makes_raw_text_examples_end_with_eos(tok):
    tok.add_eos_token = True
    sample = [{"text": "Q: Capital of Italy?\nA: Rome."}, {"text": "Q: 2 + 2?\nA: 4."}]
    found = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), sample=sample, probe=False))
    assert found["tokenizer_appends_eos"].status == "ok"
    assert found["tokenizer_appends_eos"].data["encoded_a"] == [81, 2]
    assert found["sample_ends_with_eos"].status == "ok"
    assert found["sample_ends_with_eos"].data["fraction_end_with_eos"] == 1.0


# -- training sample and teacher forcing --------------------------------------------------------------


def test_truncation_that_cuts_off_the_eos(tok):
    long_answer = " ".join(["Paris has many museums and parks to visit."] * 20)
    sample = QA_SAMPLE + [{"prompt": "What can I do in Paris?", "response": long_answer}]
    found = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), sample=sample, max_length=64, probe=False))
    assert found["sample_ends_with_eos"].status == "ok"
    assert found["sample_ends_with_eos"].data["end_with_eos"] == 4
    cut = found["truncation_keeps_eos"]
    assert cut.status == "warning" and cut.action == "retrain"
    assert cut.data["truncated_before_eos"] == 1
    assert cut.data["fraction_truncated"] == 0.25
    needed = cut.data["max_length_that_keeps_every_eos"]
    assert needed > 64 and f"SFTConfig(max_length={needed})" in cut.fix
    assert "max_length=64" in cut.found and "'<|im_end|>' (id 2) at index" in cut.found


def test_left_truncation_keeps_the_eos(tok):
    tok.truncation_side = "left"
    long_answer = " ".join(["Paris has many museums and parks to visit."] * 20)
    sample = [{"prompt": "What can I do in Paris?", "response": long_answer}]
    cut = by_id(diagnose(bundle_of(make_tiny_llama(tok), tok), sample=sample, max_length=64,
                         probe=False))["truncation_keeps_eos"]
    assert cut.status == "ok"
    assert cut.data["longer_than_max_length"] == 1 and cut.data["truncated_before_eos"] == 0
    assert "cuts the start (the prompt) of 1" in cut.found


def test_random_model_puts_no_probability_on_eos(tiny):
    found = by_id(diagnose(tiny))
    p_eos = found["p_eos_at_answer_end"]
    assert p_eos.status == "problem"
    assert p_eos.data["max"] < 0.01
    assert len(p_eos.data["p_eos"]) == 7
    # A Llama built with pad_token_id == eos zeroes the EOS input row as padding_idx (and never trains it).
    assert found["eos_embedding"].data["rows"]["input:2"]["norm"] == 0.0
    assert "padding_idx" in found["eos_embedding"].found


def test_diagnose_rejects_bad_arguments(tiny):
    with pytest.raises(ValueError, match="max_length must be an integer >= 2"):
        diagnose(tiny, max_length=1)
    with pytest.raises(ValueError, match="sample example 1.*got keys \\['question'\\]"):
        diagnose(tiny, sample=[{"question": "hi"}])


# -- reports and CLI --------------------------------------------------------------------------------


def test_reports_render_every_finding(smollm_findings):
    findings = list(smollm_findings.values())
    markdown = report_markdown(findings)
    assert "0 problem(s), 1 warning(s), 12 ok, 11 not applicable" in markdown
    # The one warning sits under what fixes it; passed checks are one line each.
    files = markdown.index("## Fix the files")
    assert files < markdown.index(f"### {STATUS_ICONS['warning']} Pad token is the same id as EOS — warning")
    assert markdown.index("## Passed") > files
    assert "## Fix at generation time" not in markdown and "## Fix the training" not in markdown
    assert markdown.count("**Fix:**") == 1
    # A token that looks like an HTML tag is escaped in prose (or the page would drop it), not inside code.
    assert "e.g. '\\<repo_name>' (id 3)" in markdown and "tokenizer.pad_token = '<repo_name>'\n" in markdown
    assert markdown.count("\n- ✅ ") == 12 and markdown.count("\n- ➖ ") == 11
    parsed = json.loads(report_json(findings))
    assert parsed["summary"] == {"ok": 12, "warning": 1, "problem": 0, "not_applicable": 11}
    assert parsed["groups"]["files"] == ["pad_is_eos"] and parsed["groups"]["retrain"] == []
    assert [f["id"] for f in parsed["findings"]] == [f.id for f in findings]
    assert parsed["findings"][[f.id for f in findings].index("pad_is_eos")]["action"] == "files"


@pytest.fixture
def default_model_loaded_once(smollm, monkeypatch):
    """main() loads through load_model; hand it the session's already-loaded default model."""
    calls = []

    def fake_load_model(reference, *, adapter=None, **options):
        calls.append((reference, adapter))
        return smollm

    monkeypatch.setattr("playground.models.load_model", fake_load_model)
    return calls


def test_main_json_on_the_default_model(default_model_loaded_once, capsys):
    assert cli_main(["doctor", "--json"]) == 0
    assert default_model_loaded_once == [("default", None)]
    report = json.loads(capsys.readouterr().out)
    assert report["summary"] == {"ok": 12, "warning": 1, "problem": 0, "not_applicable": 11}
    assert "eos_token_id=[2]" in report["stop_lists"]["generate"]
    statuses = {f["id"]: f["status"] for f in report["findings"]}
    assert statuses["pad_is_eos"] == "warning"
    assert statuses["chat_template_eos"] == "ok"
    assert statuses["p_eos_at_answer_end"] == "ok"


def test_main_exits_1_when_the_sample_shows_a_problem(default_model_loaded_once, tmp_path, capsys):
    path = tmp_path / "sample.jsonl"
    path.write_text("\n".join(json.dumps(example) for example in QA_SAMPLE))
    assert cli_main(["doctor", "--sample", str(path), "--no-probe"]) == 1
    out = capsys.readouterr().out
    assert "❌ Pad token is the same id as EOS — problem" in out


def test_the_doctor_says_which_check_is_running(tiny):
    seen = []
    findings = diagnose(tiny, probe=False, on_check=lambda index, count, words: seen.append((index, count, words)))
    assert [index for index, _, _ in seen] == list(range(len(findings)))
    assert {count for _, count, _ in seen} == {len(findings)}
    assert "p eos at answer end" in [words for _, _, words in seen]  # in words, not a function name
