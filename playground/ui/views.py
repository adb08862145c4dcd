"""HTML and table views of a trace for the page. Pure functions of the trace: no components here."""

from __future__ import annotations

import html


def require_number(value, name: str):
    """Gradio hands over None for a cleared number box: say which field is empty (ranges are the engine's)."""
    if value is None or value == "":
        raise ValueError(f"{name} is empty: give a number")
    return value


def token_html(variant, color_by: str = "p") -> str:
    """The column's text, one span per token, shaded by the chosen token's probability or by p(EOS)."""
    parts = []
    # The EOS token itself is drawn as a badge, not as its text.
    steps = variant.steps[:-1] if variant.stop_reason == "eos" else variant.steps
    for s in steps:
        token = s.token
        if not token:
            continue
        value = s.p_eos if color_by == "p_eos" else s.p_chosen
        # Low probability (a surprising pick) is red, high is green; for p(EOS), darker orange = closer to stop.
        color = f"rgba(255,140,0,{min(value, 1):.2f})" if color_by == "p_eos" else f"hsla({120 * value:.0f},80%,70%,0.55)"
        title = f"step {s.step} · p={s.p_chosen:.3f} (raw {s.p_chosen_raw:.3f}) · p(EOS) raw {s.p_eos_raw:.3g}, final {s.p_eos:.3g}"
        parts.append(f'<span style="background:{color}" title="{html.escape(title)}">{html.escape(token)}</span>')
    if variant.stop_reason == "eos":
        parts.append('<span style="background:#444;color:white;padding:0 4px" title="end of sequence">⏹ EOS</span>')
    return f'<div class="token-view">{"".join(parts) or "&nbsp;"}</div>'


def stages_rows(trace, column: int, step: int) -> list[list]:
    """The teaching view: how the chosen column's distribution changed through each stage at one step."""
    if trace is None or column >= len(trace.variants) or step >= len(trace.variants[column].steps):
        return []
    record = trace.variants[column].steps[step]
    rows = [[stage.name, f"{stage.p_eos:.4g}", stage.kept, ", ".join(f"{token!r} {p:.3f}" for _, token, p in stage.top[:5])]
            for stage in record.stages]
    rows.append(["argmax" if trace.settings["temperature"] == 0 else "sampled", "", "", repr(record.token)])
    return rows


