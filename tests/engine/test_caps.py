"""Evaluations inside the caps (issue 25): types before ranges before sizes, a sweep's cells counted before any
is built, a time limit for the whole evaluation, and prompt/sample lines read with a depth and size limit."""

from __future__ import annotations

import pytest

from playground.engine import Settings, Variant
from playground.evaluate.prompt_files import prompts_from_items
from playground.evaluate.runner import Evaluation
from playground.service import Playground
from playground.space.policy import Policy

DEEP = "[" * 200_000 + "]" * 200_000


def test_evaluation_fields_are_type_checked_before_anything_is_multiplied(tiny):
    playground = Playground(tiny, policy=Policy(public=True, allowed_models=("default",)))
    base = dict(temperature=0, top_p=1, top_k=0, seed=0, reward_start_ratio=0.5, strength=12)
    cases = [
        ({"seeds": 30_000_000, "max_new_tokens": [0] * 10}, "max_new_tokens must be a whole number"),
        ({"seeds": "three", "max_new_tokens": 4}, "seeds must be a whole number, got 'three'"),
        ({"seeds": 2.5, "max_new_tokens": 4}, "seeds must be a whole number, got 2.5"),
        ({"seeds": 17, "max_new_tokens": 4}, "seeds must be between 1 and 16, got 17"),
        ({"max_new_tokens": 4, "use_chat_template": "no"}, "use_chat_template must be true or false, got 'no'"),
        ({"max_new_tokens": 4, "use_chat_template": 0}, "use_chat_template must be true or false, got 0"),
        ({"max_new_tokens": 4, "sweep": 7}, "sweep must be text"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=f"^{message}"):
            playground.evaluation(["Hi"], [[]], **{**base, **overrides})
    # "false" is false (the template is off), not a truthy string.
    evaluation = playground.evaluation(["Hi"], [[]], **base, max_new_tokens=2, use_chat_template="false")
    assert evaluation.settings.use_chat_template is False


def test_rows_are_capped_in_every_mode(tiny):
    prompts = prompts_from_items([f"Question {i}?" for i in range(1000)])
    variants = [Variant(f"c{i}") for i in range(11)]
    with pytest.raises(ValueError, match=r"^evaluation too large: 1000 prompts × 11 columns × 1 seeds = 11,000 rows"):
        Evaluation(tiny, prompts, variants, Settings(max_new_tokens=2))


def test_an_evaluation_stops_at_the_time_limit_and_keeps_what_finished(tiny):
    """8 rows of 400 tokens, 4 at a time (a random model never stops; ban_eos makes sure) against a 0.3 s limit:
    the rows in flight are cancelled, the waiting ones never start, and the report says why it is incomplete."""
    prompts = prompts_from_items([f"Tell me a long story about the sea, part {i}." for i in range(8)])
    evaluation = Evaluation(tiny, prompts, [Variant("ban_eos", ["ban_eos"])], Settings(max_new_tokens=400),
                            time_limit_seconds=0.3, max_rows=4)
    done = list(evaluation.run())
    report = evaluation.report()
    assert evaluation.timed_out and not report.complete and len(report.rows) < 8
    assert (done[-1] if done else 0) == len(report.rows)
    assert any(p.startswith("time limit: this app stops an evaluation after 0.3 s") for p in report.problems)


def test_a_deeply_nested_sample_line_is_named(tiny, tmp_path):
    sample = tmp_path / "deep.jsonl"
    sample.write_text('{"text": "Hi"}\n' + DEEP + "\n")
    with pytest.raises(ValueError, match=r"^training sample deep\.jsonl, line 2: nested more than 64 levels deep"):
        Playground(tiny).read_sample(str(sample))
