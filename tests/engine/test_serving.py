"""What a Space on a T4 needs besides the decode loop: fp16 where bf16 is emulated, a gated model's load failure
that says what to do, one model served to everyone in public mode (unless spaces.yaml allows swaps, never while
runs decode), the KV budget from the flag, the environment or spaces.yaml, and /info reporting it."""

from __future__ import annotations

import time

import pytest
from playground.decoder import decode_loop
from playground.engine import Comparison, Settings, Variant
from playground.service import Playground
from playground.space.policy import Policy


def test_public_mode_serves_one_model_and_the_switch_allows_swaps_but_not_during_runs(tiny, monkeypatch):
    loads = []
    monkeypatch.setattr("playground.service.load_model", lambda reference, **options: loads.append(reference) or tiny)
    fixed = Playground(tiny, "tiny", policy=Policy(public=True, allowed_models=("tiny", "default"), model_swap=False))
    with pytest.raises(ValueError, match="^model: this app serves tiny to everyone, and visitors cannot switch it"):
        fixed.load("default")
    assert fixed.load("tiny")["name"] == tiny.info.name and loads == []  # the served model: nothing reloads

    swapping = Playground(tiny, "tiny", policy=Policy(public=True, allowed_models=("tiny", "default"), model_swap=True))
    running = Comparison(tiny, "Hello", [Variant("a", ["ban_eos"])], Settings(max_new_tokens=400))
    stream = running.run()
    next(stream)
    try:
        with pytest.raises(ValueError, match="^model: other visitors' runs are decoding on tiny"):
            swapping.load("default")
    finally:
        stream.close()
    deadline = time.time() + 30
    while swapping.info()["rows_in_flight"] and time.time() < deadline:
        time.sleep(0.05)
    swapping.load("default")
    assert loads == ["default"] and swapping.reference == "default"


def test_info_reports_the_kv_budget_its_use_and_the_rows_waiting(tiny):
    budget = decode_loop(tiny).kv_budget
    try:
        info = Playground(tiny, "tiny", kv_budget_mb=3).info()
        assert info["kv_budget_mb"] == 3 and info["kv_in_use_mb"] == 0 and info["rows_waiting"] == 0
        assert {"kv_peak_mb", "kv_padding_fraction"} <= set(info)
        with pytest.raises(ValueError, match=r"^max_new_tokens: this run needs up to 0.42 MB of KV cache \(2 columns × "
                                             r"\(31 prompt \+ 400 new tokens\)\), more than this server's KV budget of 0.01 MB"):
            Playground(tiny, "tiny", kv_budget_mb=0.01).comparison(
                "Hi", [[], []], max_new_tokens=400, temperature=0, top_p=1, top_k=0, seed=0, reward_start_ratio=0.5,
                strength=8)
    finally:
        decode_loop(tiny).kv_budget = budget  # the session's other tests get the default back
