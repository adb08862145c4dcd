"""Plotly figures built from a :class:`~playground.trace.Trace`. Pure functions: no gradio, no model."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .trace import Trace

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
STOP_SYMBOLS = {"eos": "star", "max_new_tokens": "square", "stop_string": "diamond", "repetition": "x",
                "cancelled": "circle-open", "timeout": "circle-open"}


def ramp_starts(trace: Trace) -> list[tuple[str, int]]:
    """(variant name, first step with a bonus) for every column that runs the EOS reward ramp."""
    max_new = int(trace.settings["max_new_tokens"])
    return [(v.name, math.floor(float(i["params"]["reward_start_ratio"]) * max_new))
            for v in trace.variants for i in v.interventions if i["name"] == "eos_reward"]


def _layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01), height=height, margin=dict(l=50, r=20, t=50, b=40),
                      template="plotly_white", legend=dict(orientation="h", y=-0.18), hovermode="x unified")
    return fig


def p_eos_figure(trace: Trace, log_scale: bool = False) -> go.Figure:
    """p(EOS) per step for every column: raw (solid) and after interventions/sampling (dashed).

    Shaded: where a ramp is active. Markers: where each column stopped (symbol by reason) and where it first
    chose a different token than the first column.
    """
    fig = go.Figure()
    max_new = int(trace.settings["max_new_tokens"])
    for name, start in ramp_starts(trace):
        fig.add_vrect(x0=start - 0.5, x1=max_new - 0.5, fillcolor="orange", opacity=0.12, line_width=0,
                      annotation_text=f"ramp ({name})", annotation_position="top left")
    floor = 1e-8 if log_scale else 0.0
    for index, variant in enumerate(trace.variants):
        color = COLORS[index % len(COLORS)]
        steps = [s.step for s in variant.steps]
        raw = [max(s.p_eos_raw, floor) for s in variant.steps]
        final = [max(s.p_eos, floor) for s in variant.steps]
        fig.add_trace(go.Scatter(x=steps, y=raw, name=f"{variant.name} raw", mode="lines",
                                 line=dict(color=color, width=2), legendgroup=variant.name))
        fig.add_trace(go.Scatter(x=steps, y=final, name=f"{variant.name} final", mode="lines",
                                 line=dict(color=color, width=2, dash="dash"), legendgroup=variant.name))
        if variant.finished and steps:
            fig.add_trace(go.Scatter(
                x=[steps[-1]], y=[final[-1]], mode="markers", name=f"{variant.name}: {variant.stop_reason}",
                marker=dict(color=color, size=14, symbol=STOP_SYMBOLS.get(variant.stop_reason, "circle"),
                            line=dict(color="black", width=1)), legendgroup=variant.name, showlegend=False,
                hovertext=variant.status()))
        if variant.diverges_at is not None and variant.diverges_at < len(final):
            fig.add_trace(go.Scatter(
                x=[variant.diverges_at], y=[final[variant.diverges_at]], mode="markers", showlegend=False,
                marker=dict(color=color, size=10, symbol="triangle-up"), legendgroup=variant.name,
                hovertext=f"{variant.name} diverges from {trace.variants[0].name} at step {variant.diverges_at}"))
    fig.update_xaxes(title="step (generated tokens)", range=[-0.5, max_new - 0.5])
    fig.update_yaxes(title="p(EOS)", type="log" if log_scale else "linear",
                     range=[-8, 0.05] if log_scale else [0, 1.02])
    return _layout(fig, "p(EOS) per step — solid: model's own, dashed: after interventions and sampling")


def top_k_figure(trace: Trace, step: int, k: int = 10) -> go.Figure:
    """For one step, the top next tokens of every column: raw vs final probability, token text on the bars."""
    n = len(trace.variants)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[v.name for v in trace.variants], horizontal_spacing=0.08)
    for col, variant in enumerate(trace.variants, start=1):
        if step >= len(variant.steps):
            continue
        record = variant.steps[step]
        top = sorted(record.top_k, key=lambda t: max(t.p_raw, t.p), reverse=True)[:k][::-1]
        labels = [f"{t.token!r}" + (" ◀" if t.token_id == record.token_id else "") for t in top]
        fig.add_trace(go.Bar(y=labels, x=[t.p_raw for t in top], orientation="h", name="raw",
                             marker_color="#9ecae1", showlegend=col == 1, legendgroup="raw"), row=1, col=col)
        fig.add_trace(go.Bar(y=labels, x=[t.p for t in top], orientation="h", name="final",
                             marker_color="#08519c", showlegend=col == 1, legendgroup="final"), row=1, col=col)
    fig.update_layout(barmode="group")
    fig.update_xaxes(range=[0, 1], title="probability")
    _layout(fig, f"Top next tokens at step {step} (◀ = chosen)", height=380)
    fig.update_layout(hovermode="closest")
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
