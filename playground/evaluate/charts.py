"""Plotly figures of an evaluation :class:`~playground.evaluate.report.Report`. Pure functions: no gradio, no model."""

from __future__ import annotations

import itertools

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..charts import COLORS
from ..trace import StopReason
from .metrics import STOP_REASONS
from .report import Report
from .sweep import Sweep

STOP_COLORS = {StopReason.EOS: "#2ca02c", StopReason.MAX_NEW_TOKENS: "#d62728", StopReason.STOP_STRING: "#1f77b4",
               StopReason.REPETITION: "#9467bd", StopReason.TIMEOUT: "#7f7f7f"}


def _layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01), height=height, margin=dict(l=50, r=20, t=50, b=40),
                      template="plotly_white", legend=dict(orientation="h", y=-0.2))
    return fig


def length_figure(report: Report) -> go.Figure:
    """Each column's answer lengths as a box with every row as a point."""
    fig = go.Figure()
    for index, column in enumerate(report.columns):
        lengths = [r.length for r in report.rows_of(index)]
        fig.add_trace(go.Box(y=lengths, name=column.name, boxpoints="all", jitter=0.4, pointpos=0,
                             marker=dict(color=COLORS[index % len(COLORS)], size=5), line=dict(width=1.5)))
    fig.update_yaxes(title="generated tokens (EOS not counted)", rangemode="tozero")
    fig.add_hline(y=report.settings["max_new_tokens"], line_dash="dot", line_color="#d62728",
                  annotation_text="max new tokens", annotation_position="top left")
    fig.update_layout(showlegend=False)
    return _layout(fig, "Answer length per column")


def stop_reasons_figure(report: Report) -> go.Figure:
    """Per column, the share of rows ending each way, stacked to 100 %."""
    fig = go.Figure()
    names = [c.name for c in report.columns]
    counts = [s["stop_reasons"] for s in report.summary()]
    totals = [max(sum(c.values()), 1) for c in counts]
    for reason in STOP_REASONS:
        shares = [c[reason] / total for c, total in zip(counts, totals)]
        if any(shares):
            fig.add_trace(go.Bar(x=names, y=shares, name=reason, marker_color=STOP_COLORS[reason],
                                 text=[f"{c[reason]}" if c[reason] else "" for c in counts],
                                 hovertemplate=f"{reason}: %{{y:.0%}} (%{{text}} rows)<extra>%{{x}}</extra>"))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="share of rows", tickformat=".0%", range=[0, 1])
    return _layout(fig, "How each column's answers ended")


def sweep_figure(report: Report) -> go.Figure:
    """The sweep grid: colour = clean-stop rate, text = rate and mean length, the best cell framed. The first swept
    parameter runs down, the second across; any further parameters get one panel per combination."""
    sweep: Sweep | None = report.sweep
    fig = go.Figure()
    if sweep is None:
        return _layout(fig, "No sweep in this evaluation")
    keys = list(sweep.grid)
    rows_key, cols_key, panel_keys = keys[0], (keys[1] if len(keys) > 1 else None), keys[2:]
    cells = {tuple(sorted(c["params"].items())): c for c in report.sweep_cells()}
    panels = list(itertools.product(*(sweep.grid[k] for k in panel_keys))) or [()]

    def show(value):
        return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)

    titles = [", ".join(f"{k}={show(v)}" for k, v in zip(panel_keys, panel)) for panel in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles if panel_keys else None, horizontal_spacing=0.08)
    best = report.best_cell()
    y_values = sweep.grid[rows_key]
    x_values = sweep.grid[cols_key] if cols_key else [None]
    for position, panel in enumerate(panels, start=1):
        z, text = [], []
        for y in y_values:
            row_z, row_text = [], []
            for x in x_values:
                params = {rows_key: y, **({cols_key: x} if cols_key else {}), **dict(zip(panel_keys, panel))}
                cell = cells.get(tuple(sorted(params.items())))
                value = cell["clean_stop_rate"]["rate"] if cell else None
                row_z.append(value)
                row_text.append("—" if value is None else f"{value:.0%}<br>{cell['mean_length']:.0f} tok")
            z.append(row_z)
            text.append(row_text)
        fig.add_trace(go.Heatmap(
            x=[show(x) for x in x_values] if cols_key else [""], y=[show(y) for y in y_values], z=z, text=text,
            texttemplate="%{text}", zmin=0, zmax=1, colorscale="Greens", showscale=position == len(panels),
            colorbar=dict(title="clean stop", tickformat=".0%"),
            hovertemplate=f"{rows_key}=%{{y}}" + (f" {cols_key}=%{{x}}" if cols_key else "")
                          + ": clean stop %{z:.0%}<extra></extra>"), row=1, col=position)
        if best is not None and all(best["params"][k] == v for k, v in zip(panel_keys, panel)):
            x = x_values.index(best["params"][cols_key]) if cols_key else 0
            y = y_values.index(best["params"][rows_key])
            fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5, line=dict(color="black", width=3),
                          row=1, col=position)
        fig.update_yaxes(title=rows_key if position == 1 else None, type="category", row=1, col=position)
        fig.update_xaxes(title=cols_key, type="category", row=1, col=position)
    return _layout(fig, "Sweep: clean-stop rate (EOS right after a sentence end) and mean length; framed: best",
                   height=380)
