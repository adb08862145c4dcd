"""What the page draws from a trace: token views, chart data, inspector, heatmap (no server needed)."""

from __future__ import annotations

import dataclasses
import json
import math

from playground import charts
from playground.engine import Settings, Variant, compare
from playground.interventions import EosRewardLogitsProcessor
from playground.views import (chart_header, chart_lines, chart_stop, default_selection, inspector_html,
                                 token_spans)


def test_token_view_escapes_model_text_and_draws_eos_as_a_badge(tiny):
    trace = compare(tiny, "Hello", [Variant("a"), Variant("b", ["seed_article"])], Settings(max_new_tokens=5))
    plain, stopped = trace.variants
    plain.steps[0].token = '<script>alert("x")</script>'  # whatever a model writes is shown as text
    html = token_spans(plain)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert stopped.stop_reason == "eos"
    html = token_spans(stopped)
    assert html.count('class="eos-badge"') == 1 and html.count("<span") == len(stopped.steps)
    assert "<|im_end|>" not in html  # the EOS token's own text is not repeated before the badge
    assert f'data-s="{stopped.steps[-1].step}" class="eos-badge"' in html  # the badge is clickable too


def test_streamed_views_only_grow(tiny):
    """What the page had after k steps, plus what it appends for steps k..n, is the finished view: each
    streamed update is an append."""
    trace = compare(tiny, "Hello", [Variant("a"), Variant("b", ["ban_eos"])], Settings(max_new_tokens=9))
    for column, variant in enumerate(trace.variants):
        for k in range(len(variant.steps) + 1):
            running = dataclasses.replace(variant, steps=variant.steps[:k], stop_reason=None)
            assert token_spans(running) + token_spans(variant, k) == token_spans(variant)
            assert chart_lines(running, column) + chart_lines(variant, column, k) == chart_lines(variant, column)
    lines = chart_lines(trace.variants[1], 1).splitlines()
    assert len(lines) == 9 and all(line.split()[5] == "-" for line in lines)  # EOS banned: no margin after it
    assert chart_stop(trace.variants[1], 1) == "S 1 8 max_new_tokens\n"


def test_chart_header_puts_the_ramp_where_the_processor_starts(tiny):
    ramp = {"name": "eos_reward", "params": {"reward_start_ratio": 0.35}}
    trace = compare(tiny, "Hello", [Variant("base"), Variant("ramp", [ramp])], Settings(max_new_tokens=20))
    header = json.loads(chart_header(trace))
    assert header["max_new"] == 20
    assert [c["ramp"] for c in header["columns"]] == [None, EosRewardLogitsProcessor(2, 20, reward_start_ratio=0.35).start_step]
    assert header["columns"][1]["ramp"] == 7


def test_inspector_shows_the_step_the_margin_and_every_stage(tiny):
    trace = compare(tiny, "Hello", [Variant("a", ["eos_reward"])], Settings(max_new_tokens=3, temperature=0.7, top_k=5, top_p=0.9))
    step = trace.variants[0].steps[1]
    html = inspector_html(trace, 0, 1, tiny.info.stop_token_ids)
    shown = "EOS" if step.token_id in tiny.info.stop_token_ids else repr(step.token)  # the ramp starts at step 1
    assert f"step 1 · chose <code>{shown}</code>" in html.replace("&#x27;", "'")
    assert "EOS would need" in html or "top choice" in html
    stages = [cell.split("</td>")[0] for cell in html.split("<tr><td>")[1:]]
    assert stages == ["raw", "interventions", "temperature", "top_k", "top_p", "sampled"]
    assert "Click a token" in inspector_html(trace, 0, 99) and "Click a token" in inspector_html(None, 0, 0)


def test_after_a_run_the_inspector_opens_on_the_interventions_stop(tiny):
    trace = compare(tiny, "Hello", [Variant("base"), Variant("seed", ["seed_article"])], Settings(max_new_tokens=6))
    assert trace.variants[1].stop_reason == "eos"
    assert default_selection(trace) == (1, len(trace.variants[1].steps) - 1)
    plain = compare(tiny, "Hello", [Variant("base")], Settings(max_new_tokens=4))
    assert default_selection(plain) == (0, len(plain.variants[0].steps) - 1)


def test_heatmap_shows_token_text(tiny):
    trace = compare(tiny, "Hello", [Variant("a"), Variant("b", ["ban_eos"])], Settings(max_new_tokens=4))
    heat = charts.heatmap_figure(trace, 1)
    assert len(heat.data[0].x) == 4 and "%{text}" in heat.data[0].hovertemplate
    first = max(trace.variants[1].steps[0].top_k, key=lambda t: t.p)
    assert heat.data[0].text[0][0] == repr(first.token)
    assert math.isclose(heat.data[0].z[0][0], first.p)


def test_downloadable_traces_are_written_and_old_ones_removed(tiny, tmp_path):
    import os

    from playground.service import write_trace_files

    trace = compare(tiny, "Hello", [Variant("a")], Settings(max_new_tokens=3))
    stale = tmp_path / "trace-old"
    stale.mkdir()
    os.utime(stale, (0, 0))
    json_path, csv_path = write_trace_files(trace, root=tmp_path)
    assert not stale.exists()
    data = json.loads(open(json_path).read())
    assert data["variants"][0]["steps"][0]["stages"]
    assert "eos_margin_raw" in data["variants"][0]["steps"][0]
    csv_text = open(csv_path).read()
    assert csv_text.count("\n") == 1 + 3 and "eos_margin_raw,eos_margin" in csv_text
    write_trace_files(trace, root=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2  # recent traces stay
