"""The Compare tab: settings on the left; on the right the columns streaming side by side, what happened in
words, the live p(EOS) chart with the step inspector beside it, and the fix to copy.

Streaming is append-only: each column's token view and the chart's data only grow while a run decodes, so
Gradio sends each update as the new part (see ``views``). Selecting a step happens in the browser
(``page.js``); the server only renders the inspector for it.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from .. import charts
from ..decoder import RunStopped
from ..handover import read_trace, trace_cap_mb
from ..interventions import DESCRIPTIONS, INTERVENTION_NAMES, default_params
from ..links import MAX_COLUMNS, PAGE_DEFAULTS, from_query, to_query
from ..request import SETTINGS, Column, check_settings, check_whole, column_params_text, parse_column, resolve
from ..service import RUNS_AT_ONCE, Playground, column_names, write_trace_files
from ..story import story_markdown
from ..views import (chart_column, chart_header, chart_lines, chart_stop, default_selection, inspector_html,
                     page_whole, status_markdown, token_spans)
from .api import write_html
from .controls import control, max_new_tokens_control
from .errors import refusal, stopped
from .page_input import page_columns
from .streaming import PAGE_INTERVAL, PageColumns, paced

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
UNDIM_JS = "() => { window.eosPlayground && eosPlayground.stale(false); }"


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
    run.click(None, None, None, js=UNDIM_JS)


def compare_tab(playground: Playground, demo: gr.Blocks, opened=None) -> None:
    """The tab; ``opened``: a trace every new page shows at first (``python app.py --open FILE``)."""
    CompareTab(playground, opened).wire(demo)


class CompareTab:
    """The Compare tab: its components (the settings column, then the results column), its handlers — running and
    branching, inspecting a step, the fix to copy, links and opened traces — and :meth:`wire`, which connects them.
    Per session, ``holder`` keeps the running comparison (for Stop) and the last trace."""

    def __init__(self, playground: Playground, opened=None):
        self.playground, self.opened = playground, opened
        policy = playground.policy
        self.max_columns = min(MAX_COLUMNS, policy.max_columns)
        self.default_columns = PAGE_DEFAULTS["columns"][:self.max_columns]
        self.trace_cap_bytes = int(trace_cap_mb(policy) * 1024 * 1024)
        with gr.Tab("Compare"):
            self.holder = gr.State({})
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=300, elem_id="controls"):
                    self._settings_column()
                with gr.Column(scale=3, min_width=320):
                    self._results_column()
        self.linked = {name: self.controls[name] for name in SETTINGS}  # every setting, in the schema's order
        self.inputs = [*self.linked.values(), self.n_columns, *self.pickers, *self.param_boxes]
        # What a link or an opened trace sets: the settings, the columns and their parameters.
        self.link_outputs = [*self.linked.values(), self.n_columns, *self.pickers, *self.param_boxes, self.own_params,
                             *self.column_boxes[:MAX_COLUMNS]]
        # What a run, a branch or an opened trace shows.
        self.run_outputs = [*self.statuses, *self.views, *self.column_boxes, *self.removes, self.story, self.chart,
                            self.inspector, self.selection, self.stage_chart, self.heatmap, self.download_json,
                            self.download_csv, self.download_html, self.holder]
        self.snippet_inputs = [self.fix_column, self.fix_kind, self.holder, *self.inputs]
        self.fix_inputs = [self.holder, self.fix_column, self.n_columns, *self.pickers, *self.param_boxes]

    # ---- layout ---------------------------------------------------------------------------------

    def _settings_column(self) -> None:
        """The prompt, Run / Stop / Copy link, the three main sliders, the columns' pickers and parameters, the
        other settings."""
        policy, defaults = self.playground.policy, PAGE_DEFAULTS["columns"] + [Column()] * MAX_COLUMNS
        shown = len(self.default_columns)
        self.controls = {"prompt": control("prompt", lines=2, max_lines=6, elem_id="prompt")}
        with gr.Row():
            self.run = gr.Button("Run", variant="primary", elem_id="run", min_width=60, size="md")
            self.stop = gr.Button("Stop", variant="stop", elem_id="stop", min_width=60, size="md")
            self.copy_link = gr.Button("Copy link", elem_id="copy-link", min_width=60, size="md")
        self.link_box = gr.Textbox(label="Link to these settings", visible=False, buttons=["copy"], elem_id="link")
        self.example = gr.Dropdown(EXAMPLES, value=None, label="Examples", elem_id="examples")
        self.controls["max_new_tokens"] = max_new_tokens_control(
            policy.max_new_tokens, min(PAGE_DEFAULTS["max_new_tokens"], policy.max_new_tokens), "max-new-tokens")
        self.controls["reward_start_ratio"] = control("reward_start_ratio", elem_id="ratio")
        self.controls["temperature"] = control("temperature", elem_id="temperature")
        self.n_columns = gr.Radio(list(range(1, self.max_columns + 1)), value=shown, label="Columns", elem_id="columns")
        # Short chips; what each does is in the accordion below the pickers.
        self.pickers = [gr.Dropdown(list(INTERVENTION_NAMES), value=defaults[index].names, multiselect=True,
                                    label=f"Column {index + 1} interventions (none = baseline)",
                                    visible=index < shown, elem_id=f"picker-{index}")
                        for index in range(MAX_COLUMNS)]
        # Each column's own parameters; what a column leaves out takes the shared settings. Opened by a link that
        # sets some.
        with gr.Accordion("Each column's own parameters", open=False, elem_id="column-params") as self.own_params:
            self.param_boxes = [gr.Textbox(column_params_text(defaults[index]), label=f"Column {index + 1}",
                                           placeholder="e.g. strength=8, reward_start_ratio=0.4 (empty: shared)",
                                           visible=index < shown, elem_id=f"params-{index}", max_lines=1)
                                for index in range(MAX_COLUMNS)]
        with gr.Accordion("What each intervention does", open=False):
            gr.Markdown("\n".join(f"- **{name}**: {DESCRIPTIONS[name]} Parameters: "
                                  + (", ".join(f"`{key}` (default {value!r})" for key, value in default_params(name).items())
                                     or "none") for name in INTERVENTION_NAMES))
        with gr.Accordion("More decoding settings", open=False):
            self.controls.update({name: control(name) for name in SETTINGS if name not in self.controls})
        self.color_by = gr.Radio([("chosen token's probability", "p"), ("p(EOS), log scale", "p_eos")], value="p",
                                 label="Shade tokens by", elem_id="shade")

    def _results_column(self) -> None:
        """The columns (the run's, then places for branches), the story, the chart and the inspector, Copy this fix,
        the stage and top-k plots, downloads and Open a trace."""
        gr.HTML('<div class="stale-note">These results are from the previous run, with other settings: '
                'press Run to see these.</div>', elem_id="stale-note", padding=False)
        self.column_boxes, self.statuses, self.views, self.removes = [], [], [], []
        with gr.Row(equal_height=False, elem_id="columns-row"):
            for index in range(PLACES):
                with gr.Column(visible=index < len(self.default_columns), min_width=200) as box:
                    self.statuses.append(gr.Markdown(IDLE_STATUS, elem_id=f"status-{index}", elem_classes="status"))
                    self.views.append(gr.HTML("", js_on_load=_tokens_js(index), elem_id=f"tokens-{index}",
                                              elem_classes="token-view"))
                    self.removes.append(gr.Button("remove this branch", size="sm", visible=False,
                                                  elem_id=f"remove-{index}", elem_classes="remove-branch"))
                self.column_boxes.append(box)
        self.story = gr.Markdown("", elem_id="story")
        with gr.Row(equal_height=False):
            self.chart = gr.HTML("", html_template='<div class="eos-chart"></div>', js_on_load=CHART_JS,
                                 elem_id="chart", scale=3, min_width=320)
            self.inspector = gr.HTML(inspector_html(None, 0, 0), elem_id="inspector", scale=2, min_width=280,
                                     js_on_load=INSPECTOR_JS)
        self.selection = gr.HTML("", html_template="", js_on_load=SELECTION_JS, elem_id="selection")
        with gr.Accordion("Copy this fix", open=False):
            with gr.Row():
                options = fix_choices(column_names(self.default_columns), None)
                self.fix_column = gr.Dropdown(options, value=options[min(1, len(options) - 1)][1], label="Column",
                                              elem_id="fix-column")
                self.fix_kind = gr.Radio([("model.generate() script", "generate"), ("pipeline() script", "pipeline"),
                                          ("arguments for your own generate() call", "kwargs")], value="generate",
                                         label="Use with")
            self.snippet = gr.Code(language="python", label="Runnable Python that reproduces this column",
                                   elem_id="fix-snippet")
        with gr.Accordion("Stage by stage, as bars", open=False):
            self.stage_chart = gr.Plot(label="The inspected step's top tokens after each stage")
        with gr.Accordion("Top-k over all steps", open=False):
            self.heatmap = gr.Plot(label="Top-k of the inspected column over all steps")
        with gr.Row():
            self.download_json = gr.DownloadButton("Download trace (JSON)", visible=False)
            self.download_csv = gr.DownloadButton("Download trace (CSV)", visible=False)
            # Written when asked for (0.4 s for 3 columns × 128 tokens), not after every run.
            self.download_html = gr.Button("Download as HTML", visible=False, elem_id="download-html")
            self.open_trace = gr.UploadButton("Open a trace (JSON or HTML)", file_types=[".json", ".html"],
                                              file_count="single", elem_id="open-trace")
        self.html_file = gr.File(visible=False, elem_id="html-file")

    # ---- running and branching ------------------------------------------------------------------

    def make_comparison(self, *values):
        """The comparison the page's controls ask for (``self.inputs``' values)."""
        settings = dict(zip(self.linked, values))
        n_columns, rest = values[len(self.linked)], values[len(self.linked) + 1:]
        columns = page_columns(n_columns, rest[:MAX_COLUMNS], rest[MAX_COLUMNS:])
        return self.playground.comparison(columns=columns, **settings)

    def on_run(self, state, *values) -> Iterator[dict]:
        try:
            comparison = self.make_comparison(*values)
        except (ValueError, TypeError) as error:
            raise refusal(self.playground, "/run", error, page=True) from None
        state["comparison"] = comparison
        trace = comparison.trace
        n = len(trace.variants)
        yield {**{self.statuses[i]: status_markdown(v) for i, v in enumerate(trace.variants)},
               **{box: gr.update(visible=i < n) for i, box in enumerate(self.column_boxes)},  # branches' places too
               **{button: gr.update(visible=False) for button in self.removes},
               **{self.views[i]: "" for i in range(n)}, self.chart: chart_header(trace), self.selection: "",
               self.story: f"Decoding {n} column{'s' * (n > 1)}…", self.inspector: inspector_html(None, 0, 0),
               self.holder: state}
        page = PageColumns(chart_header(trace), range(n))
        trace = yield from self._stream(state, comparison, page)
        yield self.finished(state, trace, page.chart, default_selection(trace))

    def on_branch(self, state, event: gr.EventData) -> Iterator[dict]:
        """"try" in the inspector: decode the inspected column again from that step with the chosen token, as a new
        column beside the others (the chart and the story show it too)."""
        trace, data = state.get("trace"), event._data or {}
        try:
            if trace is None or state.get("comparison") is not None:
                raise ValueError("run a comparison first, and let it finish, to branch it")
            if no_branch_reason(trace):
                raise ValueError(no_branch_reason(trace))
            comparison = self.playground.branch(trace, page_whole(data, "column") + 1, page_whole(data, "step"),
                                                page_whole(data, "token_id"))
        except (TypeError, ValueError) as error:
            raise refusal(self.playground, "branch", error, title="Cannot branch here", page=True) from None
        state["comparison"] = comparison
        slot = len(trace.variants)
        yield {self.column_boxes[slot]: gr.update(visible=True)}
        # The chart learns of the new column first; then, as in a run, each update appends what is new.
        page = PageColumns(state["chart_text"] + chart_column(trace.with_branches(comparison.trace), slot), [slot])
        branched = yield from self._stream(state, comparison, page)
        yield self.finished(state, branched, page.chart, (slot, branched.variants[slot].branch_of[1]))

    def _stream(self, state, comparison, page: PageColumns):
        """The comparison's run on the page: paced updates of ``page``'s columns and the chart; returns the
        finished trace. A closed page closes this, which stops the decode."""
        trace = comparison.trace
        try:
            for trace in paced(self.playground.stream(comparison), PAGE_INTERVAL,
                               final=lambda t: all(v.finished for v in t.variants)):
                changed = page.advance(trace, comparison.lock)
                if changed:
                    yield {**{self.statuses[i]: page.status[i] for i in changed},
                           **{self.views[i]: page.tokens[i] for i in changed}, self.chart: page.chart}
        except RunStopped as error:  # out of memory, or a failed step: this run only, said in a sentence
            state.pop("comparison", None)
            raise stopped(self.playground, error, page=True) from None
        return trace

    def finished(self, state, trace, chart_text, selected) -> dict:
        """The last update of a run or a branch: statuses, the story, the inspector on ``selected``, downloads."""
        state.update(trace=trace, chart_text=chart_text, heatmap_column=selected[0])
        state.pop("comparison", None)
        files = write_trace_files(trace)
        stop_ids = self.playground.bundle.info.stop_token_ids
        return {**{self.statuses[i]: status_markdown(v) for i, v in enumerate(trace.variants)},
                **{button: gr.update(visible=i < len(trace.variants) and trace.variants[i].branch_of is not None)
                   for i, button in enumerate(self.removes)},
                self.story: story_markdown(trace),
                self.inspector: inspector_html(trace, *selected, stop_ids, no_branch_reason(trace)),
                self.selection: "{} {}".format(*selected), self.stage_chart: charts.stages_figure(trace, *selected),
                self.heatmap: charts.heatmap_figure(trace, selected[0]),
                self.download_json: gr.update(value=files[0], visible=True),
                self.download_csv: gr.update(value=files[1], visible=True), self.download_html: gr.update(visible=True),
                self.holder: state}

    def shown_whole(self, state, trace, selected) -> dict:
        """Every column of a finished ``trace`` drawn at once (a branch removed, a trace opened)."""
        n, chart_text = len(trace.variants), whole_chart(trace)
        return {**{box: gr.update(visible=i < n) for i, box in enumerate(self.column_boxes)},
                **{self.views[i]: token_spans(v) for i, v in enumerate(trace.variants)},
                **{self.views[i]: "" for i in range(n, PLACES)}, self.chart: chart_text,
                **self.finished(state, trace, chart_text, selected)}

    def on_remove(self, state, index: int) -> dict:
        """"remove this branch": the page without that column (and the branches made from it), renumbered."""
        trace = state.get("trace")
        try:
            if trace is None or state.get("comparison") is not None:
                raise ValueError("wait until the run or branch has finished to remove a column")
            trace = trace.without_branch(index)
        except ValueError as error:
            raise refusal(self.playground, "remove branch", error, title="Cannot remove", page=True) from None
        return self.shown_whole(state, trace, default_selection(trace))

    @staticmethod
    def on_stop(state):
        comparison = state.get("comparison")
        if comparison is not None:
            comparison.cancel()

    # ---- inspecting a step ----------------------------------------------------------------------

    def on_select(self, state, event: gr.EventData):
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
        return (inspector_html(trace, column, step, self.playground.bundle.info.stop_token_ids, no_branch_reason(trace)),
                charts.stages_figure(trace, column, step), figure, state)

    def on_columns(self, n):
        try:
            n = check_whole(n, "Columns", 1, MAX_COLUMNS)
        except ValueError as error:
            raise refusal(self.playground, "columns", error, page=True) from None
        return [gr.update(visible=i < n) for i in range(MAX_COLUMNS)] * 3

    # ---- Copy this fix --------------------------------------------------------------------------

    def on_snippet(self, choice, kind, state, *values):
        settings, rest = values[: len(self.linked)], values[len(self.linked) + 1:]
        pickers, params = rest[:MAX_COLUMNS], rest[MAX_COLUMNS:]
        place, _, index = str(choice or "column:0").partition(":")
        try:  # only the chosen column: another column's bad settings must not block its snippet
            if place == "branch":
                return self.branch_snippet(state.get("trace"), int(index), kind)
            column = min(int(index), MAX_COLUMNS - 1)
            comparison = self.make_comparison(*settings, 1, pickers[column], *[None] * (MAX_COLUMNS - 1),
                                              params[column], *[""] * (MAX_COLUMNS - 1))
        except (ValueError, TypeError) as error:
            return f"# {self.playground.user_message(error)}"
        return self.playground.export(comparison, kind)

    def branch_snippet(self, trace, index: int, kind: str) -> str:
        """A branch's fix: its parent's interventions with the run's settings; the forced tokens are said, since
        a fix cannot force them (the model picks from step 0 on)."""
        if trace is None or not 0 <= index < len(trace.variants) or trace.variants[index].branch_of is None:
            raise ValueError("that branch is gone: pick a column again")
        variant = trace.variants[index]
        parent, step = variant.branch_of
        comparison = self.playground.branch(trace, parent, step, variant.token_ids[step])
        forced = ("# This column is a branch of " + repr(trace.variants[parent - 1].name) + f": its tokens at steps 0–{step} "
                  "were forced (the last one picked in the inspector),\n# not chosen by the model. This script applies "
                  "the same interventions and settings, and the model chooses every token.\n")
        return forced + self.playground.export(comparison, kind)

    def on_fix_choices(self, state, choice, n_columns, *rest):
        """Copy this fix's columns: the page's as set now (while one is being typed wrong: by number), then the
        last run's branches."""
        try:
            names = column_names(page_columns(n_columns, rest[:MAX_COLUMNS], rest[MAX_COLUMNS:]))
        except ValueError:
            names = [f"Column {index + 1}" for index in range(int(n_columns or 1))]
        choices = fix_choices(names, state.get("trace"))
        values = [value for _, value in choices]
        return gr.update(choices=choices, value=choice if choice in values else values[0])

    # ---- links and opened traces ----------------------------------------------------------------

    def link_query(self, *values) -> str:
        settings = dict(zip(self.linked, values[: len(self.linked)]))
        try:
            count = check_whole(values[len(self.linked)], "Columns", 1, MAX_COLUMNS)
        except ValueError as error:
            raise refusal(self.playground, "copy link", error, page=True) from None
        rest = values[len(self.linked) + 1:]
        try:
            settings["columns"] = page_columns(count, rest[:MAX_COLUMNS], rest[MAX_COLUMNS:])
        except ValueError as error:
            gr.Warning(html.escape(f"The link leaves the columns at their defaults: {self.playground.user_message(error)}"),
                       title="Link")
        return to_query(settings)

    def on_page_load(self, request: gr.Request):
        """Fill the page from the link's query; name anything in it that could not be used."""
        params = dict(request.query_params) if request is not None else {}
        settings, problems = from_query(params)
        if "columns" not in params:  # with adapters or checkpoints loaded: each model's baseline, then the story's
            settings["columns"] = self.playground.default_columns(settings["columns"])[:self.max_columns]
        for problem in problems:
            gr.Warning(html.escape(f"This link: {problem}."), title="Link")  # a toast shows HTML
        return self.page_values(settings, "This link", "Link")

    def model_chips(self) -> list[str]:
        """A column's model as one more chip of its picker, "@base" or "@NAME", when adapters are loaded."""
        models = self.playground.column_models()
        return [f"@{model}" for model in models] if len(models) > 1 else []

    def page_values(self, settings: dict, source: str, title: str) -> list:
        """The controls set to ``settings`` (every setting and the columns), in ``link_outputs``' order; what this
        app cannot allow is capped, and ``source`` ("This link") is told so."""
        policy = self.playground.policy
        columns = settings["columns"][:self.max_columns]
        if settings["max_new_tokens"] > policy.max_new_tokens:
            gr.Warning(f"{source} asks for {settings['max_new_tokens']} new tokens; this app allows at most "
                       f"{policy.max_new_tokens}.", title=title)
            settings["max_new_tokens"] = policy.max_new_tokens
        chips = [*INTERVENTION_NAMES, *self.model_chips()]
        values = [settings[key] for key in self.linked] + [len(columns)]
        values += [gr.update(value=columns[i].names + ([f"@{columns[i].model}"] if columns[i].model else [])
                             if i < len(columns) else [], visible=i < len(columns), choices=chips)
                   for i in range(MAX_COLUMNS)]
        values += [gr.update(value=column_params_text(columns[i]) if i < len(columns) else "", visible=i < len(columns))
                   for i in range(MAX_COLUMNS)]
        values.append(gr.update(open=any(column_params_text(c) for c in columns)))
        return values + [gr.update(visible=i < len(columns)) for i in range(MAX_COLUMNS)]

    def on_open(self, state, file) -> dict:
        """Open a trace JSON or an exported HTML file: every view of it as after a run, without decoding (branches
        and Copy this fix work), and the controls set to its settings, so Run decodes it again. The file is read as
        data (nothing in it is run or shown as markup) and only into this visitor's session."""
        try:
            if state.get("comparison") is not None:
                raise ValueError("wait until the run has finished (or press Stop) to open a trace")
            if file is None:
                raise ValueError("trace file: choose a trace JSON or an HTML file exported by the playground")
            return self.show_trace(state, read_trace(Path(file).read_bytes(), max_bytes=self.trace_cap_bytes))
        except (OSError, ValueError) as error:
            raise refusal(self.playground, "open trace", error, title="Cannot open this trace", page=True) from None

    def on_start(self, state) -> dict:
        try:
            return self.show_trace(state, self.opened)
        except ValueError as error:
            raise refusal(self.playground, "--open", error, title="Cannot open this trace", page=True) from None

    def show_trace(self, state, trace) -> dict:
        """Every view of a finished ``trace`` and the controls set to its settings (ValueError: settings this
        playground cannot take, more columns than the page has places for)."""
        if len(trace.variants) > PLACES:
            raise ValueError(f"this trace has {len(trace.variants)} columns; the page shows {PLACES} at most "
                             "(open it in a browser as an exported HTML file, or with python -m playground)")
        settings = {**PAGE_DEFAULTS, **check_settings(trace_page_settings(trace))}
        settings["columns"] = trace_page_columns(trace, settings)
        if len(settings["columns"]) > self.max_columns:
            gr.Warning(f"This trace has {len(settings['columns'])} columns; this app decodes {self.max_columns} at "
                       f"most, so Run decodes the first {self.max_columns}.", title="Trace")
        loaded = self.playground.bundle.info.name
        if trace.model != loaded:
            gr.Warning(f"This trace was decoded by {trace.model}; {loaded} is loaded. It is shown as it was; Run "
                       f"decodes it again with {loaded}, and \"try\" needs {trace.model} loaded.", title="Trace")
        return {**dict(zip(self.link_outputs, self.page_values(settings, "This trace", "Trace"))),
                **self.shown_whole(state, trace, default_selection(trace))}

    def on_download_html(self, state) -> str:
        trace = state.get("trace")
        if trace is None:
            raise refusal(self.playground, "download html", ValueError("run a comparison first, and let it finish"),
                          page=True)
        return write_html(self.playground, trace)

    # ---- wiring ---------------------------------------------------------------------------------

    def wire(self, demo: gr.Blocks) -> None:
        """Every event of the tab. Runs and branches share the decode loop (their rows share forward passes), so up
        to RUNS_AT_ONCE decode together; what only redraws the page is not queued."""
        private, quick = {"api_visibility": "private"}, {"api_visibility": "private", "queue": False}
        # Queued, so its warnings reach the page; never waits behind a run (no concurrency limit).
        load_event = demo.load(self.on_page_load, None, self.link_outputs, concurrency_limit=None, **private)
        decoding = {"concurrency_id": "decode", "concurrency_limit": RUNS_AT_ONCE, **private}
        run_event = self.run.click(self.on_run, [self.holder, *self.inputs], self.run_outputs, **decoding)
        branch_event = self.inspector.click(self.on_branch, self.holder, self.run_outputs, **decoding)
        remove_events = [button.click(lambda state, index=index: self.on_remove(state, index), self.holder,
                                      self.run_outputs, **quick) for index, button in enumerate(self.removes)]
        self.stop.click(self.on_stop, self.holder, None, **quick)
        # The file goes to a hidden File, then the browser saves it (a DownloadButton saves the file it already has).
        self.download_html.click(self.on_download_html, self.holder, self.html_file, concurrency_id="handover",
                                 concurrency_limit=2, **private).success(
            None, self.html_file, None,
            js="(file) => { if (!file || !file.url) return; const link = document.createElement('a'); "
               "link.href = file.url; link.download = 'eos-playground.html'; link.click(); }")
        # Setting the controls to the trace's settings fires their change events, which dim the results; the
        # trace's own are then shown undimmed.
        open_outputs = list(dict.fromkeys([*self.link_outputs, *self.run_outputs]))
        open_event = self.open_trace.upload(self.on_open, [self.holder, self.open_trace], open_outputs,
                                            concurrency_limit=None, **private)
        open_event.success(None, None, None, js=UNDIM_JS)
        self.chart.click(self.on_select, self.holder, [self.inspector, self.stage_chart, self.heatmap, self.holder],
                         **quick)
        mark_stale(self.run, self.inputs)
        self.color_by.change(None, self.color_by, None,
                             js="(v) => { document.body.classList.toggle('shade-eos', v === 'p_eos'); }")
        self.n_columns.change(self.on_columns, self.n_columns,
                              [*self.column_boxes[:MAX_COLUMNS], *self.pickers, *self.param_boxes], **quick)
        self.example.change(lambda text: text or gr.skip(), self.example, self.controls["prompt"], **quick)
        self.copy_link.click(self.link_query, self.inputs, self.link_box, **quick).then(
            None, self.link_box, self.link_box,
            js="(query) => { const url = location.origin + location.pathname + (query ? '?' + query : ''); "
               "history.replaceState(null, '', url); navigator.clipboard && navigator.clipboard.writeText(url).catch(() => {}); "
               "return url; }").then(lambda: gr.update(visible=True), None, self.link_box, **quick)
        for component in (self.fix_column, self.fix_kind, *self.inputs):
            component.change(self.on_snippet, self.snippet_inputs, self.snippet, **quick)
        demo.load(self.on_snippet, self.snippet_inputs, self.snippet, **quick)
        run_event.then(self.on_snippet, self.snippet_inputs, self.snippet, **private)
        # Copy this fix names the page's columns as set now, then the last run's branches.
        open_event.success(self.on_snippet, self.snippet_inputs, self.snippet, **quick)
        for event in (run_event, branch_event, open_event, *remove_events):
            event.then(self.on_fix_choices, self.fix_inputs, self.fix_column, **quick)
        for component in (self.n_columns, *self.pickers, *self.param_boxes):
            component.change(self.on_fix_choices, self.fix_inputs, self.fix_column, **quick)
        if self.opened is not None:  # after the link's settings: the trace's own replace them
            start_event = load_event.then(self.on_start, self.holder, open_outputs, **private)
            start_event.then(None, None, None, js=UNDIM_JS)
            start_event.then(self.on_snippet, self.snippet_inputs, self.snippet, **quick)
            start_event.then(self.on_fix_choices, self.fix_inputs, self.fix_column, **quick)
