"""Safe to share, without a model: flags accept only booleans, paths are hidden while hub ids and URLs stay, the
branch click data gets sentences, and a visitor's exported fix names what they can load."""

from __future__ import annotations

import re

import pytest

from playground.request import parse_bool
from playground.service import HOST_PATH, hide_paths


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("true", True), ("false", False),
                                             (" False ", False), ("no", None), ("yes", None), ("1", None), (1, None),
                                             (0, None), (None, None), ([], None)])
def test_flags_accept_only_booleans_and_true_false(value, expected):
    if expected is None:
        with pytest.raises(ValueError, match="^use_chat_template must be true or false"):
            parse_bool(value, "use_chat_template")
    else:
        assert parse_bool(value, "use_chat_template") is expected


def test_hide_paths_keeps_hub_ids_and_urls():
    text = "Could not load 'HuggingFaceTB/SmolLM2': [Errno 13] '/root/.cache/x/y' (see https://hf.co/a/b, ~/m, 1/2)"
    assert hide_paths(text) == ("Could not load 'HuggingFaceTB/SmolLM2': [Errno 13] '<path>' "
                                "(see https://hf.co/a/b, <path>, 1/2)")


@pytest.mark.parametrize("data, message", [
    ({"token_id": "abc"}, "token_id must be a whole number, got 'abc'"),
    ({"token_id": 2.5}, "token_id must be a whole number, got 2.5"),
    ({"token_id": float("inf")}, "token_id must be a whole number, got inf"),
    ({"token_id": True}, "token_id must be a whole number, got True"),
    ({}, "token_id must be a whole number, got None"),
])
def test_the_branch_click_data_gets_sentences(data, message):
    """What only a hand-made request sends to the page's branch handler ("abc" raised int()'s message; 2.5 was
    silently cut to 2)."""
    from playground.views import page_whole

    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        page_whole(data, "token_id")
    assert page_whole({"token_id": 7.0}, "token_id") == 7


@pytest.mark.parametrize("reference, adapter, model_line", [
    ("default", None, "MODEL = 'HuggingFaceTB/SmolLM2-135M-Instruct'"),
    ("someone/model", None, "MODEL = 'someone/model'"),
    ("/home/ann/finetunes/run-7/", "/home/ann/lora", "MODEL = 'run-7'"),
    ("/home/ann/model.Q4.gguf", None, "MODEL = 'model.Q4.gguf'"),
])
def test_a_visitors_exported_fix_names_what_they_can_load(reference, adapter, model_line):
    from playground.export import export_code

    code = export_code(["eos_reward"], model_reference=reference, prompt="Hi", system_prompt=None,
                       use_chat_template=True, max_new_tokens=8, temperature=0.0, top_p=1.0, top_k=0, seed=0,
                       adapter=adapter, reveal_paths=False)
    assert model_line in code and not HOST_PATH.search(code.replace("'", " ")) and "/home" not in code
    assert ("model.load_adapter('lora')" in code) == bool(adapter)
