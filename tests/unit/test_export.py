"""Copy this fix without a model: the snippet runs where playground is not importable, its classes are the
engine's source, it says how to change the prompt and when a combination is not faithful, and bad input is
refused naming the field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from playground.export import class_source, export_code
from playground.interventions import EosRewardLogitsProcessor

PARIS = "What can I do in Paris?"  # rambles with the chat template: no EOS within 300 tokens


def snippet(interventions, prompt=PARIS, kind="generate", **settings):
    common = dict(model_reference="default", prompt=prompt, system_prompt=None, use_chat_template=True,
                  max_new_tokens=48, temperature=0.0, top_p=1.0, top_k=0, seed=0)
    return export_code(interventions, kind=kind, **(common | settings))


def test_playground_is_not_importable_where_the_snippets_run(tmp_path):
    result = subprocess.run([sys.executable, "-I", "-c", "import playground"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert "No module named 'playground'" in result.stderr


def test_kwargs_say_how_to_change_the_prompt():
    code = snippet([{"name": "concise_suffix", "sentences": 3}, {"name": "chat_template", "enabled": False}],
                   kind="kwargs")
    assert "# concise_suffix: end the user's message with ' Answer in 3 sentences or fewer.'" in code
    assert "# chat_template: the prompt goes in as plain text, without the chat template." in code


def test_snippet_class_source_is_the_engines_with_a_one_paragraph_docstring():
    source = class_source(EosRewardLogitsProcessor)
    assert source.startswith("class EosRewardLogitsProcessor(LogitsProcessor):\n    \"\"\"Adds a growing bonus")
    assert "playground" not in source and ">>>" not in source
    assert "def bonus_at(self, step: int) -> float:" in source and "def sentence_end_masks(cls, tokenizer)" in source


# ----------------------------------------------------------------------------------------------------------------
# What the snippet says


def test_unfaithful_combination_says_so_and_faithful_ones_do_not():
    """EOS banned while the decay penalty's growth passes the engine's cap: transformers' own penalty grows on."""
    code = snippet(["ban_eos", {"name": "decay_penalty", "start": 0, "factor": 10.0}], max_new_tokens=64)
    said = " ".join(line.removeprefix("# ") for line in code.splitlines() if line.startswith("#"))
    assert ("Not faithful: while EOS is banned or overwritten, exponential_decay_length_penalty's factor**k passes "
            "1e30 (30 tokens after its start)") in said
    for faithful in (["ban_eos", "decay_penalty"], ["decay_penalty", {"name": "min_new_tokens", "n": 30}],
                     ["eos_reward", "seed_article", "repetition_stop"]):
        assert "Not faithful" not in snippet(faithful)


def test_stop_strings_note_only_where_the_prompt_can_start_one():
    chat = snippet(["stop_strings"])
    assert "# stop_strings: generate() also matches a stop string that begins at the end of the prompt" in chat
    assert "begins at the end of the prompt" not in snippet(["stop_strings"], use_chat_template=False)
    assert "begins at the end of the prompt" in snippet([{"name": "stop_strings", "strings": ["?!"]}],
                                                        use_chat_template=False)


@pytest.mark.parametrize("field, value", [("kind", "chat"), ("max_new_tokens", 0), ("temperature", -1.0),
                                          ("prompt", " ")])
def test_bad_input_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "prompt" else "prompt is empty"):
        snippet([], **{field: value})
