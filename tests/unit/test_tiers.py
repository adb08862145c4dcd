"""The unit tier stays without a model and a server: what its conftest refuses, refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT

REFUSED = "tests/unit builds no model and starts no server"


def test_a_model_built_here_fails_the_test_with_a_sentence():
    from transformers import LlamaConfig, LlamaForCausalLM

    with pytest.raises(AssertionError, match=REFUSED):
        LlamaForCausalLM(LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                     num_attention_heads=1))


def test_the_shared_model_and_app_fixtures_refuse(request):
    for fixture in ("smollm", "tokenizer", "tiny", "adapter_dirs", "app_server", "public_app_server",
                    "shared_app_server"):
        with pytest.raises(AssertionError, match=REFUSED):
            request.getfixturevalue(fixture)


def test_no_app_is_launched_or_started():
    import gradio as gr

    with pytest.raises(AssertionError, match=REFUSED):
        gr.Blocks().launch()
    with pytest.raises(AssertionError, match=REFUSED):
        subprocess.Popen([sys.executable, "app.py", "--port", "1"], cwd=ROOT)
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True).stdout == "1\n"


def test_every_test_here_is_marked_unit(request):
    assert request.node.get_closest_marker("unit") and not request.node.get_closest_marker("engine")
