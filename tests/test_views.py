"""What the page draws from a trace: token view, stage table and charts (no server needed)."""

from __future__ import annotations

import math

from playground import charts
from playground.engine import Settings, Variant, compare
from playground.interventions import EosRewardLogitsProcessor
from playground.ui.views import stages_rows, token_html


def test_token_view_escapes_model_text_and_draws_eos_as_a_badge(tiny):
    trace = compare(tiny, "Hello", [Variant("a", ["seed_article"])], Settings(max_new_tokens=5))
    variant = trace.variants[0]
    assert variant.stop_reason == "eos"
    variant.steps[0].token = '<script>alert("x")</script>'  # whatever a model writes is shown as text
    variant.steps.insert(0, variant.steps[0])
    html = token_html(variant)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("⏹ EOS") == 1
    assert "<|im_end|>" not in html  # the EOS token's own text is not repeated before the badge


def test_stage_table_follows_the_sampling_pipeline(tiny):
    trace = compare(tiny, "Hello", [Variant("a", ["eos_reward"])], Settings(max_new_tokens=3, temperature=0.7, top_k=5, top_p=0.9))
    rows = stages_rows(trace, 0, 1)
    assert [r[0] for r in rows] == ["raw", "interventions", "temperature", "top_k", "top_p", "sampled"]
    assert rows[3][2] <= 5  # top-k kept at most 5 tokens
    assert rows[-1][3] == repr(trace.variants[0].steps[1].token)
    assert stages_rows(trace, 0, 99) == [] and stages_rows(None, 0, 0) == []


def test_p_eos_chart_shades_the_ramp_where_the_processor_starts_and_marks_stops(tiny):
    ramp = {"name": "eos_reward", "params": {"reward_start_ratio": 0.35}}
    trace = compare(tiny, "Hello", [Variant("base"), Variant("ramp", [ramp])], Settings(max_new_tokens=20))
    [(name, start)] = charts.ramp_starts(trace)
    assert name == "ramp" and start == EosRewardLogitsProcessor(2, 20, reward_start_ratio=0.35).start_step == 7
    figure = charts.p_eos_figure(trace, log_scale=True)
    assert figure.layout.shapes[0].x0 == start - 0.5
    lines = [t for t in figure.data if t.mode == "lines"]
    assert [t.name for t in lines] == ["base raw", "base final", "ramp raw", "ramp final"]
    assert all(len(t.x) == len(trace.variants[i // 2].steps) for i, t in enumerate(lines))
    assert figure.layout.yaxis.type == "log" and all(y > 0 for t in lines for y in t.y)
    markers = [t for t in figure.data if t.mode == "markers"]
    assert len(markers) >= 2  # where each column stopped


def test_top_k_and_heatmap_show_token_text(tiny):
    trace = compare(tiny, "Hello", [Variant("a"), Variant("b", ["ban_eos"])], Settings(max_new_tokens=4))
    bars = charts.top_k_figure(trace, 2)
    chosen = trace.variants[0].steps[2].token
    assert any(label.startswith(repr(chosen)) and label.endswith("◀") for label in bars.data[0].y)
    heat = charts.heatmap_figure(trace, 1)
    assert len(heat.data[0].x) == 4 and "%{text}" in heat.data[0].hovertemplate
    first = max(trace.variants[1].steps[0].top_k, key=lambda t: t.p)
    assert heat.data[0].text[0][0] == repr(first.token)
    assert math.isclose(heat.data[0].z[0][0], first.p)


def test_downloadable_traces_are_written_and_old_ones_removed(tiny, tmp_path):
    import json
    import os

    from playground.service import write_trace_files

    trace = compare(tiny, "Hello", [Variant("a")], Settings(max_new_tokens=3))
    stale = tmp_path / "trace-old"
    stale.mkdir()
    os.utime(stale, (0, 0))
    json_path, csv_path = write_trace_files(trace, root=tmp_path)
    assert not stale.exists()
    assert json.loads(open(json_path).read())["variants"][0]["steps"][0]["stages"]
    assert open(csv_path).read().count("\n") == 1 + 3
    write_trace_files(trace, root=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2  # recent traces stay
