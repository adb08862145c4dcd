"""The Space's app as served: public mode comes up on the default model with a banner saying why, and a local app
keeps the free-text model box."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from playground.markup import md_text
from playground.space.config import load_config


@pytest.fixture(scope="module")
def config():
    return load_config()


# -- the launched public app -----------------------------------------------------------------------------------


def page_config(url: str) -> dict:
    with urllib.request.urlopen(f"{url}config", timeout=30) as response:
        return json.load(response)


def test_public_app_comes_up_on_the_default_model_with_a_banner(public_app_server, config):
    from gradio_client import Client

    page = page_config(public_app_server)
    props = {c["props"].get("label") or c["props"].get("elem_id"): (c["type"], c["props"]) for c in page["components"]}
    kind, banner = props["banner"]
    assert kind == "markdown" and "No GPU" in banner["value"] and "meta-llama/Llama-2-7b-chat-hf" in banner["value"]
    kind, picker = props["Load another model"]
    assert kind == "dropdown" and [value for _, value in picker["choices"]] == list(config.allowed_models)
    assert props["LoRA adapter (optional)"][1]["visible"] is False
    assert props["Trust remote code (runs the model's own Python code)"][1]["visible"] is False
    cap = config.caps["max_new_tokens"]  # both max-new-tokens sliders (log scale) end at the cap
    by_id = {c["props"].get("elem_id"): c["props"] for c in page["components"]}
    for elem_id in ("max-new-tokens-scale", "evaluate-max-new-scale"):  # log2 positions: the last one is the cap
        assert 2 ** (by_id[elem_id]["maximum"] - 0.01) < cap <= 2 ** by_id[elem_id]["maximum"]
    assert props[f"Max new tokens (1 to {cap}, log scale)"][0] == "number"
    assert page["max_file_size"] == config.caps["max_upload_mb"] * 1024 * 1024
    info = Client(public_app_server, verbose=False).predict(api_name="/info")
    assert info["model"] == "SmolLM2-135M-Instruct" and banner["value"].endswith(md_text(info["banner"]))
    assert {k: info["limits"][k] for k in config.caps} == config.caps
    log = Path(public_app_server.log).read_text()
    assert "[playground] public mode" in log and "[playground] loaded SmolLM2-135M-Instruct" in log


def test_local_app_keeps_the_free_text_model_box(app_server):
    page = page_config(app_server)
    props = {c["props"].get("label"): (c["type"], c["props"]) for c in page["components"]}
    assert props["Load another model"][0] == "textbox"
    assert props["LoRA adapter (optional)"][1].get("visible", True) is not False
    assert not any(c["props"].get("elem_id") == "banner" for c in page["components"])
