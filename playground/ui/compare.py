"""The Compare tab: settings on the left; on the right the columns streaming side by side, what happened in
words, the live p(EOS) chart with the step inspector beside it, and the fix to copy.

Streaming is append-only: each column's token view and the chart's data only grow while a run decodes, so
Gradio sends each update as the new part (see ``views``). Selecting a step happens in the browser
(``page.js``); the server only renders the inspector for it.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator

import gradio as gr

from .. import charts
from ..export import export_column
from ..interventions import DESCRIPTIONS, INTERVENTION_NAMES
from ..links import FIELDS, MAX_COLUMNS, PAGE_DEFAULTS, from_query, to_query
from ..service import RUNS_AT_ONCE, Playground, write_trace_files
from ..story import describe
from .errors import refusal
from .views import (
    chart_column,
    chart_header,
    column_delta,
    default_selection,
    inspector_html,
    require_number,
)

# Seconds between streamed page updates (the decode does not wait for them). Each update costs the browser a
# redraw, and on 2 cores the browser's work slows the decode: bench measured the page at 0.76 of the engine's
# speed with 0.15 s, 0.86-0.89 with 0.3 s (about three updates a second, a few tokens each).
UPDATE_INTERVAL = 0.3
EXAMPLES = [
    PAGE_DEFAULTS["prompt"],  # the article's prompt: rambles to the limit
    "Write a haiku about the sea.",  # short: a model that stops on its own
    "List every country in Europe with its capital.",  # long list: looping and rambling
    "Repeat after me forever: la la la",  # repetition loop
    "Say only 'yes' or 'no': is water wet?",  # early stop
]
IDLE_STATUS = "idle"


def _tokens_js(column: int) -> str:
    return f"(function go() {{ window.eosPlayground ? eosPlayground.tokens(element, {column}, watch) : setTimeout(go, 50); }})();"


CHART_JS = "(function go() { window.eosPlayground ? eosPlayground.chart(element, props, trigger, watch) : setTimeout(go, 50); })();"
INSPECTOR_JS = "(function go() { window.eosPlayground ? eosPlayground.inspector(element, trigger) : setTimeout(go, 50); })();"
SELECTION_JS = "(function go() { window.eosPlayground ? eosPlayground.selection(props, watch) : setTimeout(go, 50); })();"


def compare_tab(playground: Playground, demo: gr.Blocks) -> None:
    choices = list(INTERVENTION_NAMES)  # short chips; what each does is in the accordion below the pickers

    def model_choices() -> list[str]:
        """A column's model as one more chip of its picker, "@base" or "@NAME", when adapters are loaded."""
        models = playground.column_models()
        return [f"@{model}" for model in models] if len(models) > 1 else []

    def with_base_column(columns: list[list[str]]) -> list[list[str]]:
        """The default columns with an adapter loaded: the base model's baseline first, beside the adapter's."""
        if not playground.bundle.adapters:
            return columns
        return [["@base"], *columns][:max_columns]

    policy = playground.policy
    max_columns = min(MAX_COLUMNS, policy.max_columns)
    default_columns = PAGE_DEFAULTS["columns"][:max_columns]
    holder = gr.State({})  # per session: the running comparison (for Stop) and the last trace
    with gr.Tab("Compare"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300, elem_id="controls"):
                prompt = gr.Textbox(label="Prompt", value=PAGE_DEFAULTS["prompt"], lines=2, max_lines=6, elem_id="prompt")
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="run", min_width=60, size="md")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=60, size="md")
                    copy_link = gr.Button("Copy link", elem_id="copy-link", min_width=60, size="md")
                link_box = gr.Textbox(label="Link to these settings", visible=False, buttons=["copy"], elem_id="link")
                example = gr.Dropdown(EXAMPLES, value=None, label="Examples", elem_id="examples")
                # A number box, not a slider: a slider's box clamps -5 to 1 in the browser without a word; this one
                # sends what was typed, and the engine answers with a sentence naming the field.
                max_new = gr.Number(value=min(PAGE_DEFAULTS["max_new_tokens"], policy.max_new_tokens), precision=0,
                                    label=f"Max new tokens (1 to {policy.max_new_tokens})", elem_id="max-new-tokens")
                ratio = gr.Slider(0, 1, value=PAGE_DEFAULTS["reward_start_ratio"], step=0.05,
                                  label="Reward start ratio (the EOS ramp starts at ratio × max new tokens)", elem_id="ratio")
                temperature = gr.Slider(0, 2, value=PAGE_DEFAULTS["temperature"], step=0.05, label="Temperature (0 = greedy)",
                                        elem_id="temperature")
                n_columns = gr.Radio(list(range(1, max_columns + 1)), value=len(default_columns), label="Columns",
                                     elem_id="columns")
                pickers = [gr.Dropdown(choices, value=(PAGE_DEFAULTS["columns"] + [[]] * MAX_COLUMNS)[index], multiselect=True,
                                       label=f"Column {index + 1} interventions (none = baseline)", visible=index < len(default_columns),
                                       elem_id=f"picker-{index}")
                           for index in range(MAX_COLUMNS)]
                with gr.Accordion("What each intervention does", open=False):
                    gr.Markdown("\n".join(f"- **{name}**: {DESCRIPTIONS[name]}" for name in INTERVENTION_NAMES))
                with gr.Accordion("More decoding settings", open=False):
                    top_p = gr.Slider(0.05, 1, value=PAGE_DEFAULTS["top_p"], step=0.05, label="Top-p (1 = off)")
                    top_k = gr.Slider(0, 200, value=PAGE_DEFAULTS["top_k"], step=1, label="Top-k (0 = off)")
                    seed = gr.Number(value=PAGE_DEFAULTS["seed"], precision=0, label="Seed")
                    strength = gr.Slider(0, 40, value=PAGE_DEFAULTS["strength"], step=0.5,
                                         label="EOS reward strength (largest bonus, in logits)")
                    stop_strings = gr.Textbox(value=PAGE_DEFAULTS["stop_strings"], label="Stop strings (comma-separated, \\n = newline)")
                    min_new = gr.Slider(0, 256, value=PAGE_DEFAULTS["min_new_tokens"], step=1,
                                        label="Min new tokens (for the min_new_tokens intervention)")
                    use_template = gr.Checkbox(label="Use the chat template", value=PAGE_DEFAULTS["use_chat_template"])
                    system_prompt = gr.Textbox(label="System prompt (optional)", lines=1)
                    repetition_penalty = gr.Slider(0.5, 2, value=PAGE_DEFAULTS["repetition_penalty"], step=0.05,
                                                   label="Repetition penalty (1 = off)")
                    no_repeat_ngram = gr.Slider(0, 10, value=PAGE_DEFAULTS["no_repeat_ngram_size"], step=1,
                                                label="No-repeat n-gram size (0 = off)")
                    min_p = gr.Slider(0, 1, value=PAGE_DEFAULTS["min_p"], step=0.01, label="Min-p (0 = off; when sampling)")
                    typical_p = gr.Slider(0.01, 1, value=PAGE_DEFAULTS["typical_p"], step=0.01,
                                          label="Typical-p (1 = off; when sampling)")
                color_by = gr.Radio([("chosen token's probability", "p"), ("p(EOS), log scale", "p_eos")], value="p",
                                    label="Shade tokens by", elem_id="shade")
            with gr.Column(scale=3, min_width=320):
                column_boxes, statuses, views = [], [], []
                with gr.Row(equal_height=False):
                    for index in range(MAX_COLUMNS):
                        with gr.Column(visible=index < len(default_columns), min_width=200) as box:
                            statuses.append(gr.Markdown(IDLE_STATUS, elem_id=f"status-{index}", elem_classes="status"))
                            views.append(gr.HTML("", js_on_load=_tokens_js(index), elem_id=f"tokens-{index}",
                                                 elem_classes="token-view"))
                        column_boxes.append(box)
                story = gr.Markdown("", elem_id="story")
                with gr.Row(equal_height=False):
                    chart = gr.HTML("", html_template='<div class="eos-chart"></div>', js_on_load=CHART_JS,
                                    elem_id="chart", scale=3, min_width=320)
                    inspector = gr.HTML(inspector_html(None, 0, 0), elem_id="inspector", scale=2, min_width=280,
                                        js_on_load=INSPECTOR_JS)
                selection = gr.HTML("", html_template="", js_on_load=SELECTION_JS, elem_id="selection")
                with gr.Accordion("Copy this fix", open=False):
                    with gr.Row():
                        fix_column = gr.Dropdown([(f"Column {i + 1}", i) for i in range(MAX_COLUMNS)], value=1, label="Column")
                        fix_kind = gr.Radio([("model.generate() script", "generate"), ("pipeline() script", "pipeline"),
                                         ("arguments for your own generate() call", "kwargs")], value="generate",
                                        label="Use with")
                    snippet = gr.Code(language="python", label="Runnable Python that reproduces this column")
                with gr.Accordion("Stage by stage, as bars", open=False):
                    stage_chart = gr.Plot(label="The inspected step's top tokens after each stage")
                with gr.Accordion("Top-k over all steps", open=False):
                    heatmap = gr.Plot(label="Top-k of the inspected column over all steps")
                with gr.Row():
                    download_json = gr.DownloadButton("Download trace (JSON)", visible=False)
                    download_csv = gr.DownloadButton("Download trace (CSV)", visible=False)

    # ---- handlers -------------------------------------------------------------------------------
    inputs = [prompt, max_new, temperature, top_p, top_k, seed, ratio, strength, stop_strings, min_new,
              use_template, system_prompt, repetition_penalty, no_repeat_ngram, min_p, typical_p, n_columns, *pickers]
    # The controls a link restores, by query key (links.FIELDS), in the order of `inputs`.
    linked = dict(zip(["prompt", "max_new_tokens", "temperature", "top_p", "top_k", "seed", "reward_start_ratio",
                       "strength", "stop_strings", "min_new_tokens", "use_chat_template", "system_prompt",
                       "repetition_penalty", "no_repeat_ngram_size", "min_p", "typical_p"], inputs))
    assert set(linked) == set(FIELDS)

    def make_comparison(prompt_, max_new_, temperature_, top_p_, top_k_, seed_, ratio_, strength_, stops_,
                        min_new_, template_, system_, penalty_, ngram_, min_p_, typical_p_, n_columns_, *picked):
        return playground.comparison(
            prompt_, playground.page_columns(n_columns_, picked),
            max_new_tokens=require_number(max_new_, "max new tokens"), temperature=require_number(temperature_, "temperature"),
            top_p=require_number(top_p_, "top-p"), top_k=require_number(top_k_, "top-k"), seed=require_number(seed_, "seed"),
            reward_start_ratio=require_number(ratio_, "reward start ratio"), strength=require_number(strength_, "strength"),
            stop_strings=stops_, min_new_tokens=require_number(min_new_, "min new tokens"),
            use_chat_template=template_, system_prompt=system_ or "",
            repetition_penalty=require_number(penalty_, "repetition penalty"),
            no_repeat_ngram_size=require_number(ngram_, "no-repeat n-gram size"),
            min_p=require_number(min_p_, "min-p"), typical_p=require_number(typical_p_, "typical-p"))

    def status_line(variant) -> str:
        return f"**{html.escape(variant.name)}** — {variant.status()}"

    def on_run(state, *args) -> Iterator[dict]:
        try:
            comparison = make_comparison(*args)
        except ValueError as error:
            raise refusal(playground, "/run", error, page=True) from None
        state["comparison"] = comparison
        trace = comparison.trace
        n = len(trace.variants)
        # What the browser already has, per column: steps rendered, and whether the stop was announced.
        sent_steps, stopped = [0] * n, [False] * n
        token_values, chart_text = [""] * n, chart_header(trace)
        yield {**{statuses[i]: status_line(v) for i, v in enumerate(trace.variants)},
               **{box: gr.update(visible=i < n) for i, box in enumerate(column_boxes)},  # a branch's place too
               **{views[i]: "" for i in range(n)}, chart: chart_text, selection: "",
               story: f"Decoding {n} column{'s' * (n > 1)}…", inspector: inspector_html(None, 0, 0), holder: state}
        last = 0.0
        for trace in playground.stream(comparison):
            done = all(v.finished for v in trace.variants)
            if not done and time.monotonic() - last < UPDATE_INTERVAL:
                continue  # the decode goes on; the next update carries every step since this one
            last = time.monotonic()
            update = {}
            # Under the run's lock: every column at the same step while this update is built (never across the
            # yield, so a slow page never holds up the decode).
            with comparison.lock:
                for i, variant in enumerate(trace.variants):
                    if len(variant.steps) == sent_steps[i] and stopped[i] == variant.finished:
                        continue
                    spans, lines = column_delta(variant, i, sent_steps[i], stopped[i])
                    token_values[i] += spans
                    chart_text += lines
                    sent_steps[i], stopped[i] = len(variant.steps), variant.finished
                    update[statuses[i]] = status_line(variant)
                    update[views[i]] = token_values[i]
            if update:
                update[chart] = chart_text
                yield update
        yield finished(state, trace, chart_text, default_selection(trace))

    def finished(state, trace, chart_text, selected) -> dict:
        """The last update of a run or a branch: statuses, the story, the inspector on ``selected``, downloads."""
        state.update(trace=trace, chart_text=chart_text, heatmap_column=selected[0])
        state.pop("comparison", None)
        files = write_trace_files(trace)
        return {**{statuses[i]: status_line(v) for i, v in enumerate(trace.variants)},
                story: "\n".join(f"- {sentence}" for sentence in describe(trace)),
                inspector: inspector_html(trace, *selected, playground.bundle.info.stop_token_ids),
                selection: "{} {}".format(*selected), stage_chart: charts.stages_figure(trace, *selected),
                heatmap: charts.heatmap_figure(trace, selected[0]),
                download_json: gr.update(value=files[0], visible=True),
                download_csv: gr.update(value=files[1], visible=True), holder: state}

    def on_branch(state, event: gr.EventData) -> Iterator[dict]:
        """"try" in the inspector: decode the inspected column again from that step with the chosen token, as a new
        column beside the others (the chart and the story show it too)."""
        trace, data = state.get("trace"), event._data or {}
        try:
            if trace is None or state.get("comparison") is not None:
                raise ValueError("run a comparison first, and let it finish, to branch it")
            if len(trace.variants) >= MAX_COLUMNS:
                raise ValueError(f"all {MAX_COLUMNS} column places are in use: run again with fewer columns to branch")
            comparison = playground.branch(trace, int(data.get("column", -1)) + 1, int(data.get("step", -1)),
                                           int(data.get("token_id", -1)))
        except (TypeError, ValueError) as error:
            raise refusal(playground, "branch", error, title="Cannot branch here", page=True) from None
        state["comparison"] = comparison
        slot = len(trace.variants)
        # The chart learns of the new column first; then, as in on_run, each update appends what is new.
        chart_text = state["chart_text"] + chart_column(trace.with_branches(comparison.trace), slot)
        tokens, sent, stopped, last, branched = "", 0, False, 0.0, trace
        for branched in playground.stream(comparison):
            variant = branched.variants[slot]
            if not variant.finished and time.monotonic() - last < UPDATE_INTERVAL:
                continue
            last = time.monotonic()
            with comparison.lock:  # one consistent step while the update is built
                spans, lines = column_delta(variant, slot, sent, stopped)
                tokens, chart_text = tokens + spans, chart_text + lines
                sent, stopped = len(variant.steps), variant.finished
                update = {column_boxes[slot]: gr.update(visible=True), statuses[slot]: status_line(variant),
                          views[slot]: tokens, chart: chart_text}
            yield update
        yield finished(state, branched, chart_text, (slot, variant.branch_of[1]))

    def on_stop(state):
        comparison = state.get("comparison")
        if comparison is not None:
            comparison.cancel()

    def on_select(state, event: gr.EventData):
        trace = state.get("trace")
        data = event._data or {}
        if trace is None or not isinstance(data.get("column"), int) or not isinstance(data.get("step"), int):
            return gr.skip(), gr.skip(), gr.skip(), state
        column, step = data["column"], data["step"]
        if not 0 <= column < len(trace.variants) or not 0 <= step < len(trace.variants[column].steps):
            return gr.skip(), gr.skip(), gr.skip(), state
        figure = gr.skip()
        if state.get("heatmap_column") != column:
            state["heatmap_column"] = column
            figure = charts.heatmap_figure(trace, column)
        return (inspector_html(trace, column, step, playground.bundle.info.stop_token_ids),
                charts.stages_figure(trace, column, step), figure, state)

    def on_columns(n):
        visible = [gr.update(visible=i < int(n)) for i in range(MAX_COLUMNS)]
        return visible + visible

    def on_snippet(column, kind, *values):
        settings, picked = values[: len(linked)], values[len(linked) + 1:]
        column = min(int(column or 0), len(picked) - 1)
        try:  # only the chosen column: another column's bad settings must not block its snippet
            comparison = make_comparison(*settings, 1, picked[column])
        except ValueError as error:
            return f"# {playground.user_message(error)}"
        return export_column(comparison, kind=kind, model_reference=playground.shown_reference)

    def link_query(*values) -> str:
        settings = dict(zip(linked, values[: len(linked)]))
        count = int(values[len(linked)] or 1)
        settings["columns"] = [list(p or []) for p in values[len(linked) + 1:][:count]]
        return to_query(settings)

    def on_page_load(request: gr.Request):
        """Fill the page from the link's query; name anything in it that could not be used."""
        params = dict(request.query_params) if request is not None else {}
        settings, problems = from_query(params)
        if "columns" not in params:
            settings["columns"] = with_base_column(settings["columns"])
        for problem in problems:
            gr.Warning(f"This link: {problem}.", title="Link")
        columns = settings["columns"][:max_columns]
        if settings["max_new_tokens"] > policy.max_new_tokens:
            gr.Warning(f"This link asks for {settings['max_new_tokens']} new tokens; this app allows at most "
                       f"{policy.max_new_tokens}.", title="Link")
            settings["max_new_tokens"] = policy.max_new_tokens
        values = [settings[key] for key in linked] + [len(columns)]
        values += [gr.update(value=columns[i] if i < len(columns) else [], visible=i < len(columns),
                             choices=[*choices, *model_choices()]) for i in range(MAX_COLUMNS)]
        return values + [gr.update(visible=i < len(columns)) for i in range(MAX_COLUMNS)]

    link_outputs = [*linked.values(), n_columns, *pickers, *column_boxes]
    # Queued, so its warnings reach the page; never waits behind a run (no concurrency limit).
    demo.load(on_page_load, None, link_outputs, api_visibility="private", concurrency_limit=None)
    run_outputs = [*statuses, *views, *column_boxes, story, chart, inspector, selection, stage_chart, heatmap,
                   download_json, download_csv, holder]
    # Runs share the decode loop (their rows share forward passes), so up to RUNS_AT_ONCE decode together.
    run_event = run.click(on_run, [holder, *inputs], run_outputs,
                          concurrency_id="decode", concurrency_limit=RUNS_AT_ONCE, api_visibility="private")
    inspector.click(on_branch, holder, run_outputs, concurrency_id="decode", concurrency_limit=RUNS_AT_ONCE,
                    api_visibility="private")
    stop.click(on_stop, holder, None, queue=False, api_visibility="private")
    chart.click(on_select, holder, [inspector, stage_chart, heatmap, holder], api_visibility="private", queue=False)
    color_by.change(None, color_by, None, js="(v) => { document.body.classList.toggle('shade-eos', v === 'p_eos'); }")
    n_columns.change(on_columns, n_columns, [*column_boxes, *pickers], api_visibility="private", queue=False)
    example.change(lambda text: text or gr.skip(), example, prompt, api_visibility="private", queue=False)
    copy_link.click(link_query, [*linked.values(), n_columns, *pickers], link_box, api_visibility="private",
                    queue=False).then(
        None, link_box, link_box,
        js="(query) => { const url = location.origin + location.pathname + (query ? '?' + query : ''); "
           "history.replaceState(null, '', url); navigator.clipboard && navigator.clipboard.writeText(url).catch(() => {}); "
           "return url; }").then(lambda: gr.update(visible=True), None, link_box, api_visibility="private", queue=False)
    snippet_inputs = [fix_column, fix_kind, *inputs]
    for control in (fix_column, fix_kind, *inputs):
        control.change(on_snippet, snippet_inputs, snippet, api_visibility="private", queue=False)
    demo.load(on_snippet, snippet_inputs, snippet, api_visibility="private", queue=False)
    run_event.then(on_snippet, snippet_inputs, snippet, api_visibility="private")
