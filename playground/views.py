"""HTML and text views of a trace for the page. Pure functions of the trace: no components here.

Streamed views are append-only: ``token_spans(variant, column, start)`` renders the steps from ``start`` on, and
``chart_lines`` the chart points from ``start`` on, so while a column runs its value only grows and Gradio
sends each update as an append of the new part.
"""

from __future__ import annotations

import html
import json
import math

from .charts import COLORS, ramp_starts
from .markup import md_text
from .story import step_explanation
from .trace import StepRecord, StopReason, Trace, VariantTrace


def page_whole(data: dict, key: str) -> int:
    """A whole number the page's script sends (a clicked column, step or token id); a sentence naming ``key``
    for anything else ("abc", 2.5, missing), which only a hand-made request can send."""
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        text = repr(value) if not isinstance(value, str) else repr(value[:40])
        raise ValueError(f"{key} must be a whole number, got {text[:50]}")
    return int(value)


def _eos_shade(p: float) -> float:
    """p(EOS) on a log scale from 1e-8 (0) to 1 (1): a rambling model's p(EOS) is ~1e-6, invisible linearly."""
    return min(max((math.log10(max(p, 1e-8)) + 8) / 8, 0.0), 1.0)


def _step_title(s: StepRecord) -> str:
    return (f"step {s.step} · p {s.p_chosen:.3f} (raw {s.p_chosen_raw:.3f}) · "
            f"p(EOS) {s.p_eos_raw:.3g} raw → {s.p_eos:.3g} final · click to inspect")


# Marks for what would otherwise draw nothing: a newline still breaks the line after its mark.
WHITESPACE_MARKS = {"\n": "↵\n", "\t": "⇥", " ": "·", "\r": "␍"}


def shown_token(token: str) -> str:
    r"""A token as the token view draws it, never zero-width: newlines as ↵ (then the line break), a token of
    only spaces or tabs as · and ⇥, an empty token as ∅; text with spaces between words stays as it is.

    >>> shown_token("\n"), shown_token(".\n\n"), shown_token("  "), shown_token(" is"), shown_token("")
    ('↵\n', '.↵\n↵\n', '··', ' is', '∅')
    """
    if token == "":
        return "∅"
    if token.strip() == "":
        return "".join(WHITESPACE_MARKS.get(c, c) for c in token)
    return token.replace("\n", WHITESPACE_MARKS["\n"])


def token_spans(variant: VariantTrace, start: int = 0) -> str:
    """The column's tokens from step ``start`` on, one span each, every one visible (see ``shown_token``); the
    EOS token is drawn as a badge.

    Shading is CSS: ``--p`` is the chosen token's probability, ``--e`` p(EOS) on a log scale; the page picks
    which one colours the background, so switching needs no redraw.
    """
    parts = []
    steps = variant.steps
    for s in steps[start:]:
        if s is steps[-1] and variant.stop_reason == StopReason.EOS:
            parts.append(f'<span data-s="{s.step}" class="eos-badge" title="{html.escape(_step_title(s))}">EOS</span>')
        else:
            marked = ' class="ws"' if s.token.strip() == "" else ""
            parts.append(f'<span data-s="{s.step}"{marked} style="--p:{s.p_chosen:.2f};--e:{_eos_shade(s.p_eos):.2f}" '
                         f'title="{html.escape(_step_title(s))}">{html.escape(shown_token(s.token))}</span>')
    return "".join(parts)


def status_markdown(variant: VariantTrace) -> str:
    """A column's status line above its tokens: its name in bold, then how it is doing or why it stopped (a stop
    string is quoted as written)."""
    return f"**{md_text(variant.name)}** — {md_text(variant.status())}"


def chart_header(trace: Trace) -> str:
    """The chart's first line: columns, colours, where each ramp starts, the step axis."""
    ramps = dict(ramp_starts(trace))
    return json.dumps({
        "max_new": int(trace.settings["max_new_tokens"]),
        "columns": [{"name": v.name, "color": COLORS[i % len(COLORS)], "ramp": ramps.get(v.name)}
                    for i, v in enumerate(trace.variants)],
    }, ensure_ascii=False) + "\n"


def chart_column(trace: Trace, column: int) -> str:
    """A line that adds a column to a chart already drawn (a branch): ``C {name, color, ramp}``."""
    ramps = dict(ramp_starts(trace))
    variant = trace.variants[column]
    return "C " + json.dumps({"name": variant.name, "color": COLORS[column % len(COLORS)], "ramp": ramps.get(variant.name)},
                             ensure_ascii=False) + "\n"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def chart_lines(variant: VariantTrace, column: int, start: int = 0) -> str:
    """One line per step from ``start`` on: column, step, p(EOS) raw and final, EOS margin raw and after the
    interventions ("-" where EOS is banned); then ``S column step reason`` once the column has stopped."""
    lines = [f"{column} {s.step} {s.p_eos_raw:.4g} {s.p_eos:.4g} {_number(s.eos_margin_raw)} {_number(s.eos_margin)}\n"
             for s in variant.steps[start:]]
    return "".join(lines)


def chart_stop(variant: VariantTrace, column: int) -> str:
    return f"S {column} {len(variant.steps) - 1} {variant.stop_reason}\n" if variant.steps else ""


def column_delta(variant: VariantTrace, column: int, sent: int, stop_sent: bool) -> tuple[str, str]:
    """What a streaming column adds to the page since it had ``sent`` steps: (token spans, chart lines), the chart's
    stop line included once the column has stopped and ``stop_sent`` says it is not drawn yet."""
    lines = chart_lines(variant, column, sent)
    if variant.finished and not stop_sent:
        lines += chart_stop(variant, column)
    return token_spans(variant, sent), lines


def default_selection(trace: Trace) -> tuple[int, int]:
    """What the inspector opens on after a run: the first intervened column's stop by EOS (the step a user wants
    explained), else the first column's last step."""
    for index, variant in enumerate(trace.variants):
        if variant.interventions and variant.stop_reason == StopReason.EOS and variant.steps:
            return index, len(variant.steps) - 1
    first = trace.variants[0]
    return 0, max(len(first.steps) - 1, 0)


def _p(value: float) -> str:
    """A probability as a person reads it: 0.658, or 4.3e-04 when it is small."""
    return f"{value:.3f}" if value >= 0.01 or value == 0 else f"{value:.1e}"


def _bar(value: float, css: str) -> str:
    return f'<span class="bar {css}" style="width:{max(value, 0) * 100:.1f}%"></span>'


def _try_button(token_id: int, no_branch: str | None) -> str:
    if no_branch:
        return f'<button class="branch" data-token="{token_id}" disabled title="{html.escape(no_branch)}">try</button>'
    return f'<button class="branch" data-token="{token_id}" title="decode a new column from here with this token">try</button>'


def inspector_html(trace: Trace | None, column: int, step: int, eos_ids: list[int] | None = None,
                   no_branch: str | None = None) -> str:
    """One step of one column: what was chosen (or forced, in a branch), how far EOS was from winning, the top
    tokens raw vs final, and the distribution after each stage (raw → generation config → interventions →
    temperature → top-k → top-p). ``no_branch``: why "try" cannot decode a new column now (its buttons are
    disabled and say so)."""
    if trace is None or not 0 <= column < len(trace.variants) or not 0 <= step < len(trace.variants[column].steps):
        return '<div class="inspector empty">Click a token in any column, or a point on the chart, to inspect that step.</div>'
    variant = trace.variants[column]
    s = variant.steps[step]
    eos_ids = set(eos_ids or [])
    chosen = "EOS" if s.token_id in eos_ids else repr(s.token)
    rows = []
    top_k = sorted(s.top_k, key=lambda t: max(t.p_raw, t.p), reverse=True)
    if eos_ids and not any(t.token_id in eos_ids for t in top_k):  # "what if it had stopped here?" is always a choice
        top_k.append(None)
    for t in top_k:
        token_id = min(eos_ids) if t is None else t.token_id
        label = "EOS" if token_id in eos_ids else html.escape(repr(t.token))
        mark = " ◀" if token_id == s.token_id else ""
        bars = "" if t is None else f'{_bar(t.p_raw, "raw")}{_bar(t.p, "final")}'
        numbers = '<td class="num" colspan="2">not in the top</td>' if t is None else \
            f'<td class="num">{_p(t.p_raw)}</td><td class="num">{_p(t.p)}</td>'
        branch = "" if token_id == s.token_id else _try_button(token_id, no_branch)
        rows.append(f'<tr class="{"eos" if token_id in eos_ids else ""}"><td class="tok">{label}{mark}</td>'
                    f'<td class="bars">{bars}</td>{numbers}<td>{branch}</td></tr>')
    stages = []
    for stage in s.stages:
        top = ", ".join(html.escape(f"{token!r} {_p(p)}") for _, token, p in stage.top[:3])
        stages.append(f"<tr><td>{html.escape(stage.name)}</td><td>{html.escape(stage.note)}</td>"
                      f"<td class='num'>{_p(stage.p_eos)}</td><td>{top}</td></tr>")
    forced = variant.branch_of is not None and step <= variant.branch_of[1]
    pick = "forced (branch)" if forced else "argmax" if trace.settings.get("temperature", 0) == 0 else "sampled"
    verb, given = ("forced", "the model gave it ") if forced else ("chose", "")
    note = f'<p class="no-branch">{html.escape(no_branch)}</p>' if no_branch else ""
    stages.append(f"<tr><td>{pick}</td><td></td><td></td><td>{html.escape(chosen)}</td></tr>")
    return (
        f'<div class="inspector" data-column="{column}" data-step="{step}"><div class="head"><b>{html.escape(variant.name)}</b> · step {s.step} · {verb} '
        f'<code>{html.escape(chosen)}</code> ({given}p {_p(s.p_chosen)}, raw {_p(s.p_chosen_raw)})</div>'
        f'<p class="margin">{html.escape(step_explanation(s))}</p>'
        f'<table class="topk"><tr><th>top tokens</th><th><span class="key raw"></span>raw '
        f'<span class="key final"></span>final</th><th>raw</th><th>final</th><th title="continue from here">what if?</th></tr>'
        f'{"".join(rows)}</table>{note}'
        f'<table class="stages"><tr><th>stage</th><th>what it did</th><th>p(EOS)</th><th>top tokens after it</th></tr>'
        f'{"".join(stages)}</table><small>← → move one step · <b>try</b> continues this column from here with that token instead'
        f'</small></div>'
    )
