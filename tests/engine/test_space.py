"""The Space's service: the caps and the time limit hold server-side, and a configured model that cannot load
falls back to the default with a banner."""

from __future__ import annotations

import dataclasses

import pytest

from playground.space.config import load_config
from playground.space.policy import Policy
from playground.space.serving import serve_public


@pytest.fixture(scope="module")
def config():
    return load_config()


def test_playground_enforces_caps_and_time_limit_server_side(tiny):
    from playground.service import Playground

    policy = Policy(public=True, allowed_models=("default",), max_new_tokens=64, max_prompt_tokens=40, max_columns=2,
                    time_limit_seconds=0.05)
    playground = Playground(tiny, policy=policy)
    args = dict(max_new_tokens=8, temperature=0, top_p=1, top_k=0, seed=0, reward_start_ratio=0.5, strength=12)
    with pytest.raises(ValueError, match="^max_new_tokens must be between 1 and 64"):
        playground.comparison("Hi", [[]], **dict(args, max_new_tokens=65))
    with pytest.raises(ValueError, match="^columns: give between 1 and 2, got 3"):
        playground.comparison("Hi", [[], [], []], **args)
    with pytest.raises(ValueError, match="^prompt is .* tokens .* at most 40"):
        playground.comparison("word " * 60, [[]], **args)
    # A run longer than the time limit stops with reason "timeout" (the tiny model needs ~1 s for 64 steps).
    comparison = playground.comparison("Hi", [["ban_eos"]], **dict(args, max_new_tokens=64))
    for trace in playground.stream(comparison):
        pass
    assert trace.variants[0].stop_reason == "timeout" and len(trace.variants[0].steps) < 64
    assert playground.info()["active_generations"] == 0


def test_unloadable_configured_model_falls_back_to_default_with_a_banner(config, smollm):
    """The Llama id cannot be downloaded here (offline): the app must come up on the default model and say so."""
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, gpu_only=False))
    lines = []
    served = serve_public(config, cuda=False, log=lines.append)
    assert served.reference == "default" and served.bundle.info.name == "SmolLM2-135M-Instruct"
    assert served.banner.startswith("meta-llama/Llama-2-7b-chat-hf could not be loaded")
    assert "default model" in served.banner and "Reason:" in served.banner
    assert any(line.startswith("loading meta-llama/Llama-2-7b-chat-hf (4bit") for line in lines)
    assert any("falling back" in line for line in lines)
