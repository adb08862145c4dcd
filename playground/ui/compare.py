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
from pathlib import Path

import gradio as gr

from .. import charts
from ..interventions import DESCRIPTIONS, INTERVENTION_NAMES, default_params
from ..links import MAX_COLUMNS, PAGE_DEFAULTS, from_query, to_query
from ..request import SETTINGS, Column, check_settings, check_whole, column_params_text, parse_column, resolve
from ..handover import read_trace, trace_cap_mb
from ..service import RUNS_AT_ONCE, Playground, column_names, write_trace_files
from ..story import story_markdown
from ..decoder import RunStopped
from .controls import control, max_new_tokens_control
from .api import write_html
from .errors import refusal, stopped
from ..views import (
    chart_column,
    chart_header,
    chart_lines,
    chart_stop,
    column_delta,
    default_selection,
    inspector_html,
    page_whole,
    status_markdown,
    token_spans,
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
# Branches are columns too: beyond the run's columns the page has places for this many more.
BRANCH_PLACES = 4
PLACES = MAX_COLUMNS + BRANCH_PLACES


def _tokens_js(column: int) -> str:
    return f"(function go() {{ window.eosPlayground ? eosPlayground.tokens(element, {column}, watch) : setTimeout(go, 50); }})();"


CHART_JS = "(function go() { window.eosPlayground ? eosPlayground.chart(element, props, trigger, watch) : setTimeout(go, 50); })();"
INSPECTOR_JS = "(function go() { window.eosPlayground ? eosPlayground.inspector(element, trigger) : setTimeout(go, 50); })();"
SELECTION_JS = "(function go() { window.eosPlayground ? eosPlayground.selection(props, watch) : setTimeout(go, 50); })();"


def no_branch_reason(trace) -> str | None:
    """Why "try" cannot add a column to ``trace`` on the page, or None when there is a place for it."""
    if trace is not None and len(trace.variants) >= PLACES:
        return f"All {PLACES} column places are in use ({PLACES} columns at most, branches included): remove a branch to try another."
    return None


def whole_chart(trace) -> str:
    """The chart's whole value for a finished trace (after a branch is removed: the columns are renumbered)."""
    return chart_header(trace) + "".join(chart_lines(v, i) + chart_stop(v, i) for i, v in enumerate(trace.variants))


def fix_choices(names: list[str], trace) -> list[tuple[str, str]]:
    """Copy this fix's columns by name: the page's columns as set now, then the last run's branches."""
    choices = [(name, f"column:{i}") for i, name in enumerate(names)]
    if trace is not None:
        choices += [(v.name, f"branch:{i}") for i, v in enumerate(trace.variants) if v.branch_of is not None]
    return choices


def trace_page_settings(trace) -> dict:
    """An opened trace's settings as the page's controls hold them: its prompt and the settings the page has."""
    return {"prompt": trace.prompt, **{key: value for key, value in trace.settings.items()
                                       if key in SETTINGS and value is not None}}


def trace_page_columns(trace, settings: dict) -> list[Column]:
    """An opened trace's columns (not its branches: those are decoded from a step, not set on the page), each read
    from its name, the column's text form, when that decodes as it did with the page's ``settings``; else (a
    renamed duplicate, a shared setting the trace does not keep) with every parameter its interventions had."""
    from ..interventions import parse_interventions

    columns = []
    for variant in trace.variants:
        if variant.branch_of is not None:
            continue
        recorded = parse_interventions(variant.interventions)
        try:
            column = parse_column(variant.name)
            if [i.to_dict() for i in resolve(column, settings)] != [i.to_dict() for i in recorded]:
                raise ValueError("the name leaves out parameters")
        except ValueError:
            column = Column(tuple(recorded), None if variant.model == "base" else variant.model)
        columns.append(column)
    return columns


def mark_stale(run: gr.Button, controls: list) -> None:
    """Results on the page belong to the settings they were run with: changing one (or picking an example) dims
    them with a note until the next Run."""
    for component in controls:
        component.change(None, None, None, js="() => { window.eosPlayground && eosPlayground.stale(true); }")
    run.click(None, None, None, js="() => { window.eosPlayground && eosPlayground.stale(false); }")


def compare_tab(playground: Playground, demo: gr.Blocks, opened=None) -> None:
    """The tab; ``opened``: a trace every new page shows at first (``python app.py --open FILE``)."""
    intervention_choices = list(INTERVENTION_NAMES)  # short chips; what each does is in the accordion below the pickers

    def model_choices() -> list[str]:
        """A column's model as one more chip of its picker, "@base" or "@NAME", when adapters are loaded."""
        models = playground.column_models()
        return [f"@{model}" for model in models] if len(models) > 1 else []

    def with_base_column(columns: list[Column]) -> list[Column]:
        """The default columns with adapters or checkpoints loaded: each model's baseline (the base beside the
        fine-tune), then the story's other columns, as many as fit."""
        return playground.default_columns(columns)[:max_columns]

    policy = playground.policy
    max_columns = min(MAX_COLUMNS, policy.max_columns)
    default_columns = PAGE_DEFAULTS["columns"][:max_columns]
    trace_cap_bytes = int(trace_cap_mb(policy) * 1024 * 1024)
    with gr.Tab("Compare"):
        holder = gr.State({})  # per session: the running comparison (for Stop) and the last trace
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300, elem_id="controls"):
                controls = {"prompt": control("prompt", lines=2, max_lines=6, elem_id="prompt")}
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="run", min_width=60, size="md")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=60, size="md")
                    copy_link = gr.Button("Copy link", elem_id="copy-link", min_width=60, size="md")
                link_box = gr.Textbox(label="Link to these settings", visible=False, buttons=["copy"], elem_id="link")
                example = gr.Dropdown(EXAMPLES, value=None, label="Examples", elem_id="examples")
                controls["max_new_tokens"] = max_new_tokens_control(
                    policy.max_new_tokens, min(PAGE_DEFAULTS["max_new_tokens"], policy.max_new_tokens), "max-new-tokens")
                controls["reward_start_ratio"] = control("reward_start_ratio", elem_id="ratio")
                controls["temperature"] = control("temperature", elem_id="temperature")
                n_columns = gr.Radio(list(range(1, max_columns + 1)), value=len(default_columns), label="Columns",
                                     elem_id="columns")
                defaults = PAGE_DEFAULTS["columns"] + [Column()] * MAX_COLUMNS
                pickers = [gr.Dropdown(intervention_choices, value=defaults[index].names, multiselect=True,
                                       label=f"Column {index + 1} interventions (none = baseline)",
                                       visible=index < len(default_columns), elem_id=f"picker-{index}")
                           for index in range(MAX_COLUMNS)]
                # Each column's own parameters; what a column leaves out takes the shared settings. Opened by a
                # link that sets some.
                with gr.Accordion("Each column's own parameters", open=False, elem_id="column-params") as own_params:
                    param_boxes = [gr.Textbox(column_params_text(defaults[index]), label=f"Column {index + 1}",
                                              placeholder="e.g. strength=8, reward_start_ratio=0.4 (empty: shared)",
                                              visible=index < len(default_columns), elem_id=f"params-{index}", max_lines=1)
                                   for index in range(MAX_COLUMNS)]
                with gr.Accordion("What each intervention does", open=False):
                    gr.Markdown("\n".join(f"- **{name}**: {DESCRIPTIONS[name]} Parameters: "
                                          + (", ".join(f"`{key}` (default {value!r})" for key, value in default_params(name).items())
                                             or "none") for name in INTERVENTION_NAMES))
                with gr.Accordion("More decoding settings", open=False):
                    controls.update({name: control(name) for name in SETTINGS if name not in controls})
                color_by = gr.Radio([("chosen token's probability", "p"), ("p(EOS), log scale", "p_eos")], value="p",
                                    label="Shade tokens by", elem_id="shade")
            with gr.Column(scale=3, min_width=320):
                gr.HTML('<div class="stale-note">These results are from the previous run, with other settings: '
                        'press Run to see these.</div>', elem_id="stale-note", padding=False)
                column_boxes, statuses, views, removes = [], [], [], []
                with gr.Row(equal_height=False, elem_id="columns-row"):
                    for index in range(PLACES):  # the run's columns, then places for branches
                        with gr.Column(visible=index < len(default_columns), min_width=200) as box:
                            statuses.append(gr.Markdown(IDLE_STATUS, elem_id=f"status-{index}", elem_classes="status"))
                            views.append(gr.HTML("", js_on_load=_tokens_js(index), elem_id=f"tokens-{index}",
                                                 elem_classes="token-view"))
                            removes.append(gr.Button("remove this branch", size="sm", visible=False, elem_id=f"remove-{index}",
                                                     elem_classes="remove-branch"))
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
                        fix_options = fix_choices(column_names(default_columns), None)
                        fix_column = gr.Dropdown(fix_options, value=fix_options[min(1, len(fix_options) - 1)][1], label="Column",
                                                 elem_id="fix-column")
                        fix_kind = gr.Radio([("model.generate() script", "generate"), ("pipeline() script", "pipeline"),
                                         ("arguments for your own generate() call", "kwargs")], value="generate",
                                        label="Use with")
                    snippet = gr.Code(language="python", label="Runnable Python that reproduces this column",
                                      elem_id="fix-snippet")
                with gr.Accordion("Stage by stage, as bars", open=False):
                    stage_chart = gr.Plot(label="The inspected step's top tokens after each stage")
                with gr.Accordion("Top-k over all steps", open=False):
                    heatmap = gr.Plot(label="Top-k of the inspected column over all steps")
                with gr.Row():
                    download_json = gr.DownloadButton("Download trace (JSON)", visible=False)
                    download_csv = gr.DownloadButton("Download trace (CSV)", visible=False)
                    # Written when asked for (0.4 s for 3 columns × 128 tokens), not after every run.
                    download_html = gr.Button("Download as HTML", visible=False, elem_id="download-html")
                    open_trace = gr.UploadButton("Open a trace (JSON or HTML)", file_types=[".json", ".html"],
                                                 file_count="single", elem_id="open-trace")
                html_file = gr.File(visible=False, elem_id="html-file")

    # ---- handlers -------------------------------------------------------------------------------
    linked = {name: controls[name] for name in SETTINGS}  # every setting, in the schema's order
    inputs = [*linked.values(), n_columns, *pickers, *param_boxes]

    def make_comparison(*values):
        settings = dict(zip(linked, values))
        n_columns_, rest = values[len(linked)], values[len(linked) + 1:]
        columns = playground.page_columns(n_columns_, rest[:MAX_COLUMNS], rest[MAX_COLUMNS:])
        return playground.comparison(columns=columns, **settings)

    def on_run(state, *args) -> Iterator[dict]:
        try:
            comparison = make_comparison(*args)
        except (ValueError, TypeError) as error:
            raise refusal(playground, "/run", error, page=True) from None
        state["comparison"] = comparison
        trace = comparison.trace
        n = len(trace.variants)
        # What the browser already has, per column: steps rendered, and whether the stop was announced.
        sent_steps, stopped_ = [0] * n, [False] * n
        token_values, chart_text = [""] * n, chart_header(trace)
        yield {**{statuses[i]: status_markdown(v) for i, v in enumerate(trace.variants)},
               **{box: gr.update(visible=i < n) for i, box in enumerate(column_boxes)},  # branches' places too
               **{button: gr.update(visible=False) for button in removes},
               **{views[i]: "" for i in range(n)}, chart: chart_text, selection: "",
               story: f"Decoding {n} column{'s' * (n > 1)}…", inspector: inspector_html(None, 0, 0), holder: state}
        last, shown = 0.0, [""] * n
        try:
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
                        line = status_markdown(variant)  # also changes while the run waits for memory
                        if len(variant.steps) == sent_steps[i] and stopped_[i] == variant.finished and line == shown[i]:
                            continue
                        spans, lines = column_delta(variant, i, sent_steps[i], stopped_[i])
                        token_values[i] += spans
                        chart_text += lines
                        sent_steps[i], stopped_[i], shown[i] = len(variant.steps), variant.finished, line
                        update[statuses[i]] = line
                        update[views[i]] = token_values[i]
                if update:
                    update[chart] = chart_text
                    yield update
        except RunStopped as error:  # out of memory, or a failed step: this run only, said in a sentence
            state.pop("comparison", None)
            raise stopped(playground, error, page=True) from None
        yield finished(state, trace, chart_text, default_selection(trace))

    def finished(state, trace, chart_text, selected) -> dict:
        """The last update of a run or a branch: statuses, the story, the inspector on ``selected``, downloads."""
        state.update(trace=trace, chart_text=chart_text, heatmap_column=selected[0])
        state.pop("comparison", None)
        files = write_trace_files(trace)
        return {**{statuses[i]: status_markdown(v) for i, v in enumerate(trace.variants)},
                **{button: gr.update(visible=i < len(trace.variants) and trace.variants[i].branch_of is not None)
                   for i, button in enumerate(removes)},
                story: story_markdown(trace),
                inspector: inspector_html(trace, *selected, playground.bundle.info.stop_token_ids, no_branch_reason(trace)),
                selection: "{} {}".format(*selected), stage_chart: charts.stages_figure(trace, *selected),
                heatmap: charts.heatmap_figure(trace, selected[0]),
                download_json: gr.update(value=files[0], visible=True),
                download_csv: gr.update(value=files[1], visible=True), download_html: gr.update(visible=True),
                holder: state}

    def on_branch(state, event: gr.EventData) -> Iterator[dict]:
        """"try" in the inspector: decode the inspected column again from that step with the chosen token, as a new
        column beside the others (the chart and the story show it too)."""
        trace, data = state.get("trace"), event._data or {}
        try:
            if trace is None or state.get("comparison") is not None:
                raise ValueError("run a comparison first, and let it finish, to branch it")
            if no_branch_reason(trace):
                raise ValueError(no_branch_reason(trace))
            comparison = playground.branch(trace, page_whole(data, "column") + 1, page_whole(data, "step"),
                                           page_whole(data, "token_id"))
        except (TypeError, ValueError) as error:
            raise refusal(playground, "branch", error, title="Cannot branch here", page=True) from None
        state["comparison"] = comparison
        slot = len(trace.variants)
        # The chart learns of the new column first; then, as in on_run, each update appends what is new.
        chart_text = state["chart_text"] + chart_column(trace.with_branches(comparison.trace), slot)
        tokens, sent, ended, last, branched = "", 0, False, 0.0, trace
        try:
            for branched in playground.stream(comparison):
                variant = branched.variants[slot]
                if not variant.finished and time.monotonic() - last < UPDATE_INTERVAL:
                    continue
                last = time.monotonic()
                with comparison.lock:  # one consistent step while the update is built
                    spans, lines = column_delta(variant, slot, sent, ended)
                    tokens, chart_text = tokens + spans, chart_text + lines
                    sent, ended = len(variant.steps), variant.finished
                    update = {column_boxes[slot]: gr.update(visible=True), statuses[slot]: status_markdown(variant),
                              views[slot]: tokens, chart: chart_text}
                yield update
        except RunStopped as error:
            state.pop("comparison", None)
            raise stopped(playground, error, page=True) from None
        yield finished(state, branched, chart_text, (slot, variant.branch_of[1]))

    def on_remove(state, index: int) -> dict:
        """"remove this branch": the page without that column (and the branches made from it), renumbered."""
        trace = state.get("trace")
        try:
            if trace is None or state.get("comparison") is not None:
                raise ValueError("wait until the run or branch has finished to remove a column")
            trace = trace.without_branch(index)
        except ValueError as error:
            raise refusal(playground, "remove branch", error, title="Cannot remove", page=True) from None
        n, chart_text = len(trace.variants), whole_chart(trace)
        return {**{box: gr.update(visible=i < n) for i, box in enumerate(column_boxes)},
                **{views[i]: token_spans(v) for i, v in enumerate(trace.variants)},
                **{views[i]: "" for i in range(n, PLACES)}, chart: chart_text,
                **finished(state, trace, chart_text, default_selection(trace))}

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
        return (inspector_html(trace, column, step, playground.bundle.info.stop_token_ids, no_branch_reason(trace)),
                charts.stages_figure(trace, column, step), figure, state)

    def on_columns(n):
        try:
            n = check_whole(n, "Columns", 1, MAX_COLUMNS)
        except ValueError as error:
            raise refusal(playground, "columns", error, page=True) from None
        visible = [gr.update(visible=i < n) for i in range(MAX_COLUMNS)]
        return visible * 3

    def on_snippet(choice, kind, state, *values):
        settings, rest = values[: len(linked)], values[len(linked) + 1:]
        pickers_, params = rest[:MAX_COLUMNS], rest[MAX_COLUMNS:]
        place, _, index = str(choice or "column:0").partition(":")
        try:  # only the chosen column: another column's bad settings must not block its snippet
            if place == "branch":
                return branch_snippet(state.get("trace"), int(index), kind)
            column = min(int(index), MAX_COLUMNS - 1)
            comparison = make_comparison(*settings, 1, pickers_[column], *[None] * (MAX_COLUMNS - 1),
                                         params[column], *[""] * (MAX_COLUMNS - 1))
        except (ValueError, TypeError) as error:
            return f"# {playground.user_message(error)}"
        return playground.export(comparison, kind)

    def branch_snippet(trace, index: int, kind: str) -> str:
        """A branch's fix: its parent's interventions with the run's settings; the forced tokens are said, since
        a fix cannot force them (the model picks from step 0 on)."""
        if trace is None or not 0 <= index < len(trace.variants) or trace.variants[index].branch_of is None:
            raise ValueError("that branch is gone: pick a column again")
        variant = trace.variants[index]
        parent, step = variant.branch_of
        comparison = playground.branch(trace, parent, step, variant.token_ids[step])
        forced = ("# This column is a branch of " + repr(trace.variants[parent - 1].name) + f": its tokens at steps 0–{step} "
                  "were forced (the last one picked in the inspector),\n# not chosen by the model. This script applies "
                  "the same interventions and settings, and the model chooses every token.\n")
        return forced + playground.export(comparison, kind)

    def page_column_names(n_columns_, pickers_, params) -> list[str]:
        """The names of the page's columns as set now (while one is being typed wrong: by number)."""
        try:
            return column_names(playground.page_columns(n_columns_, pickers_, params))
        except ValueError:
            return [f"Column {index + 1}" for index in range(int(n_columns_ or 1))]

    def on_fix_choices(state, choice, n_columns_, *rest):
        choices = fix_choices(page_column_names(n_columns_, rest[:MAX_COLUMNS], rest[MAX_COLUMNS:]), state.get("trace"))
        values = [value for _, value in choices]
        return gr.update(choices=choices, value=choice if choice in values else values[0])

    def link_query(*values) -> str:
        settings = dict(zip(linked, values[: len(linked)]))
        try:
            count = check_whole(values[len(linked)], "Columns", 1, MAX_COLUMNS)
        except ValueError as error:
            raise refusal(playground, "copy link", error, page=True) from None
        rest = values[len(linked) + 1:]
        try:
            settings["columns"] = playground.page_columns(count, rest[:MAX_COLUMNS], rest[MAX_COLUMNS:])
        except ValueError as error:
            gr.Warning(html.escape(f"The link leaves the columns at their defaults: {playground.user_message(error)}"),
                       title="Link")
        return to_query(settings)

    def on_page_load(request: gr.Request):
        """Fill the page from the link's query; name anything in it that could not be used."""
        params = dict(request.query_params) if request is not None else {}
        settings, problems = from_query(params)
        if "columns" not in params:
            settings["columns"] = with_base_column(settings["columns"])
        for problem in problems:
            gr.Warning(html.escape(f"This link: {problem}."), title="Link")  # a toast shows HTML
        return page_values(settings, "This link", "Link")

    def page_values(settings: dict, source: str, title: str) -> list:
        """The controls set to ``settings`` (every setting and the columns), in ``link_outputs``' order; what this
        app cannot allow is capped, and ``source`` ("This link") is told so."""
        columns = settings["columns"][:max_columns]
        if settings["max_new_tokens"] > policy.max_new_tokens:
            gr.Warning(f"{source} asks for {settings['max_new_tokens']} new tokens; this app allows at most "
                       f"{policy.max_new_tokens}.", title=title)
            settings["max_new_tokens"] = policy.max_new_tokens
        values = [settings[key] for key in linked] + [len(columns)]
        values += [gr.update(value=columns[i].names + ([f"@{columns[i].model}"] if columns[i].model else [])
                             if i < len(columns) else [], visible=i < len(columns), choices=[*intervention_choices, *model_choices()])
                   for i in range(MAX_COLUMNS)]
        values += [gr.update(value=column_params_text(columns[i]) if i < len(columns) else "", visible=i < len(columns))
                   for i in range(MAX_COLUMNS)]
        values.append(gr.update(open=any(column_params_text(c) for c in columns)))
        return values + [gr.update(visible=i < len(columns)) for i in range(MAX_COLUMNS)]

    def on_open(state, file) -> dict:
        """Open a trace JSON or an exported HTML file: every view of it as after a run, without decoding (branches
        and Copy this fix work), and the controls set to its settings, so Run decodes it again. The file is read as
        data (nothing in it is run or shown as markup) and only into this visitor's session."""
        try:
            if state.get("comparison") is not None:
                raise ValueError("wait until the run has finished (or press Stop) to open a trace")
            if file is None:
                raise ValueError("trace file: choose a trace JSON or an HTML file exported by the playground")
            return show_trace(state, read_trace(Path(file).read_bytes(), max_bytes=trace_cap_bytes))
        except (OSError, ValueError) as error:
            raise refusal(playground, "open trace", error, title="Cannot open this trace", page=True) from None

    def on_start(state) -> dict:
        try:
            return show_trace(state, opened)
        except ValueError as error:
            raise refusal(playground, "--open", error, title="Cannot open this trace", page=True) from None

    def show_trace(state, trace) -> dict:
        """Every view of a finished ``trace`` and the controls set to its settings (ValueError: settings this
        playground cannot take, more columns than the page has places for)."""
        if len(trace.variants) > PLACES:
            raise ValueError(f"this trace has {len(trace.variants)} columns; the page shows {PLACES} at most "
                             "(open it in a browser as an exported HTML file, or with python -m playground)")
        settings = {**PAGE_DEFAULTS, **check_settings(trace_page_settings(trace))}
        settings["columns"] = trace_page_columns(trace, settings)
        if len(settings["columns"]) > max_columns:
            gr.Warning(f"This trace has {len(settings['columns'])} columns; this app decodes {max_columns} at most, "
                       f"so Run decodes the first {max_columns}.", title="Trace")
        loaded = playground.bundle.info.name
        if trace.model != loaded:
            gr.Warning(f"This trace was decoded by {trace.model}; {loaded} is loaded. It is shown as it was; Run "
                       f"decodes it again with {loaded}, and \"try\" needs {trace.model} loaded.", title="Trace")
        n, chart_text = len(trace.variants), whole_chart(trace)
        shown = {box: gr.update(visible=i < n) for i, box in enumerate(column_boxes)}
        return {**dict(zip(link_outputs, page_values(settings, "This trace", "Trace"))), **shown,
                **{views[i]: token_spans(v) for i, v in enumerate(trace.variants)},
                **{views[i]: "" for i in range(n, PLACES)}, chart: chart_text,
                **finished(state, trace, chart_text, default_selection(trace))}

    def on_download_html(state) -> str:
        trace = state.get("trace")
        if trace is None:
            raise refusal(playground, "download html", ValueError("run a comparison first, and let it finish"),
                          page=True)
        return write_html(playground, trace)

    link_outputs = [*linked.values(), n_columns, *pickers, *param_boxes, own_params, *column_boxes[:MAX_COLUMNS]]
    # Queued, so its warnings reach the page; never waits behind a run (no concurrency limit).
    load_event = demo.load(on_page_load, None, link_outputs, api_visibility="private", concurrency_limit=None)
    run_outputs = [*statuses, *views, *column_boxes, *removes, story, chart, inspector, selection, stage_chart, heatmap,
                   download_json, download_csv, download_html, holder]
    # Runs share the decode loop (their rows share forward passes), so up to RUNS_AT_ONCE decode together.
    run_event = run.click(on_run, [holder, *inputs], run_outputs,
                          concurrency_id="decode", concurrency_limit=RUNS_AT_ONCE, api_visibility="private")
    branch_event = inspector.click(on_branch, holder, run_outputs, concurrency_id="decode",
                                   concurrency_limit=RUNS_AT_ONCE, api_visibility="private")
    remove_events = [button.click(lambda state, index=index: on_remove(state, index), holder, run_outputs,
                                  api_visibility="private", queue=False) for index, button in enumerate(removes)]
    stop.click(on_stop, holder, None, queue=False, api_visibility="private")
    # The file goes to a hidden File, then the browser saves it (a DownloadButton saves the file it already has).
    download_html.click(on_download_html, holder, html_file, api_visibility="private", concurrency_id="handover",
                        concurrency_limit=2).success(
        None, html_file, None, js="(file) => { if (!file || !file.url) return; const link = document.createElement('a'); "
                                  "link.href = file.url; link.download = 'eos-playground.html'; link.click(); }")
    # Setting the controls to the trace's settings fires their change events, which dim the results; the trace's
    # own are then shown undimmed.
    open_outputs = list(dict.fromkeys([*link_outputs, *run_outputs]))
    open_event = open_trace.upload(on_open, [holder, open_trace], open_outputs, api_visibility="private",
                                   concurrency_limit=None)
    open_event.success(None, None, None, js="() => { window.eosPlayground && eosPlayground.stale(false); }")
    chart.click(on_select, holder, [inspector, stage_chart, heatmap, holder], api_visibility="private", queue=False)
    mark_stale(run, inputs)
    color_by.change(None, color_by, None, js="(v) => { document.body.classList.toggle('shade-eos', v === 'p_eos'); }")
    n_columns.change(on_columns, n_columns, [*column_boxes[:MAX_COLUMNS], *pickers, *param_boxes],
                     api_visibility="private", queue=False)
    example.change(lambda text: text or gr.skip(), example, controls["prompt"], api_visibility="private", queue=False)
    copy_link.click(link_query, inputs, link_box, api_visibility="private",
                    queue=False).then(
        None, link_box, link_box,
        js="(query) => { const url = location.origin + location.pathname + (query ? '?' + query : ''); "
           "history.replaceState(null, '', url); navigator.clipboard && navigator.clipboard.writeText(url).catch(() => {}); "
           "return url; }").then(lambda: gr.update(visible=True), None, link_box, api_visibility="private", queue=False)
    snippet_inputs = [fix_column, fix_kind, holder, *inputs]
    for component in (fix_column, fix_kind, *inputs):
        component.change(on_snippet, snippet_inputs, snippet, api_visibility="private", queue=False)
    demo.load(on_snippet, snippet_inputs, snippet, api_visibility="private", queue=False)
    run_event.then(on_snippet, snippet_inputs, snippet, api_visibility="private")
    # Copy this fix names the page's columns as set now, then the last run's branches.
    open_event.success(on_snippet, snippet_inputs, snippet, api_visibility="private", queue=False)
    for event in (run_event, branch_event, open_event, *remove_events):
        event.then(on_fix_choices, [holder, fix_column, n_columns, *pickers, *param_boxes], fix_column, api_visibility="private", queue=False)
    for component in (n_columns, *pickers, *param_boxes):
        component.change(on_fix_choices, [holder, fix_column, n_columns, *pickers, *param_boxes], fix_column, api_visibility="private",
                       queue=False)
    if opened is not None:  # after the link's settings: the trace's own replace them
        start_event = load_event.then(on_start, holder, open_outputs, api_visibility="private")
        start_event.then(None, None, None, js="() => { window.eosPlayground && eosPlayground.stale(false); }")
        start_event.then(on_snippet, snippet_inputs, snippet, api_visibility="private", queue=False)
        start_event.then(on_fix_choices, [holder, fix_column, n_columns, *pickers, *param_boxes], fix_column,
                         api_visibility="private", queue=False)
