"""Branches: "what if the model had picked that other token (or EOS) here?" — in the engine, the service and the CLI."""

from __future__ import annotations

import json

import pytest

from playground.cli import main
from playground.engine import Comparison, Settings, Variant, branch_variant, compare
from playground.service import Playground

PARIS = "What can I do in Paris?"
RAMP = {"name": "eos_reward", "params": {"reward_start_ratio": 0.25}}


def decode_branches(bundle, trace, branches):
    """Decode branches of ``trace`` in one batch and return the trace with them appended."""
    comparison = Comparison.of_branches(bundle, trace, branches)
    for branch_trace in comparison.run():
        pass
    return trace.with_branches(branch_trace)


@pytest.mark.parametrize("settings", [
    Settings(max_new_tokens=20),
    Settings(max_new_tokens=20, temperature=0.9, top_p=0.95, min_p=0.02, repetition_penalty=1.1, seed=5),
], ids=["greedy", "sampled"])
def test_a_branch_forced_with_the_columns_own_token_reproduces_the_column(smollm, settings):
    trace = compare(smollm, PARIS, [Variant("baseline"), Variant("ramp", [RAMP])], settings)
    ramp = trace.variants[1]
    step = 9
    merged = decode_branches(smollm, trace, [(2, step, ramp.token_ids[step]), (1, 3, trace.variants[0].token_ids[3])])
    again, base_again = merged.variants[2:]
    assert again.token_ids == ramp.token_ids and again.text == ramp.text
    assert again.stop_reason == ramp.stop_reason
    assert [s.p_eos for s in again.steps] == pytest.approx([s.p_eos for s in ramp.steps], rel=1e-3, abs=1e-9)
    assert base_again.token_ids == trace.variants[0].token_ids
    assert again.branch_of == (2, step) and again.name == f"ramp → {smollm.tokenizer.decode([ramp.token_ids[step]])!r} at step {step}"


def test_a_branch_forced_to_eos_ends_at_that_step(smollm):
    trace = compare(smollm, PARIS, [Variant("baseline")], Settings(max_new_tokens=12))
    parent = trace.variants[0]
    merged = decode_branches(smollm, trace, [(1, 4, 2)])
    branch = merged.variants[1]
    assert branch.stop_reason == "eos" and len(branch.steps) == 5
    assert branch.status().startswith("stopped by EOS at step 4")
    assert branch.token_ids == parent.token_ids[:4] + [2]
    assert branch.text == smollm.tokenizer.decode(parent.token_ids[:4])
    # Before the fork the branch records the same telemetry as its parent; at the fork it shows what EOS had.
    assert [s.p_eos_raw for s in branch.steps[:4]] == pytest.approx([s.p_eos_raw for s in parent.steps[:4]], rel=1e-4)
    assert branch.steps[4].p_eos == pytest.approx(parent.steps[4].p_eos, rel=1e-4)
    assert branch.diverges_at == 4
    data = json.loads(merged.to_json())
    assert [v["branch_of"] for v in data["variants"]] == [None, {"column": 1, "step": 4}]
    assert data["variants"][1]["summary"]["branch_of"] == {"column": 1, "step": 4}


def test_a_sampled_branch_with_another_token_diverges_at_the_fork(tiny):
    settings = Settings(max_new_tokens=15, temperature=1.0, seed=3)
    trace = compare(tiny, "Hello", [Variant("a", ["ban_eos"])], settings)
    parent = trace.variants[0]
    other = next(t.token_id for t in parent.steps[6].top_k if t.token_id not in (parent.token_ids[6], 2))
    branch = decode_branches(tiny, trace, [(1, 6, other)]).variants[1]
    assert branch.token_ids[:7] == parent.token_ids[:6] + [other]
    assert branch.diverges_at == 6 and len(branch.steps) == 15 and branch.interventions == parent.interventions


@pytest.mark.parametrize("column, step, token_id, message", [
    (0, 1, 5, "branch column must be between 1 and 2 (columns count from 1), got 0"),
    (3, 1, 5, "branch column must be between 1 and 2"),
    (1, 6, 5, "branch step must be between 0 and 5 (column 1 'a' has 6 steps), got 6"),
    (1, -1, 5, "branch step must be between 0 and 5"),
    (2, 0, 49152, "branch token_id must be between 0 and 49151 (the vocabulary), got 49152"),
    (1, 1.5, 5, "branch step must be a whole number, got 1.5"),
    ("1", 1, 5, "branch column must be a whole number, got '1'"),
])
def test_bad_branches_get_a_sentence_naming_the_field(tiny, column, step, token_id, message):
    trace = compare(tiny, "Hello", [Variant("a", ["ban_eos"]), Variant("b", ["ban_eos"])], Settings(max_new_tokens=6))
    with pytest.raises(ValueError) as error:
        branch_variant(tiny, trace, column, step, token_id)
    assert message in str(error.value)


def test_forced_tokens_must_be_token_ids(tiny):
    with pytest.raises(ValueError, match="forced_token_ids must be at most max_new_tokens"):
        Comparison(tiny, "Hello", [Variant("a", forced_token_ids=[1, 10**6])], Settings(max_new_tokens=4))


def test_service_branch_streams_the_trace_with_the_new_column_appended(tiny):
    playground = Playground(tiny)
    comparison = playground.comparison("Hello", [[], ["ban_eos"]], max_new_tokens=6, temperature=0.0, top_p=1.0,
                                       top_k=0, seed=0, reward_start_ratio=0.5, strength=5.0)
    for trace in playground.stream(comparison):
        pass
    branch = playground.branch(trace, 2, 3, 2)
    streamed = list(playground.stream(branch))
    assert all(len(t.variants) == 3 and t.variants[:2] == trace.variants for t in streamed)
    final = streamed[-1].variants[2]
    assert final.branch_of == (2, 3) and final.stop_reason == "eos" and len(final.steps) == 4
    assert playground.info()["active_generations"] == 0
    trace.model = "another-model"
    with pytest.raises(ValueError, match="this trace was decoded by another-model, and tiny-random-llama is loaded now"):
        playground.branch(trace, 1, 0, 2)


def test_service_comparison_with_branches_decodes_them_after_the_columns(tiny):
    playground = Playground(tiny)
    comparison = playground.comparison("Hello", [[], ["ban_eos"]], max_new_tokens=5, temperature=0.7, top_p=1.0,
                                       top_k=0, seed=0, reward_start_ratio=0.5, strength=5.0, min_p=0.1,
                                       typical_p=0.9, repetition_penalty=1.3, no_repeat_ngram_size=2,
                                       branches=[[2, 1, 2], [1, 0, 100]])
    traces = list(playground.stream(comparison))
    assert len(traces[0].variants) == 2 and len(traces[-1].variants) == 4
    first, second = traces[-1].variants[2:]
    assert first.branch_of == (2, 1) and first.stop_reason == "eos" and second.token_ids[0] == 100
    assert traces[-1].settings["min_p"] == 0.1 and traces[-1].settings["no_repeat_ngram_size"] == 2


@pytest.mark.parametrize("branches, message", [
    ("1:2:3", "branches must be a list of [column, step, token_id]"),
    ([[1, 2]], "a branch is [column, step, token_id] (three whole numbers), got [1, 2]"),
    ([[3, 0, 1]], "branch column must be between 1 and 2"),
    ([[1, 5, 1]], "branch step must be between 0 and 4 (max_new_tokens - 1), got 5"),
])
def test_service_refuses_bad_branches_before_decoding(tiny, branches, message):
    with pytest.raises(ValueError) as error:
        Playground(tiny).comparison("Hello", [[], ["ban_eos"]], max_new_tokens=5, temperature=0.0, top_p=1.0, top_k=0,
                                    seed=0, reward_start_ratio=0.5, strength=5.0, branches=branches)
    assert message in str(error.value)


def test_cli_branch_adds_one_more_variant_in_json_and_text(smollm, monkeypatch, capsys):
    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: smollm)
    assert main(["compare", "--prompt", PARIS, "--max-new-tokens", "8", "--repetition-penalty", "1.2",
                 "--branch", "1:2:2", "--branch", "2:0:9906", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in data["variants"]][:2] == ["baseline", "eos_reward"]
    branch, second = data["variants"][2:]
    assert branch["branch_of"] == {"column": 1, "step": 2} and branch["stop_reason"] == "eos"
    assert branch["token_ids"] == data["variants"][0]["token_ids"][:2] + [2]
    assert second["token_ids"][0] == 9906 and data["settings"]["repetition_penalty"] == 1.2
    assert main(["compare", "--prompt", PARIS, "--max-new-tokens", "4", "--branch", "1:1:2"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("baseline"))
    assert "│ baseline → '<|im_end|>' at step 1" in header


@pytest.mark.parametrize("spec, message", [
    ("1:x:2", "error: --branch must be COLUMN:STEP:TOKEN_ID, three whole numbers such as 1:12:2"),
    ("1:2", "error: --branch must be COLUMN:STEP:TOKEN_ID"),
    ("3:0:2", "error: branch column must be between 1 and 2 (columns count from 1), got 3"),
    ("1:5:2", "error: branch step must be between 0 and 4 (max_new_tokens - 1), got 5"),
    ("2:1:2", "error: branch step must be between 0 and 0 (column 2 'seed_article' has 1 step), got 1"),
])
def test_cli_refuses_bad_branch_specs_with_a_sentence(tiny, monkeypatch, capsys, spec, message):
    monkeypatch.setattr("playground.models.load_model", lambda reference, **options: tiny)
    # The article's processor stops column 2 at step 0 (see test_engine), so "2:1:2" is past its end.
    assert main(["compare", "--prompt", "Hello", "--max-new-tokens", "5", "--intervention", "seed_article",
                 "--branch", spec]) == 2
    assert message in capsys.readouterr().err


def test_a_forced_branch_says_forced_in_the_story_and_the_inspector(tiny):
    from playground.story import describe_variant
    from playground.views import inspector_html

    trace = compare(tiny, "Hello", [Variant("base")], Settings(max_new_tokens=6))
    other = next(t.token_id for t in trace.variants[0].steps[3].top_k if t.token_id != trace.variants[0].token_ids[3])
    merged = decode_branches(tiny, trace, [(1, 2, tiny.info.stop_token_ids[0]), (1, 3, other)])
    stopped, continued = merged.variants[1:]
    assert describe_variant(merged, 1).startswith(f"{stopped.name} was forced to end with EOS at step 2")
    assert "on its own" not in describe_variant(merged, 1)
    assert "(a branch: steps 0–3 forced, the model chose from step 4 on)" in describe_variant(merged, 2)
    assert "· step 3 · forced <code>" in inspector_html(merged, 2, 3, tiny.info.stop_token_ids)
    assert "· step 4 · chose <code>" in inspector_html(merged, 2, 4, tiny.info.stop_token_ids)
    assert "· step 1 · chose <code>" in inspector_html(merged, 0, 1, tiny.info.stop_token_ids)


def test_removing_a_branch_removes_its_own_branches_and_renumbers_the_rest(tiny):
    trace = compare(tiny, "Hello", [Variant("a"), Variant("b", ["ban_eos"])], Settings(max_new_tokens=5))
    ids = [v.token_ids for v in trace.variants]
    merged = decode_branches(tiny, trace, [(1, 1, ids[0][1]), (2, 1, ids[1][1])])  # columns 3 (of a) and 4 (of b)
    merged = decode_branches(tiny, merged, [(3, 2, merged.variants[2].token_ids[2]), (4, 2, merged.variants[3].token_ids[2])])
    names = [v.name for v in merged.variants]
    kept = merged.without_branch(2)  # the branch of a, and its own branch (column 5)
    assert [v.name for v in kept.variants] == [names[0], names[1], names[3], names[5]]
    assert [v.branch_of for v in kept.variants] == [None, None, (2, 1), (3, 2)]
    assert merged.variants[5].branch_of == (4, 2)  # the original trace is unchanged
    with pytest.raises(ValueError, match="column 1 is not a branch"):
        merged.without_branch(0)
