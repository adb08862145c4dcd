"""The doctor on training data and the runtimes a model ships to: the training format against inference, a BOS or
EOS doubled, packed samples, labels off by one, exports (GGUF, Modelfile, runtime configs) that end or stop
differently, a repetition penalty or a later checkpoint that costs the end token. Each cause is built on purpose
(the real SmolLM2 tokenizer, a tiny random Llama or the real model, small files written by the test) and must be
flagged in its report group with the ids involved; a healthy twin must pass. Also: an end string typed into an
answer, titles that say what was found, --fix on a Modelfile, and the training-example view in the terminal."""

from __future__ import annotations

import copy
import json

import pytest

from playground.cli import main as cli_main
from playground.doctor import group_findings, report_json, report_markdown, write_fixes
from playground.doctor.artifacts import check_artifacts_agree
from playground.doctor.core import Context
from playground.doctor.data import check_sample_ends_with_eos
from playground.doctor.generation import check_penalty_spares_eos, check_stopping_kept
from playground.doctor.ids import check_end_tokens_all_stop
from playground.doctor.tokenizer import check_pad_is_eos
from playground.doctor.training import (
    check_bos_eos_doubled,
    check_format_matches_inference,
    check_labels_aligned,
    check_packing_separates_samples,
)
from tests.doctor_cases import CHAT, IM_END, QUESTION, bundle_of, labelled, row
from tests.support import make_tiny_llama

SECOND = [{"role": "user", "content": "And of France?"}, {"role": "assistant", "content": "Paris."}]


@pytest.fixture(scope="module")
def tiny_bundle(tokenizer):
    """The real tokenizer on a tiny random Llama: every check that reads no p(EOS) runs on it."""
    return bundle_of(make_tiny_llama(tokenizer), tokenizer)


@pytest.fixture
def tok(tokenizer):
    return copy.deepcopy(tokenizer)


def run(check, bundle, sample=None, **options):
    finding = check(Context(bundle, sample, 512, **options))
    group = next(key for key, findings in group_findings([finding]).items() if findings)
    return finding, group


# -- the two defects ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", [{"prompt": "Capital of Italy?", "response": "Rome.</s>"},
                                     {"messages": QUESTION + [{"role": "assistant", "content": "Rome.</s>"}]}])
def test_an_end_string_typed_into_a_rendered_answer_is_caught(tiny_bundle, example):
    """The chat template adds the real <|im_end|> after '</s>': the example still teaches printing '</s>'."""
    ends, group = run(check_sample_ends_with_eos, tiny_bundle, [example])
    assert ends.status == "problem" and group == "retrain"
    assert ends.data["eos_as_text_not_id"] == 1 and ends.data["eos_as_text_ids"] == [9617, 99, 46]
    assert "'</s>', which tokenises as ['</', 's', '>']" in ends.found
    assert "removesuffix('</s>')" in ends.fix and "[tokenizer.eos_token_id]" in ends.fix
    assert ends.title == "Training examples without an EOS id after the answer"
    twin, _ = run(check_sample_ends_with_eos, tiny_bundle, [{"prompt": "Capital of Italy?", "response": "Rome."}])
    assert twin.status == "ok" and twin.title == "Training examples end with EOS"


def test_titles_say_what_was_found(tiny_bundle, tok):
    same, _ = run(check_pad_is_eos, tiny_bundle)  # SmolLM2 ships pad == eos
    assert same.status == "warning" and same.title == "Pad token is the same id as EOS"
    tok.pad_token = "<repo_name>"
    distinct, _ = run(check_pad_is_eos, bundle_of(make_tiny_llama(tok), tok))
    assert distinct.status == "ok" and distinct.title == "Pad token is distinct from EOS"


# -- format_matches_inference ---------------------------------------------------------------------------------


def test_alpaca_text_served_with_the_chat_template(tiny_bundle):
    alpaca = [{"text": "### Instruction:\nWhat is the capital of Italy?\n\n### Response:\nRome.<|im_end|>"}]
    fmt, group = run(check_format_matches_inference, tiny_bundle, alpaca)
    assert fmt.status == "problem" and group == "generation"
    assert fmt.data["assistant_header_ids"] == [1, 520, 9531]  # <|im_start|>assistant
    assert fmt.data["examples"][0]["training_ids"][:3] == [3757, 20880, 42]  # '###', ' Instruction', ':'
    assert "add_generation_prompt=True" in fmt.fix
    twin, _ = run(check_format_matches_inference, tiny_bundle, [{"messages": CHAT}, {"prompt": "Hi?", "response": "Hello."}])
    assert twin.status == "ok" and twin.data["checked"] == 2


# -- bos_eos_doubled ------------------------------------------------------------------------------------------


def test_template_bos_plus_tokenizer_bos_and_a_typed_end_token(tiny_bundle, tok):
    tok.add_bos_token = True  # the tokenizer adds <|im_start|> (SmolLM2's BOS) before the template's own
    text = tok.apply_chat_template(CHAT, tokenize=False)
    doubled, group = run(check_bos_eos_doubled, bundle_of(make_tiny_llama(tok), tok), [{"text": text}])
    assert doubled.status == "problem" and group == "retrain"
    assert doubled.data["double_bos"] == ["sample example 1"]
    assert doubled.data["rendered_with_special_tokens_starts"][:2] == [1, 1]
    assert "add_special_tokens=False" in doubled.fix
    typed = [{"prompt": "Capital of Italy?", "response": "Rome.<|im_end|>"}]  # the template adds another
    doubled, _ = run(check_bos_eos_doubled, tiny_bundle, typed)
    assert doubled.status == "problem" and doubled.data["double_end"][0]["ids"] == [IM_END, IM_END]
    twin, _ = run(check_bos_eos_doubled, tiny_bundle, [{"text": text}, {"messages": CHAT}])
    assert twin.status == "ok" and twin.title == "Examples have one BOS and one end token"


# -- packing_separates_samples ---------------------------------------------------------------------------------


def test_packed_samples_without_a_supervised_end_between_them(tiny_bundle, tokenizer):
    first, second = labelled(tokenizer, CHAT), labelled(tokenizer, QUESTION + SECOND[1:])
    cut = first["end"]  # the first sample loses its <|im_end|>\n: packing without an end token
    no_end = {"input_ids": first["input_ids"][:cut] + second["input_ids"],
              "labels": first["labels"][:cut] + second["labels"]}
    packing, group = run(check_packing_separates_samples, tiny_bundle, [no_end])
    assert packing.status == "problem" and group == "retrain"
    failure = packing.data["failures"][0]
    assert failure["boundary"] == cut and failure["previous_id"] == 30 and not failure["end"]  # '.'
    masked = {"input_ids": first["input_ids"] + second["input_ids"],
              "labels": first["labels"][:cut] + [-100] * (len(first["labels"]) - cut) + second["labels"]}
    packing, _ = run(check_packing_separates_samples, tiny_bundle, [masked])
    assert packing.status == "problem"
    assert packing.data["failures"][0]["previous_id"] == IM_END and packing.data["failures"][0]["label"] == -100
    twin, _ = run(check_packing_separates_samples, tiny_bundle,
                  [{"input_ids": first["input_ids"] + second["input_ids"], "labels": first["labels"] + second["labels"]}])
    assert twin.status == "ok" and twin.data["boundaries"] == 1


# -- labels_aligned --------------------------------------------------------------------------------------------


def test_labels_one_token_off_or_shifted(tiny_bundle, tokenizer):
    good = labelled(tokenizer, CHAT)
    start, end, labels = good["start"], good["end"], good["labels"]
    late = {"input_ids": good["input_ids"], "labels": labels[:start] + [-100] + labels[start + 1:]}
    aligned, group = run(check_labels_aligned, tiny_bundle, [late])
    assert aligned.status == "problem" and group == "retrain"
    issue = aligned.data["issues"][0]
    assert issue["problem"] == "first answer token masked" and issue["index"] == start and issue["id"] == 46292  # Rome
    shifted = {"input_ids": good["input_ids"], "labels": labels[1:] + [-100]}
    assert run(check_labels_aligned, tiny_bundle, [shifted])[0].data["issues"][0]["problem"] == "shifted"
    no_end = {"input_ids": good["input_ids"], "labels": labels[:end] + [-100] * (len(labels) - end)}
    issue = run(check_labels_aligned, tiny_bundle, [no_end])[0].data["issues"][0]
    assert issue["problem"] == "end token masked" and issue["index"] == end and issue["id"] == IM_END
    twin, _ = run(check_labels_aligned, tiny_bundle, [row(good)])
    assert twin.status == "ok"


# -- artifacts_agree and the stop lists ----------------------------------------------------------------------

BROKEN_MODELFILE = ('FROM ./smollm2.gguf\nTEMPLATE """<|im_start|>user\n{{ .Prompt }}<|im_end|>\n'
                    '<|im_start|>assistant\n{{ .Response }}"""\nPARAMETER temperature 0.2\n')


def test_exports_that_end_or_stop_differently(tiny_bundle, tokenizer, tmp_path):
    (tmp_path / "Modelfile").write_text(BROKEN_MODELFILE)
    merged = tmp_path / "merged"
    tokenizer.save_pretrained(merged)
    (merged / "generation_config.json").write_text(json.dumps({"eos_token_id": [0]}))  # lost the turn end
    artifacts, group = run(check_artifacts_agree, tiny_bundle, artifacts=[tmp_path / "Modelfile", merged])
    assert artifacts.status == "problem" and group == "files"
    assert artifacts.data["end_ids"] == [IM_END] and artifacts.data["end_strings"] == ["<|im_end|>"]
    assert "PARAMETER stop lines (none) miss ['<|im_end|>']" in artifacts.found
    assert "TEMPLATE does not write '<|im_end|>'" in artifacts.found
    assert "merged/generation_config.json stops on [0]" in artifacts.found
    repaired = tmp_path / "fixed.Modelfile"
    repaired.write_text(BROKEN_MODELFILE.replace('{{ .Response }}"""', '{{ .Response }}<|im_end|>"""')
                        + 'PARAMETER stop "<|im_end|>"\n')
    assert run(check_artifacts_agree, tiny_bundle, artifacts=[repaired])[0].status == "ok"


def test_fix_writes_a_modelfile_the_check_then_passes(tiny_bundle, tmp_path):
    original = tmp_path / "Modelfile"
    original.write_text(BROKEN_MODELFILE)
    finding = run(check_artifacts_agree, tiny_bundle, artifacts=[original])[0]
    write_fixes(tiny_bundle, [finding], tmp_path / "out", weights="none")
    written = tmp_path / "out" / "artifacts" / "Modelfile"
    assert 'PARAMETER stop "<|im_end|>"' in written.read_text()
    assert "PARAMETER temperature 0.2" in written.read_text()  # the rest is kept
    assert run(check_artifacts_agree, tiny_bundle, artifacts=[written])[0].status == "ok"
    assert original.read_text() == BROKEN_MODELFILE  # the input is untouched
    assert "artifacts/Modelfile: corrected copy" in (tmp_path / "out" / "FIXES.md").read_text()


def test_the_report_gives_each_runtime_its_stop_list(tiny_bundle, tok):
    tok.eos_token = "<|endoftext|>"  # Qwen-style: text end as EOS, turns end with <|im_end|>
    model = make_tiny_llama(tok)
    model.generation_config.eos_token_id = 0
    finding = check_end_tokens_all_stop(Context(bundle_of(model, tok), None, 512))
    lists = json.loads(report_json([finding]))["stop_lists"]
    assert "eos_token_id=[0, 2]" in lists["generate"] and "stop_token_ids=[0, 2]" in lists["vllm"]
    assert '"stop": ["<|endoftext|>", "<|im_end|>"]' in lists["llama_cpp"]
    assert lists["ollama"] == 'PARAMETER stop "<|endoftext|>"\nPARAMETER stop "<|im_end|>"'
    assert "## Stop lists for your runtime" in report_markdown([finding])


# -- penalty_spares_eos and stopping_kept on the real model ----------------------------------------------------


@pytest.fixture(scope="module")
def smollm_context(smollm):
    """One diagnosis context on the real model: its teacher-forced logits are computed once for these tests."""
    return Context(smollm, None, 512)


def run_on(ctx: Context, check, **options):
    for name, value in options.items():
        setattr(ctx, name, value)
    return check(ctx)


def test_a_repetition_penalty_pushes_the_end_token_down(smollm_context):
    penalised = run_on(smollm_context, check_penalty_spares_eos, repetition_penalty=1.3)
    assert penalised.status in ("warning", "problem") and penalised.action == "generation"
    assert next(k for k, v in group_findings([penalised]).items() if v) == "generation"
    assert penalised.data["stop_ids"] == [IM_END] and penalised.data["examples_with_end_token_in_prompt"] == 7
    assert penalised.data["median_p_eos_with_penalty"] < penalised.data["median_p_eos"] / 2
    assert "prompt_ignore_length" in penalised.fix
    twin = run_on(smollm_context, check_penalty_spares_eos, repetition_penalty=1.02)
    assert twin.status == "ok"


def test_a_later_checkpoint_that_unlearned_stopping(smollm, smollm_context, tiny_bundle):
    """The tiny random Llama stands for a DPO stage that lost stopping; the real SmolLM2 is its SFT checkpoint."""
    collapsed, group = run(check_stopping_kept, tiny_bundle, compare_with=smollm)
    assert collapsed.status == "problem" and group == "retrain"
    assert collapsed.data["stop_ids"] == [IM_END] and collapsed.data["median_p_eos_earlier"] > 0.1
    assert "rpo_alpha" in collapsed.fix
    kept = run_on(smollm_context, check_stopping_kept, compare_with=smollm)
    assert kept.status == "ok" and kept.data["ratio"] == 1.0


# -- the training-example view in the terminal ------------------------------------------------------------------


def test_show_example_prints_one_line_of_the_sample(tokenizer, tmp_path, capsys):
    good = labelled(tokenizer, CHAT)
    masked = {"input_ids": good["input_ids"], "labels": good["labels"][:good["end"]] + [-100] * 2}
    sample = tmp_path / "sample.jsonl"
    sample.write_text(json.dumps(row(good)) + "\n\n" + json.dumps(masked) + "\n")
    assert cli_main(["doctor", "--sample", str(sample), "--show-example", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Example 2: input_ids and labels as given.")
    assert f"2 at {good['end']}: masked (label -100)" in out
    assert "Rome[46292] .[30] <|im_end|>⏹" in " ".join(out.split())  # the answer supervised, its end not
    assert cli_main(["doctor", "--sample", str(sample), "--show-example", "3"]) == 2
    assert "example must be a number from 1 to 2" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cli_fix_writes_a_modelfile_the_check_then_passes_and_compares_an_earlier_adapter(tokenizer, tmp_path,
                                                                                          capsys):
    """`doctor --model DIR --compare-with ADAPTER --artifact Modelfile --fix OUT`: the earlier stage is an adapter
    on the same base (untrained here, so stopping is kept); the repaired Modelfile passes; the input is untouched."""
    from peft import LoraConfig, get_peft_model

    model = make_tiny_llama(tokenizer)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    get_peft_model(make_tiny_llama(tokenizer), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        tmp_path / "sft-adapter")
    original = tmp_path / "Modelfile"
    original.write_text(BROKEN_MODELFILE)
    base = ["doctor", "--model", str(tmp_path / "model"), "--no-probe", "--json"]
    assert cli_main(base + ["--compare-with", str(tmp_path / "sft-adapter"), "--artifact", str(original),
                            "--fix", str(tmp_path / "out")]) == 1
    found = {f["id"]: f for f in json.loads(capsys.readouterr().out)["findings"]}
    assert found["artifacts_agree"]["status"] == "problem"
    assert found["stopping_kept"]["status"] == "ok" and found["stopping_kept"]["data"]["ratio"] > 0.99
    written = tmp_path / "out" / "artifacts" / "Modelfile"
    assert cli_main(base + ["--artifact", str(written)]) in (0, 1)
    assert {f["id"]: f for f in json.loads(capsys.readouterr().out)["findings"]}["artifacts_agree"]["status"] == "ok"
    assert original.read_text() == BROKEN_MODELFILE


def test_pad_is_eos_reads_the_labels_a_pre_collated_sample_gives(tiny_bundle, tokenizer):
    """The lab writes each adapter's examples as the trainer saw them (ids and labels after its collator): pad =
    EOS is a problem where those labels mask the end token, and fine where they supervise it."""
    from playground.finetune.recipes import RECIPES, collator_for, encode
    from playground.finetune.data import builtin_examples

    def as_trained(recipe):
        recipe = RECIPES[recipe]
        batch = collator_for(tokenizer, recipe)([encode(tokenizer, e, recipe) for e in builtin_examples()[:3]])
        return [{"input_ids": [i for i, m in zip(ids, mask) if m], "labels": [l for l, m in zip(labels, mask) if m]}
                for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(),
                                             batch["attention_mask"].tolist())]

    masked, _ = run(check_pad_is_eos, tiny_bundle, as_trained("pad_is_eos_masked"))
    assert masked.status == "problem" and masked.data["eos_label_masked"] == masked.data["labelled"] == 3
    assert "-100 in 3 of 3" in masked.found
    kept, _ = run(check_pad_is_eos, tiny_bundle, as_trained("correct"))
    assert kept.status == "ok" and kept.data["eos_label_masked"] == 0  # the data is right: nothing to warn of
    assert "supervise the end token after the answer in all 3" in kept.found
