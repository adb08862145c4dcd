"""Hand a comparison over: one self-contained HTML file that a person opens, explores and replays offline, and
the way back (:func:`read_trace` opens such a file, or a trace JSON, in the app).

The file draws with the page's own code: page.js (the chart, step selection, ← →) and the page's styles, and
the token views, the inspector of every step and the story rendered here by :mod:`playground.views`, the
functions the page's server uses. Nothing is fetched: plotly.js comes from the installed plotly package,
gzipped and base64-encoded inside the file (4.8 MB as it is, 2.0 MB so; the browser inflates it with
``DecompressionStream``), and so do the rendered views. The trace itself is in the file as plain JSON (``<``
written as ``\\u003c``, so a prompt ``</script><script>…`` stays data), which is what the app reads back.

    >>> from playground.trace import Trace, VariantTrace
    >>> trace = Trace("m", "Hi </script>", {"max_new_tokens": 4}, [VariantTrace("baseline", [], 3)])
    >>> page = handover_html(trace, fixes=[{}])
    >>> "</script><script>" in page, read_trace(page.encode()).prompt
    (False, 'Hi </script>')
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
from dataclasses import fields
from pathlib import Path

import plotly

from .charts import STOP_MARKERS
from .export import KINDS
from .story import describe
from .trace import SCHEMA_VERSION, StopReason, Trace, saved_json, trace_from_dict
from .views import chart_header, chart_lines, chart_stop, default_selection, inspector_html, token_spans

UI = Path(__file__).parent / "ui"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
# What page.js takes from the server rather than copying: each stop reason's label and chart marker.
PAGE_CONFIG = {"stops": {reason.value: {"label": reason.label, "symbol": STOP_MARKERS[reason]} for reason in StopReason}}
# The largest trace file a local app reads (a 3-column × 128-token file with stages is 3.2 MB); a public one reads
# what its policy lets a visitor upload (spaces.yaml's max_upload_mb).
MAX_TRACE_MB = 32
TRACE_SCRIPT = re.compile(r'<script type="application/json" id="eos-trace">(.*?)</script>', re.S)
KIND_LABELS = {"generate": "model.generate() script", "pipeline": "pipeline() script",
               "kwargs": "arguments for your own generate() call"}
_plotly_packed: str | None = None


def _packed(text: str) -> str:
    """Text as the file carries it when it is large and derived: gzip, then base64 (no ``<`` can occur in it)."""
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def _plotly() -> str:
    global _plotly_packed
    if _plotly_packed is None:  # 1.5 s to compress; once per process
        _plotly_packed = _packed(PLOTLY_JS.read_text(encoding="utf-8"))
    return _plotly_packed


def script_json(text: str) -> str:
    """JSON made safe inside ``<script>``: ``<`` as ``\\u003c`` (still the same JSON), so no ``</script>`` or
    ``<!--`` in the data can end or change the element."""
    return text.replace("<", "\\u003c")


def _steps(spans: str) -> list[str]:
    """A column's token spans cut into one per step: every span opens with ``<span data-s=`` and a token's own
    text is escaped, so the cut cannot fall inside one."""
    return [part for part in re.split(r'(?=<span data-s=")', spans) if part]


def status_html(variant) -> str:
    return f"<b>{html.escape(variant.name)}</b> — {html.escape(variant.status())}"


def views(trace: Trace, eos_ids: list[int]) -> dict:
    """What the file's script shows, rendered by the page's renderers: per column the tokens step by step (for
    Replay) and the inspector of every step, the chart's text, the statuses and where the inspector opens."""
    columns = []
    for index, variant in enumerate(trace.variants):
        lines = chart_lines(variant, index).splitlines(keepends=True)
        columns.append({"spans": _steps(token_spans(variant)), "lines": lines, "stop": chart_stop(variant, index),
                        "status": status_html(variant),
                        "inspectors": [inspector_html(trace, index, step, eos_ids) for step in range(len(variant.steps))]})
    return {"header": chart_header(trace), "columns": columns, "selection": list(default_selection(trace))}


def _settings_html(trace: Trace) -> str:
    shown = [f"{key} {value!r}" if isinstance(value, str) else f"{key} {value}"
             for key, value in trace.settings.items() if value is not None and key != "timeout_seconds"]
    return html.escape(" · ".join(shown))


def _fix_html(index: int, fix: dict[str, str]) -> str:
    if not fix:
        return ""
    options = "".join(f'<option value="{kind}">{KIND_LABELS[kind]}</option>' for kind in KINDS if kind in fix)
    codes = "".join(f'<pre data-kind="{kind}"{"" if n == 0 else " hidden"}><code>{html.escape(code)}</code></pre>'
                    for n, (kind, code) in enumerate((k, fix[k]) for k in KINDS if k in fix))
    return (f'<details class="fix" id="fix-{index}"><summary>Copy this fix</summary>'
            f'<div class="fix-bar"><select aria-label="Use with">{options}</select> '
            f'<button type="button" class="copy">Copy</button></div>{codes}</details>')


FILE_CSS = """
body { font-family: system-ui, sans-serif; margin: 12px 18px; color: #111; }
header h1 { font-size: 1.3em; margin: 0 0 4px; }
header p { margin: 2px 0; font-size: 0.9em; }
header .prompt { white-space: pre-wrap; background: #f9fafb; border: 1px solid #e5e7eb; border-radius: 6px; padding: 4px 8px; }
header .settings { color: #4b5563; font-size: 0.8em; }
.bar { display: flex; gap: 8px; align-items: center; margin: 8px 0; font-size: 0.9em; }
.bar button, .fix button, .fix select { font: inherit; border: 1px solid #d1d5db; border-radius: 4px; background: white; padding: 1px 8px; }
#replay { background: #1f2937; color: white; }
#columns-row { display: flex; gap: 10px; }
#columns-row > .column { flex: 1 1 0; min-width: 0; }
.prose.token-view { height: 220px; }
.fix summary { cursor: pointer; font-size: 0.85em; margin-top: 4px; }
.fix pre { max-height: 320px; overflow: auto; font-size: 0.75em; background: #f9fafb; border: 1px solid #e5e7eb; padding: 6px; }
.chart-row { display: flex; gap: 12px; align-items: flex-start; }
#chart { flex: 3 1 0; min-width: 0; }
#inspector { flex: 2 1 0; min-width: 280px; }
.inspector button.branch, .inspector th[title="continue from here"] { display: none; }
footer { color: #6b7280; font-size: 0.8em; margin-top: 10px; }
@media (max-width: 720px) { #columns-row, .chart-row { flex-direction: column; } }
"""


def handover_html(trace: Trace, fixes: list[dict[str, str]], eos_ids: list[int] | None = None,
                  title: str = "EOS Playground") -> str:
    """The comparison as one HTML page that needs no network (see the module docstring). ``fixes``: per column,
    Copy this fix's code by kind (:func:`column_fixes`; an empty dict shows none)."""
    rendered = views(trace, eos_ids or [])
    columns = "".join(
        f'<div class="column"><div class="status" id="status-{index}">{column["status"]}</div>'
        f'<div id="tokens-{index}" class="prose token-view">{"".join(column["spans"])}</div>'
        f'{_fix_html(index, fixes[index] if index < len(fixes) else {})}</div>'
        for index, column in enumerate(rendered["columns"]))
    story = "".join(f"<li>{html.escape(sentence)}</li>" for sentence in describe(trace))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} — {html.escape(trace.prompt[:60])}</title>
<style>{(UI / "page.css").read_text(encoding="utf-8")}{FILE_CSS}</style>
<script type="application/json" id="eos-trace">{script_json(saved_json(trace))}</script>
<script type="application/gzip" id="eos-views">{_packed(json.dumps(rendered, ensure_ascii=False))}</script>
<script type="application/gzip" id="plotly-js">{_plotly()}</script>
<script>window.eosPlaygroundConfig = {json.dumps(PAGE_CONFIG)};</script>
<script>{(UI / "page.js").read_text(encoding="utf-8")}</script>
</head><body>
<header><h1>{html.escape(title)}</h1>
<p>Model <b>{html.escape(trace.model)}</b> · {len(trace.variants)} column{"s" * (len(trace.variants) > 1)}</p>
<p class="prompt">{html.escape(trace.prompt)}</p>
<p class="settings">{_settings_html(trace)}</p></header>
<div class="bar"><button type="button" id="replay">Replay</button>
<span id="replay-note">the columns again, token by token, at reading speed</span>
<label><input type="radio" name="shade" value="p" checked> shade by the chosen token's probability</label>
<label><input type="radio" name="shade" value="p_eos"> by p(EOS), log scale</label></div>
<div id="columns-row">{columns}</div>
<div id="story"><ul>{story}</ul></div>
<div class="chart-row"><div id="chart"><div class="eos-chart"></div></div>
<div id="inspector"><div class="inspector empty">Loading…</div></div></div>
<footer>Made with EOS Playground (trace schema {SCHEMA_VERSION}). To try other tokens from a step, open this file in
the playground: Compare → Open a trace.</footer>
<script>{(UI / "handover.js").read_text(encoding="utf-8")}</script>
</body></html>
"""


def trace_cap_mb(policy) -> float:
    """The largest trace file ``policy``'s app opens."""
    return policy.max_upload_mb if policy.public else MAX_TRACE_MB


def read_trace(data: bytes | str, max_bytes: int | None = MAX_TRACE_MB * 1024 * 1024) -> Trace:
    """A trace from a saved file: a trace JSON or a file made by :func:`handover_html` (its embedded trace; the
    rest of the file is never read, let alone run). A ValueError says in a sentence why a file is refused: too
    large, not a trace, damaged JSON, another schema version, a field of the wrong kind."""
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"trace file: {len(data) / 2**20:.1f} MB is more than this app reads "
                         f"({max_bytes / 2**20:g} MB at most)")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("trace file: not text (a trace is a JSON file or an HTML file exported by the playground)") from None
    text = data.lstrip("\ufeff \t\r\n")
    if text[:1] == "<":
        found = TRACE_SCRIPT.search(text)
        if found is None:
            raise ValueError("trace file: this HTML file holds no trace (only files exported by the playground do)")
        text = found.group(1)
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"trace file: damaged JSON ({error.msg}: line {error.lineno}, column {error.colno})") from None
    trace = trace_from_dict(loaded)
    check_meaning(trace)
    return trace


def check_meaning(trace: Trace) -> None:
    """What a trace's settings and interventions mean, checked as a run checks them (a file could hold anything):
    the settings the engine knows, and interventions it can build."""
    from .engine import MAX_TRACE_COLUMNS, Settings
    from .interventions import parse_interventions

    if len(trace.variants) > MAX_TRACE_COLUMNS:
        raise ValueError(f"variants: {len(trace.variants)} columns; a trace holds {MAX_TRACE_COLUMNS} at most")
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(trace.settings) - known)
    if unknown:
        raise ValueError(f"settings: {unknown[0][:40]!r} is not a setting of this playground")
    max_new = trace.settings.get("max_new_tokens")
    if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 1:
        raise ValueError("settings.max_new_tokens must be a whole number of at least 1")
    if any(len(v.steps) > max_new for v in trace.variants):
        raise ValueError("variants: a column has more steps than settings.max_new_tokens allows")
    for index, variant in enumerate(trace.variants):
        try:
            parse_interventions(variant.interventions)
        except (ValueError, TypeError) as error:
            raise ValueError(f"variants[{index}].interventions: {error}") from None


def column_fixes(playground, trace: Trace) -> list[dict[str, str]]:
    """Copy this fix for every column of ``trace``, each kind, as the page writes it (``playground.export``),
    naming the model by what anyone can load (no host path). A branch's fix says its first tokens were forced;
    a column the loaded model cannot reproduce gets the reason as a comment."""
    from .export import export_column

    settings = {key: value for key, value in trace.settings.items()
                if key not in ("telemetry_top_k", "timeout_seconds")}
    loaded = playground.bundle.info.name
    note = "" if trace.model == loaded else (f"# This trace was decoded by {trace.model}; the model loaded when it was "
                                             f"exported is {loaded}, which this fix loads.\n")
    fixes = []
    for variant in trace.variants:
        column = {"model": variant.model, "interventions": variant.interventions} if variant.model != "base" \
            else {"interventions": variant.interventions}
        head = note
        if variant.branch_of is not None:
            parent, step = variant.branch_of
            head += (f"# This column is a branch of {trace.variants[parent - 1].name!r}: its tokens at steps 0–{step} were "
                     "forced, not chosen by the model. This fix applies the same interventions and settings, and the "
                     "model chooses every token.\n")
        try:
            comparison = playground.comparison(prompt=trace.prompt, columns=[column], **settings)
            fixes.append({kind: head + export_column(comparison, kind=kind, model_reference=playground.reference,
                                                     reveal_paths=False) for kind in KINDS})
        except (ValueError, TypeError) as error:
            fixes.append({kind: f"# {playground.user_message(error)}\n" for kind in KINDS})
    return fixes


def export_html(playground, trace: Trace) -> str:
    """The file for a trace the app holds: its fixes from the loaded model, its EOS ids for the inspector."""
    return handover_html(trace, column_fixes(playground, trace), playground.bundle.info.stop_token_ids)
