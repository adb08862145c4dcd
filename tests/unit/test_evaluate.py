"""Evaluate without a model: metrics by hand on synthetic traces, sentence ends and loops, prompt files with bad
lines, the built-in set, sweep parsing, the link back to Compare, and the charts of a synthetic report."""

from __future__ import annotations

import math
import urllib.parse

import pytest

from playground.engine import Settings, Variant
from playground.evaluate.metrics import column_summary, has_loop, row_result
from playground.evaluate.prompt_files import Prompt, builtin_prompts, parse_prompts, read_prompts
from playground.evaluate.report import Report, compare_query
from playground.evaluate.sweep import Sweep
from playground.interventions import ends_sentence
from playground.trace import StepRecord, VariantTrace

EOS = 2


def variant_trace(ids, p_raw, text, stop_reason, wall=1.0, stop_detail=None) -> VariantTrace:
    steps = [StepRecord(step=i, token_id=t, token="", p_eos_raw=0.0, p_eos=0.0, p_chosen_raw=p, p_chosen=p,
                        entropy_raw=0.0, entropy=0.0, top_k=[]) for i, (t, p) in enumerate(zip(ids, p_raw))]
    return VariantTrace("column", [], prompt_tokens=5, token_ids=list(ids), text=text, steps=steps,
                        stop_reason=stop_reason, stop_detail=stop_detail, wall_seconds=wall)


def synthetic_rows():
    return [
        # EOS right after a sentence: a clean stop; the EOS step counts for speed, not for length or NLL.
        row_result(variant_trace([10, 11, 12, EOS], [0.5, 0.25, 1.0, 0.01], "Paris is nice.", "eos"), prompt=0, column=0, seed=0),
        # The limit, inside a loop of a 4-token block repeated 4 times.
        row_result(variant_trace([5, 6, 7, 8] * 4, [0.5] * 16, "la la la la", "max_new_tokens"), prompt=1, column=0, seed=0),
        # A stop string cut the answer before its end: mid-sentence.
        row_result(variant_trace([20, 21], [0.1, 0.2], "Here is a list:", "stop_string", stop_detail="\n\n"), prompt=2, column=0, seed=0),
        # EOS as the very first token: an empty answer, not a clean stop.
        row_result(variant_trace([EOS], [0.9], "", "eos"), prompt=3, column=0, seed=0),
    ]


def test_metrics_on_a_synthetic_trace_equal_the_hand_computed_values():
    rows = synthetic_rows()
    assert [r.length for r in rows] == [3, 16, 2, 0]
    assert [r.loops for r in rows] == [False, True, False, False]
    assert [r.clean_stop for r in rows] == [True, False, False, False]
    assert rows[0].nll == pytest.approx(math.log(2) + math.log(4))
    s = column_summary("column", rows)
    assert s["rows"] == 4
    assert s["eos_rate"]["rate"] == 0.5 and s["limit_rate"]["rate"] == 0.25
    assert s["stop_string_rate"]["rate"] == 0.25 and s["loop_rate"]["rate"] == 0.25
    assert s["mid_sentence_rate"]["rate"] == 0.75 and s["clean_stop_rate"]["rate"] == 0.25
    # Wilson 95 % for 1 of 4 is (0.0456, 0.6994); for 2 of 4 (0.1500, 0.8500).
    assert (s["clean_stop_rate"]["low"], s["clean_stop_rate"]["high"]) == pytest.approx((0.0456, 0.6994), abs=1e-4)
    assert (s["eos_rate"]["low"], s["eos_rate"]["high"]) == pytest.approx((0.1500, 0.8500), abs=1e-4)
    assert s["mean_length"] == 21 / 4
    assert s["median_length"] == 2.5  # between 2 and 3
    assert s["p90_length"] == pytest.approx(3 + 0.7 * 13)  # rank 2.7 of [0, 2, 3, 16]
    # NLL per token: (ln 2 + ln 4) + 16 ln 2 + (ln 10 + ln 5), over 3 + 16 + 2 tokens; EOS steps excluded.
    assert s["nll_per_token"] == pytest.approx((19 * math.log(2) + math.log(50)) / 21)
    assert s["tokens_per_second"] == pytest.approx(23 / 4)  # 4 + 16 + 2 + 1 steps over 4 s
    assert s["stop_reasons"] == {"eos": 2, "max_new_tokens": 1, "stop_string": 1, "repetition": 0, "timeout": 0}


def test_sentence_ends_and_loops():
    assert all(map(ends_sentence, ["Done.", 'He said "stop."', "Really?!", "終わり。", "```python\nx = 1\n```\n"]))
    assert not any(map(ends_sentence, ["I think that", "", "Here is a list:", "1. Eiffel Tower\n2"]))
    assert has_loop([1, 2] * 8) and has_loop([7] * 16) and has_loop(list(range(10)) + [3, 4, 5, 6, 7, 8] * 3)
    assert not has_loop([1, 2] * 7)  # 14 tokens: under the 16-token floor
    assert not has_loop(list(range(100)))
    assert not has_loop([1, 2, 3, 4, 5, 6, 7, 8] * 2)  # twice is not a loop


# -- prompt files ---------------------------------------------------------------------------------------------


def test_jsonl_bad_lines_are_named_and_good_lines_run(tmp_path):
    lines = [
        b'{"prompt": "What is the capital of France?"}',
        b'{"prompt": "unclosed',
        b'{"question": "wrong key"}',
        b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
        b'{"prompt": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"prompt": "' + b"x" * 50 + b'"}',
        b"",
        b'{"messages": [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4."}, '
        b'{"role": "user", "content": "And 3 + 3?"}]}',
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    prompts = read_prompts(path, max_chars=40)
    assert [p.text for p in prompts.prompts] == ["What is the capital of France?", "And 3 + 3?"]
    assert [p.where for p in prompts.prompts] == ["line 1", "line 8"]
    assert prompts.prompts[1].history[-1] == {"role": "assistant", "content": "4."}
    problems = "\n".join(prompts.problems)
    assert "line 2: not valid JSON" in problems
    assert "line 3: needs a 'prompt' string or a 'messages' list; found keys: question" in problems
    assert "line 4: the last message must be the user's" in problems
    assert "line 5: not UTF-8 text" in problems
    assert "line 6: the prompt is 50 characters; at most 40" in problems
    assert len(prompts.problems) == 5


def test_csv_text_empty_and_oversized_files(tmp_path):
    ok = parse_prompts(b'id,Prompt\n1,"Hello, there"\n2,\n3,Why is the sky blue?\n', "csv")
    assert [p.text for p in ok.prompts] == ["Hello, there", "Why is the sky blue?"]
    assert ok.problems == ["line 3: the 'prompt' cell is empty; skipped"]
    wrong = parse_prompts(b"question,answer\nWhy?,Because\n", "csv")
    assert wrong.prompts == [] and wrong.problems == ["line 1: the CSV header needs a 'prompt' column; found 'question', 'answer'"]
    assert parse_prompts(b"  \n", "text").problems == ["line 1: the file is empty — put one prompt per line"]
    text = parse_prompts(b"First prompt\n\n\xff\xfe\nSecond prompt\r\n", "text")
    assert [p.text for p in text.prompts] == ["First prompt", "Second prompt"]
    assert text.problems[0].startswith("line 3: not UTF-8 text")
    big = tmp_path / "big.txt"
    big.write_text("".join(f"prompt number {i}\n" for i in range(100)), encoding="utf-8")
    capped = read_prompts(big, max_bytes=100)
    assert [p.text for p in capped.prompts] == [f"prompt number {i}" for i in range(6)]
    assert capped.problems == ["line 7: the file is over the cap of 100 bytes; lines from 7 on were not read"]


def test_the_builtin_set_ships_with_the_package_and_varies():
    from playground.space.deploy import upload_files

    prompts = builtin_prompts()
    assert prompts.problems == [] and len(prompts.prompts) >= 30
    categories = {p.category for p in prompts.prompts}
    assert {"open question", "short answer", "yes/no", "list", "code", "poem", "multilingual", "multi-turn chat"} <= categories
    assert sum(bool(p.history) for p in prompts.prompts) >= 2
    assert "playground/data/prompts.jsonl" in upload_files()


def test_sweep_parsing():
    sweep = Sweep.parse(["reward_start_ratio=0.3,0.5,0.7", "strength=4,8,12,16", "at_boundary=true,false"])
    assert len(sweep.cells()) == 24
    assert sweep.cells()[0] == {"reward_start_ratio": 0.3, "strength": 4.0, "at_boundary": True}
    variants = sweep.variants(Variant("eos_reward+stop_strings", [{"name": "eos_reward"}, {"name": "stop_strings"}]))
    assert variants[0].name == "baseline" and len(variants) == 25
    assert variants[1].name == "eos_reward(reward_start_ratio=0.3,strength=4,at_boundary=true)+stop_strings"
    for bad, message in [("strength=x", "strength takes numbers"), ("at_boundary=on", "at_boundary must be true or false"), ("temperature=1", "not an eos_reward parameter"),
                         ("strength", "PARAMETER=V1,V2"), ("strength=200", "strength must be")]:
        with pytest.raises(ValueError, match=message):
            Sweep.parse(bad)


def test_compare_query_opens_the_prompt_with_the_same_columns():
    settings = Settings(max_new_tokens=48, temperature=0.7)
    columns = [Variant("baseline"), Variant("eos_reward(reward_start_ratio=0.3)+stop_strings",
                                            [{"name": "eos_reward", "params": {"reward_start_ratio": 0.3}}, "stop_strings"])]
    query = compare_query(Prompt([{"role": "user", "content": "Où aller à Paris ?"}]), columns, settings, seed=3)
    assert urllib.parse.parse_qs(query[1:]) == {
        "prompt": ["Où aller à Paris ?"], "columns": ["2"], "c1": ["baseline"],
        "c2": ["eos_reward(reward_start_ratio=0.3)+stop_strings"],
        "max_new_tokens": ["48"], "temperature": ["0.7"], "seed": ["3"]}
    chat = Prompt([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
    assert compare_query(chat, columns, settings, seed=0) is None
    # A parameter the page has no shared control for travels in the column's own spec.
    forced = [Variant("eos_reward", [{"name": "eos_reward", "params": {"force_at_end": True}}])]
    query = compare_query(Prompt([{"role": "user", "content": "a"}]), forced, settings, seed=0)
    assert urllib.parse.parse_qs(query[1:])["c1"] == ["eos_reward(force_at_end=true)"]


def test_charts_of_a_synthetic_report():
    from playground.evaluate.charts import length_figure, stop_reasons_figure

    rows = synthetic_rows()
    for index, row in enumerate(rows):
        row.column = index % 2
    prompts = [Prompt([{"role": "user", "content": f"p{i}"}]) for i in range(4)]
    report = Report(model="m", model_reference="default", settings=Settings(max_new_tokens=16).to_dict(), seeds=[0],
                    prompts=prompts, columns=[Variant("baseline"), Variant("eos_reward", ["eos_reward"])], rows=rows,
                    problems=[])
    lengths = length_figure(report)
    assert [list(t.y) for t in lengths.data] == [[3, 2], [16, 0]]
    reasons = stop_reasons_figure(report)
    shares = {t.name: list(t.y) for t in reasons.data}
    assert shares == {"eos": [0.5, 0.5], "max_new_tokens": [0.0, 0.5], "stop_string": [0.5, 0.0]}
