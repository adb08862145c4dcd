"""Plotly figures built from a :class:`~playground.trace.Trace`. Pure functions: no gradio, no model."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from .trace import Trace

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


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
