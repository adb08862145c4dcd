"""Copy this fix: the exported snippet runs where only torch and transformers are installed and decodes exactly the
tokens of the playground's column."""

from __future__ import annotations

import math

import pytest
import torch
import transformers

from playground.engine import Comparison, Settings, Variant, compare
from playground.export import class_source, export_code, export_column
from playground.interventions import (
    EosRewardLogitsProcessor,
    RepetitionStoppingCriteria,
    SeedEosTokenRewardLogitsProcessor,
)
from playground.prompts import encode_prompt
from tests.support import finish_snippet, run_kwargs, start_snippet

PARIS = "What can I do in Paris?"  # rambles with the chat template: no EOS within 300 tokens
LOOP = "I like Paris. I like Paris. I like Paris. I like Paris."  # raw text: falls into loops


def column(smollm, interventions, prompt=PARIS, **settings):
    """The engine's column: a one-column comparison, as the page's "Copy this fix" builds it."""
    settings = Settings(**{"max_new_tokens": 48} | settings)
    return compare(smollm, prompt, [Variant("fix", interventions)], settings).variants[0]


def snippet(interventions, prompt=PARIS, kind="generate", **settings):
    common = dict(model_reference="default", prompt=prompt, system_prompt=None, use_chat_template=True,
                  max_new_tokens=48, temperature=0.0, top_p=1.0, top_k=0, seed=0)
    return export_code(interventions, kind=kind, **(common | settings))


# ----------------------------------------------------------------------------------------------------------------
# The snippet decodes the column's tokens


def test_generate_and_pipeline_snippets_reproduce_the_column(smollm, tmp_path):
    """Built-in arguments (min_new_tokens, stop_strings), the ramp's class (at a sentence end) and a prompt
    transform (concise_suffix) together; the pipeline prints the same answer as generate()."""
    items = [{"name": "concise_suffix", "sentences": 2}, {"name": "min_new_tokens", "n": 5},
             {"name": "eos_reward", "reward_start_ratio": 0.25, "at_boundary": True},
             {"name": "stop_strings", "strings": ["Louvre"]}]
    (tmp_path / "g").mkdir(), (tmp_path / "p").mkdir()
    runs = {kind: start_snippet(snippet(items, kind=kind), tmp_path / kind[0]) for kind in ("generate", "pipeline")}
    expected = column(smollm, items)
    assert expected.stop_reason in ("eos", "stop_string")
    answer, ids = finish_snippet(runs["generate"])
    assert ids == expected.token_ids
    assert answer == expected.text
    assert finish_snippet(runs["pipeline"])[0] == answer


def test_sampled_snippet_draws_the_columns_tokens(smollm, tmp_path):
    """T > 0 with a fixed seed: torch.manual_seed(seed) before generate() draws what the column's own seeded
    generator draws."""
    settings = dict(temperature=0.9, top_p=0.9, top_k=40, seed=3)
    process = start_snippet(snippet(["eos_reward", "repetition_stop"], **settings), tmp_path)
    expected = column(smollm, ["eos_reward", "repetition_stop"], **settings)
    assert expected.token_ids != column(smollm, ["eos_reward", "repetition_stop"], **(settings | {"seed": 4})).token_ids
    assert finish_snippet(process)[1] == expected.token_ids


def test_generate_with_the_global_seed_samples_like_the_engine(smollm):
    """The engine seeds one generator per column; generate() samples from torch's global generator. Seeded the
    same, both draw the same tokens, so the snippet only needs torch.manual_seed(seed)."""
    settings = Settings(max_new_tokens=24, temperature=1.2, top_p=0.95, top_k=0, seed=11)
    expected = compare(smollm, PARIS, [Variant("baseline")], settings).variants[0].token_ids
    ids = torch.tensor([encode_prompt(smollm.tokenizer, PARIS)])
    torch.manual_seed(11)
    out = smollm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=True,
                                temperature=1.2, top_p=0.95, top_k=0)
    assert out[0, ids.shape[1]:].tolist() == expected


@pytest.mark.parametrize("items, prompt, chat", [
    (["seed_article"], PARIS, True),
    (["ban_eos", {"name": "decay_penalty", "start": 4, "factor": 1.5}], PARIS, True),
    (["repetition_stop", {"name": "stop_strings", "strings": ["museum"]}], LOOP, False),
])
def test_kwargs_pasted_into_a_plain_generate_call_give_the_columns_tokens(smollm, items, prompt, chat):
    code = snippet(items, prompt=prompt, kind="kwargs", use_chat_template=chat, max_new_tokens=32)
    imports = {line.split()[1] for line in code.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"math", "torch", "transformers"} and "AutoModelForCausalLM" not in code
    expected = column(smollm, items, prompt=prompt, use_chat_template=chat, max_new_tokens=32)
    assert run_kwargs(smollm, code, encode_prompt(smollm.tokenizer, prompt, use_chat_template=chat)) == expected.token_ids


# ----------------------------------------------------------------------------------------------------------------
# The classes the snippet carries are the engine's


def snippet_classes() -> dict:
    """The snippet's classes, executed where only torch, math and transformers are imported."""
    namespace = {"math": math, "torch": torch, **{n: getattr(transformers, n) for n in (
        "LogitsProcessor", "StoppingCriteria")}}
    for cls in (EosRewardLogitsProcessor, SeedEosTokenRewardLogitsProcessor, RepetitionStoppingCriteria):
        exec(class_source(cls), namespace)
    return namespace


def test_snippet_classes_compute_what_the_engines_compute(tokenizer):
    classes = snippet_classes()
    generator = torch.Generator().manual_seed(0)
    vocab = len(tokenizer)
    prompt_length, budget = 6, 20
    text_ids = tokenizer(" A list:\n1. Walk. Then eat!", add_special_tokens=False)["input_ids"]
    ramp_settings = [dict(), dict(reward_start_ratio=0.3, schedule="exponential", strength=30.0),
                     dict(reward_start_ratio=0.1, at_boundary=True, force_at_end=True)]
    for kwargs in ramp_settings:
        if kwargs.get("at_boundary"):
            kwargs = kwargs | {"tokenizer": tokenizer}
        engine = EosRewardLogitsProcessor([2, 0], budget, **kwargs)
        copy = classes["EosRewardLogitsProcessor"]([2, 0], budget, **kwargs)
        for step in range(budget):
            ids = torch.tensor([[1] * prompt_length + (text_ids * 3)[:step]])
            scores = torch.randn(2, vocab, generator=generator) * 10
            assert torch.equal(copy(ids.expand(2, -1), scores), engine(ids.expand(2, -1), scores)), (kwargs, step)
    scores = torch.randn(3, vocab, generator=generator) * 20
    assert torch.equal(classes["SeedEosTokenRewardLogitsProcessor"](2, 40)(None, scores.clone()),
                       SeedEosTokenRewardLogitsProcessor(2, 40)(None, scores.clone()))
    loop = torch.tensor([[5, 7, 1, 2, 1, 2, 1, 2], [5, 7, 1, 2, 1, 2, 2, 1]])
    assert torch.equal(classes["RepetitionStoppingCriteria"](2, 3, prompt_length=2)(loop, None),
                       RepetitionStoppingCriteria(2, 3, prompt_length=2)(loop, None))


def test_snippet_loads_what_the_user_loaded_and_sets_sampling(tmp_path):
    code = export_code(["ban_eos"], model_reference="someone/model", prompt="Hi 'there'", system_prompt="Be brief.",
                       use_chat_template=False, max_new_tokens=12, temperature=0.7, top_p=0.9, top_k=0, seed=123,
                       adapter="someone/lora")
    compile(code, "fix.py", "exec")
    assert "MODEL = 'someone/model'" in code and "AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)" in code
    assert "model.load_adapter('someone/lora')" in code
    assert "do_sample=True, temperature=0.7, top_p=0.9, top_k=0,  # top_k=0: off" in code
    assert "torch.manual_seed(123)" in code and "prompt = 'Be brief.' + '\\n\\n' + prompt" in code
    gguf = tmp_path / "model.Q4.gguf"
    gguf.write_bytes(b"")
    code = export_code([], model_reference=str(gguf), prompt="Hi", system_prompt=None, use_chat_template=True,
                       max_new_tokens=5, temperature=0, top_p=1, top_k=0, seed=0)
    assert f"MODEL = {str(tmp_path)!r}" in code and "from_pretrained(MODEL, gguf_file='model.Q4.gguf'" in code
    default = snippet([])
    assert "# The playground's embedded model: SmolLM2-135M-Instruct" in default


def test_cli_export_prints_the_snippet_for_one_column(smollm, monkeypatch, capsys):
    from playground.cli import main

    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    code = main(["export", "--prompt", PARIS, "--intervention", "eos_reward+stop_strings", "--kind", "kwargs",
                 "--stop-string", "\\n", "--strength", "20", "--temperature", "0.5", "--seed", "9"])
    assert code == 0
    out = capsys.readouterr().out
    compile(out, "fix.py", "exec")
    assert out.startswith('"""EOS Playground fix for column "eos_reward+stop_strings"')
    assert "stop_strings=['\\n'], tokenizer=tokenizer" in out and "strength=20.0" in out
    assert "# torch.manual_seed(9)" in out
    assert main(["export", "--prompt", PARIS, "--intervention", "ban_eos", "--intervention", "eos_reward"]) == 2
    assert "export prints one column" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Every intervention on its own, and more combinations (slow: a subprocess each)

ONE_BY_ONE = [
    (["eos_reward"], PARIS, {}),
    ([{"name": "eos_reward", "schedule": "exponential", "reward_start_ratio": 0.2, "force_at_end": True}], PARIS, {}),
    (["seed_article"], PARIS, {}),
    (["stop_strings"], PARIS, {"max_new_tokens": 80}),
    ([{"name": "decay_penalty", "start": 5, "factor": 1.3}], PARIS, {}),
    ([{"name": "min_new_tokens", "n": 30}], "Say only 'yes' or 'no': is water wet?", {}),
    (["ban_eos"], "Say only 'yes' or 'no': is water wet?", {}),
    ([{"name": "repetition_stop", "ngram_size": 3, "repeats": 2}], LOOP, {"use_chat_template": False}),
    (["concise_suffix"], PARIS, {}),
    ([{"name": "chat_template", "enabled": False}], PARIS, {"system_prompt": "Answer briefly."}),
    (["ban_eos", "seed_article"], PARIS, {}),
    (["min_new_tokens", "decay_penalty", {"name": "eos_reward", "at_boundary": True}], PARIS,
     {"system_prompt": "You are terse."}),
    (["concise_suffix", "stop_strings", "repetition_stop"], PARIS, {"temperature": 0.8, "top_k": 20, "seed": 5}),
]


@pytest.mark.slow
@pytest.mark.parametrize("items, prompt, settings", ONE_BY_ONE)
def test_each_exported_column_decodes_the_columns_tokens(smollm, tmp_path, items, prompt, settings):
    process = start_snippet(snippet(items, prompt=prompt, **settings), tmp_path)
    expected = column(smollm, items, prompt=prompt, **settings)
    answer, ids = finish_snippet(process)
    assert ids == expected.token_ids
    assert answer == expected.text


@pytest.mark.parametrize("settings", [
    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3},  # greedy: both apply
    {"temperature": 0.8, "top_k": 40, "min_p": 0.05, "typical_p": 0.9, "repetition_penalty": 1.2, "seed": 5},
])
def test_the_more_decoding_settings_travel_with_the_fix(smollm, settings):
    """Repetition penalty, no-repeat n-grams, min-p and typical-p are generate() arguments in the fix, and the
    pasted arguments decode the column's tokens."""
    items = ["eos_reward"]
    code = export_column(Comparison(smollm, PARIS, [Variant("fix", items)], Settings(max_new_tokens=32, **settings)),
                         kind="kwargs")
    for name, value in settings.items():
        if name not in ("temperature", "top_k", "seed"):
            assert f"{name}={value!r}," in code
    expected = column(smollm, items, max_new_tokens=32, **settings)
    torch.manual_seed(settings.get("seed", 0))
    assert run_kwargs(smollm, code, encode_prompt(smollm.tokenizer, PARIS)) == expected.token_ids
