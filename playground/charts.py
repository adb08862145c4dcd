"""Plotly figures built from a :class:`~playground.trace.Trace`. Pure functions: no gradio, no model."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .trace import StopReason, Trace

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
# The plotly marker the live chart puts where a column stopped; a run stopped from outside gets an open circle.
STOP_MARKERS = {StopReason.EOS: "star", StopReason.MAX_NEW_TOKENS: "square", StopReason.STOP_STRING: "diamond",
                StopReason.REPETITION: "x", StopReason.CANCELLED: "circle-open", StopReason.TIMEOUT: "circle-open"}


def ramp_starts(trace: Trace) -> list[tuple[str, int]]:
    """(variant name, first step with a bonus) for every column that runs the EOS reward ramp."""
    max_new = int(trace.settings["max_new_tokens"])
    return [(v.name, math.floor(float(i["params"]["reward_start_ratio"]) * max_new))
            for v in trace.variants for i in v.interventions if i["name"] == "eos_reward"]


def _layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01), height=height, margin=dict(l=50, r=20, t=50, b=40),
                      template="plotly_white", legend=dict(orientation="h", y=-0.18), hovermode="x unified")
    return fig


def heatmap_figure(trace: Trace, variant_index: int = 0) -> go.Figure:
    """Every step of one column at a glance: rank 1..k of the final distribution, colour = probability."""
    variant = trace.variants[variant_index]
    steps = [s.step for s in variant.steps]
    k = max((len(s.top_k) for s in variant.steps), default=0)
    z, text = [], []
    for rank in range(k):
        row_z, row_text = [], []
        for s in variant.steps:
            ranked = sorted(s.top_k, key=lambda t: t.p, reverse=True)
            row_z.append(ranked[rank].p if rank < len(ranked) else None)
            row_text.append(repr(ranked[rank].token) if rank < len(ranked) else "")
        z.append(row_z)
        text.append(row_text)
    fig = go.Figure(go.Heatmap(x=steps, y=[f"#{r + 1}" for r in range(k)], z=z, text=text, zmin=0, zmax=1,
                               colorscale="Blues", hovertemplate="step %{x} · %{y}: %{text} p=%{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="step")
    _layout(fig, f"Top-{k} over all steps — {variant.name}", height=300)
    fig.update_layout(hovermode="closest")
    return fig


def stages_figure(trace: Trace, variant_index: int, step: int, k: int = 8) -> go.Figure:
    """For one step of one column, small multiples: the same top tokens' probabilities after each stage
    (raw → repetition penalty → ... → interventions → temperature → top-k → top-p → min-p → typical-p), so a
    student sees temperature flatten, top-k cut, min-p cut. The tokens are the raw top ``k`` plus any the final
    distribution ranks high (EOS an intervention promoted) and the chosen one, marked ◀ and drawn orange. A
    token outside a stage's recorded top list has no bar there unless the stage left fewer tokens than that
    list holds, which makes it exactly 0. Hovering a bar shows the stage's note (what it did at this step)."""
    variant = trace.variants[variant_index]
    if step >= len(variant.steps):
        return _layout(go.Figure(), f"{variant.name}: no step {step}")
    record = variant.steps[step]
    stages = record.stages
    tokens: dict[int, str] = {}
    for token_id, token, _ in stages[0].top[:k]:
        tokens[token_id] = token
    for token_id, token, p in stages[-1].top[:k]:
        if p > 0 and len(tokens) < k + 3:
            tokens.setdefault(token_id, token)
    tokens.setdefault(record.token_id, record.token)
    known = {(0, record.token_id): record.p_chosen_raw, (len(stages) - 1, record.token_id): record.p_chosen}

    def probability(index: int, token_id: int) -> float | None:
        stage = stages[index]
        listed = {t: p for t, _, p in stage.top}
        if token_id in listed:
            return listed[token_id]
        if (index, token_id) in known:
            return known[(index, token_id)]
        return 0.0 if stage.kept <= len(stage.top) else None

    order = sorted(tokens, key=lambda t: -(probability(0, t) or 0.0))[::-1]  # most likely on top
    labels = [f"{tokens[t]!r}" + (" ◀" if t == record.token_id else "") for t in order]
    colors = ["#ff7f0e" if t == record.token_id else "#1f77b4" for t in order]
    columns = min(len(stages), 3)
    rows = math.ceil(len(stages) / columns)
    fig = make_subplots(rows=rows, cols=columns, shared_yaxes=True, horizontal_spacing=0.04, vertical_spacing=0.12,
                        subplot_titles=[f"{s.name} · {s.kept} kept" for s in stages])
    for index, stage in enumerate(stages):
        values = [probability(index, t) for t in order]
        fig.add_trace(go.Bar(y=labels, x=values, orientation="h", marker_color=colors, name=stage.name, showlegend=False,
                             hovertext=[f"{stage.note}<br>{label}: " + ("below this stage's top list" if v is None else f"p={v:.4f}")
                                        for label, v in zip(labels, values)], hoverinfo="text"),
                      row=index // columns + 1, col=index % columns + 1)
    fig.update_xaxes(range=[0, 1])
    _layout(fig, f"{variant.name} · step {step}: the top tokens after each stage (◀ = chosen)", height=70 + 230 * rows)
    fig.update_layout(hovermode="closest")
    return fig
